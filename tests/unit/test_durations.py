"""The one duration grammar: what the client's and the gateway's former grammars each accepted."""

from __future__ import annotations

import pytest

from client.durations import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        # the gateway's former grammar (gpuhop-gateway --ttl/--validity)
        ("90", 90.0),
        ("90s", 90.0),
        ("30m", 1800.0),
        ("12h", 43200.0),
        ("2d", 172800.0),
        ("1.5h", 5400.0),
        (" 10 m ", 600.0),
        ("30D", 2592000.0),
        ("0", 0.0),
        # the client's former grammar (GPUHOP_*_S, gpuhop run --timeout/--lost-after)
        ("30", 30.0),
        ("1.5", 1.5),
        ("1.5s", 1.5),
        ("1h30m", 5400.0),
        ("1d", 86400.0),
        ("250ms", 0.25),
        ("1m30s500ms", 90.5),
        (" 10M ", 600.0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    ["", " ", "m", "s30", "10x", "1w", "1h 30m", "-5", "-5m", "nan", "inf", "30m10", "1.m", "abc"],
)
def test_not_durations(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)
