"""The API's own settings: trusted proxies, the body cap, bans, /metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.loader import load_settings
from gateway.errors import ConfigError
from tests.unit.test_settings import BASE, write


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            'api_trusted_proxies = ["10.0.0.0/33"]',
            "gateway.api_trusted_proxies[0]: '10.0.0.0/33' is not an IP address or CIDR network",
        ),
        (
            'api_trusted_proxies = ["proxy.internal"]',
            "gateway.api_trusted_proxies[0]: 'proxy.internal' is not an IP address or CIDR network",
        ),
        ("api_max_body_bytes = 10", "gateway.api_max_body_bytes: Input should be greater than"),
        ("auth_address_max_failures = 0", "gateway.auth_address_max_failures: Input should be"),
    ],
)
def test_bad_values_are_one_line(tmp_path: Path, line: str, expected: str) -> None:
    path = write(tmp_path, f"[gateway]\n{line}\n" + BASE)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {expected}"), message


def test_defaults_fail_closed(tmp_path: Path) -> None:
    g = load_settings(write(tmp_path, BASE)).gateway
    assert g.api_trusted_proxies == []  # X-Forwarded-For is never read unless asked
    assert g.metrics_require_token
    assert g.api_max_body_bytes == 1024 * 1024


def test_proxies_are_normalised(tmp_path: Path) -> None:
    text = '[gateway]\napi_trusted_proxies = ["10.1.2.3", "10.8.0.0/16", "::1"]\n' + BASE
    g = load_settings(write(tmp_path, text)).gateway
    assert g.api_trusted_proxies == ["10.1.2.3/32", "10.8.0.0/16", "::1/128"]
