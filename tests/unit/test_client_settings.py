"""Client settings from the environment, durations, gateway URLs."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.errors import UsageError
from client.settings import (
    Secret,
    is_loopback_url,
    load_settings,
    normalize_url,
    parse_duration,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 30.0),
        ("1.5", 1.5),
        ("90s", 90.0),
        ("30m", 1800.0),
        ("2h", 7200.0),
        ("1h30m", 5400.0),
        ("1d", 86400.0),
        ("250ms", 0.25),
        (" 10M ", 600.0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "m", "10x", "1h 30m", "-5", "nan", "inf", "30m10"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(UsageError):
        parse_duration(text)


def test_defaults_without_environment(tmp_path: Path) -> None:
    s = load_settings({"GPUHOP_DATA_DIR": str(tmp_path)})
    assert s.data_dir == tmp_path
    assert (s.gateway_url, s.token) == (None, None)
    assert (s.keepalive_interval_s, s.keepalive_count_max) == (5.0, 3)
    assert s.lost_after_s == 12.0 and s.renew_before_s == 600.0


def test_default_data_dir_follows_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert load_settings({}).data_dir == tmp_path / "gpuhop"


def test_environment_overrides(tmp_path: Path) -> None:
    s = load_settings(
        {
            "GPUHOP_DATA_DIR": str(tmp_path),
            "GPUHOP_GATEWAY": "https://gw.example:8080/",
            "GPUHOP_TOKEN": " gph_abc ",
            "GPUHOP_KEEPALIVE_S": "10",
            "GPUHOP_KEEPALIVE_COUNT": "5",
            "GPUHOP_LOST_AFTER_S": "1m",
            "GPUHOP_CONNECT_TIMEOUT_S": "20s",
        }
    )
    assert s.gateway_url == "https://gw.example:8080"
    assert s.token is not None and s.token.get() == "gph_abc"
    assert (s.keepalive_interval_s, s.keepalive_count_max, s.lost_after_s) == (10.0, 5, 60.0)
    assert s.connect_timeout_s == 20.0


@pytest.mark.parametrize(
    ("name", "value"),
    [("GPUHOP_KEEPALIVE_S", "0"), ("GPUHOP_LOST_AFTER_S", "1"), ("GPUHOP_HTTP_TIMEOUT_S", "x")],
)
def test_bad_environment_values_name_the_variable(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(UsageError, match=name):
        load_settings({"GPUHOP_DATA_DIR": str(tmp_path), name: value})


def test_secret_never_shows() -> None:
    secret = Secret("gph_supersecret")
    assert "supersecret" not in repr(secret) and "supersecret" not in str(secret)
    assert "supersecret" not in f"{secret}"
    assert secret.get() == "gph_supersecret"


@pytest.mark.parametrize("url", ["gw.example:8080", "ftp://gw", "https://", "127.0.0.1:8080"])
def test_urls_need_a_scheme(url: str) -> None:
    with pytest.raises(UsageError):
        normalize_url(url)


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1:8080", True),
        ("http://localhost", True),
        ("http://[::1]:8080/x", True),
        ("http://gw.example:8080", False),
        ("https://10.0.0.1", False),
    ],
)
def test_loopback_urls(url: str, loopback: bool) -> None:
    assert is_loopback_url(url) is loopback
