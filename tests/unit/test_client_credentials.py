"""Credentials: the environment first, then the OS keyring; no keyring is one clear error."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import keyring
import keyring.backends.fail
import pytest
from keyring.backend import KeyringBackend
from keyrings.alt.file import PlaintextKeyring  # type: ignore[import-untyped]

from client import credentials
from client.errors import NoKeyring, NotLoggedIn
from client.settings import ClientSettings, Secret, load_settings

Use = Callable[[KeyringBackend], KeyringBackend]


@pytest.fixture
def use_backend() -> Iterator[Use]:
    original = keyring.get_keyring()

    def use(backend: KeyringBackend) -> KeyringBackend:
        keyring.set_keyring(backend)
        return backend

    yield use
    keyring.set_keyring(original)


@pytest.fixture
def file_keyring(use_backend: Use, tmp_path: Path) -> KeyringBackend:
    backend = PlaintextKeyring()
    backend.file_path = str(tmp_path / "keyring.cfg")
    return use_backend(backend)


def _fail() -> KeyringBackend:
    return keyring.backends.fail.Keyring()  # type: ignore[no-untyped-call]


def _settings(tmp_path: Path, **env: str) -> ClientSettings:
    return load_settings({"GPUHOP_DATA_DIR": str(tmp_path), **env})


def test_store_resolve_forget(file_keyring: KeyringBackend, tmp_path: Path) -> None:
    credentials.store("http://127.0.0.1:8080", Secret("gph_one"))
    assert file_keyring.get_password("gpuhop", "token") == "gph_one"
    creds = credentials.resolve(_settings(tmp_path))
    assert (creds.url, creds.token.get(), creds.source) == (
        "http://127.0.0.1:8080",
        "gph_one",
        "keyring",
    )
    assert credentials.forget() is True
    assert credentials.forget() is False
    with pytest.raises(NotLoggedIn, match="gpuhop login"):
        credentials.resolve(_settings(tmp_path))


def test_environment_wins_and_needs_no_keyring(use_backend: Use, tmp_path: Path) -> None:
    use_backend(_fail())
    settings = _settings(tmp_path, GPUHOP_GATEWAY="https://gw:8080", GPUHOP_TOKEN="gph_env")
    creds = credentials.resolve(settings)
    assert (creds.url, creds.token.get(), creds.source) == (
        "https://gw:8080",
        "gph_env",
        "environment",
    )


def test_token_without_gateway_uses_the_stored_url(
    file_keyring: KeyringBackend, tmp_path: Path
) -> None:
    credentials.store("http://127.0.0.1:8080", Secret("gph_one"))
    creds = credentials.resolve(_settings(tmp_path, GPUHOP_TOKEN="gph_env"))
    assert (creds.url, creds.token.get()) == ("http://127.0.0.1:8080", "gph_env")


def test_gateway_without_token_must_match_the_login(
    file_keyring: KeyringBackend, tmp_path: Path
) -> None:
    credentials.store("http://127.0.0.1:8080", Secret("gph_one"))
    with pytest.raises(NotLoggedIn, match="GPUHOP_GATEWAY"):
        credentials.resolve(_settings(tmp_path, GPUHOP_GATEWAY="https://other:1"))


def test_no_keyring_backend_is_one_line(use_backend: Use, tmp_path: Path) -> None:
    use_backend(_fail())
    for action in (
        lambda: credentials.resolve(_settings(tmp_path)),
        lambda: credentials.store("http://x:1", Secret("gph_x")),
        credentials.forget,
    ):
        with pytest.raises(NoKeyring) as info:
            action()
        message = str(info.value)
        assert "\n" not in message
        assert "GPUHOP_GATEWAY" in message and "GPUHOP_TOKEN" in message
        assert info.value.exit_code == 78
