"""The client's key, certificate, known_hosts and profile, and when they are renewed."""

from __future__ import annotations

import json
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import keyring
import keyring.backends.fail
import pytest
from keyring.backend import KeyringBackend

from client import identity
from client.api.clients import Client
from client.errors import PolicyDenied
from client.settings import ClientSettings, Secret, load_settings

GATEWAY = {
    "version": "0.1.0",
    "ssh_host": "0.0.0.0",
    "ssh_port": 2222,
    "host_key": "ssh-ed25519 AAAAgw",
    "host_ca_key": "ssh-ed25519 AAAAca",
    "host_keys": {"sg-1": "ssh-ed25519 AAAAsg", "my-1": "ssh-ed25519 AAAAmy"},
}


def _me(in_inventory: bool = True) -> dict[str, object]:
    return {
        "user": "rita",
        "scope": "ci",
        "token_id": "t",
        "token_name": "n",
        "expires_at": 2e9,
        "in_inventory": in_inventory,
        "team": "",
        "roles": ["rec"],
        "accounts": ["root"],
    }


def _handler(calls: list[str], me: dict[str, object]) -> Callable[[httpx.Request], httpx.Response]:
    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path == "/v1/me":
            return httpx.Response(200, json=me)
        if request.url.path == "/v1/gateway":
            return httpx.Response(200, json=GATEWAY)
        body = json.loads(request.content)
        assert body["public_key"].startswith("ssh-ed25519 ")
        return httpx.Response(
            200,
            json={
                "certificate": "ssh-ed25519-cert-v01@openssh.com AAAAcert",
                "key_id": "gpuhop:rita:1",
                "principals": ["rita", "root"],
                "valid_after": int(time.time()) - 60,
                "valid_before": int(time.time()) + 3600,
                "ca_public_key": "ssh-ed25519 AAAAuca",
            },
        )

    return handle


def _settings(tmp_path: Path) -> ClientSettings:
    return load_settings(
        {
            "GPUHOP_DATA_DIR": str(tmp_path / "data"),
            "GPUHOP_GATEWAY": "http://gw.example:8080",
            "GPUHOP_TOKEN": "gph_t",
        }
    )


def _api(calls: list[str], me: dict[str, object] | None = None) -> Client:
    return Client(
        "http://gw.example:8080",
        Secret("gph_t"),
        transport=httpx.MockTransport(_handler(calls, me or _me())),
    )


def test_enroll_writes_key_cert_known_hosts_profile(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    calls: list[str] = []
    profile = identity.enroll(_api(calls), settings, Secret("gph_t"))
    paths = identity.paths_of(settings)
    assert calls == ["/v1/me", "/v1/gateway", "/v1/certificates"]
    assert stat.S_IMODE(paths.key.stat().st_mode) == 0o600
    assert stat.S_IMODE(paths.root.stat().st_mode) == 0o700
    assert paths.key.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert paths.cert.read_text().startswith("ssh-ed25519-cert-v01@openssh.com ")
    assert profile.ssh_host == "gw.example"  # a wildcard listen address means the API's host
    assert profile.default_account == "root"
    assert paths.known_hosts.read_text().splitlines() == [
        "[gw.example]:2222 ssh-ed25519 AAAAgw",
        "@cert-authority my-1,sg-1 ssh-ed25519 AAAAca",
        "my-1 ssh-ed25519 AAAAmy",
        "sg-1 ssh-ed25519 AAAAsg",
    ]
    assert identity.load_profile(paths) == profile
    key_before = paths.key.read_bytes()
    identity.enroll(_api(calls), settings, Secret("gph_t"))
    assert paths.key.read_bytes() == key_before  # the key is made once


def test_a_staged_gateway_key_is_trusted_beside_the_current_one(tmp_path: Path) -> None:
    """Host key rotation: known_hosts lists the next key before the gateway uses it."""
    settings = _settings(tmp_path)
    GATEWAY["gateway_keys"] = ["ssh-ed25519 AAAAgw", "ssh-ed25519 AAAAnext"]
    try:
        profile = identity.enroll(_api([]), settings, Secret("gph_t"))
    finally:
        del GATEWAY["gateway_keys"]
    paths = identity.paths_of(settings)
    assert paths.known_hosts.read_text().splitlines()[:2] == [
        "[gw.example]:2222 ssh-ed25519 AAAAgw",
        "[gw.example]:2222 ssh-ed25519 AAAAnext",
    ]
    assert identity.load_profile(paths) == profile


def test_users_outside_the_inventory_are_told_why(tmp_path: Path) -> None:
    with pytest.raises(PolicyDenied, match="inventory"):
        identity.enroll(_api([], _me(in_inventory=False)), _settings(tmp_path), Secret("gph_t"))


def test_ready_uses_a_fresh_certificate_without_keyring_or_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path)
    identity.enroll(_api([]), settings, Secret("gph_t"))
    original = keyring.get_keyring()
    keyring.set_keyring(_fail())
    try:
        monkeypatch.setattr(identity, "open_api", _no_network)
        assert identity.ready(settings).user == "rita"
    finally:
        keyring.set_keyring(original)


def test_ready_renews_within_ten_minutes_of_expiry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path)
    identity.enroll(_api([]), settings, Secret("gph_t"))
    paths = identity.paths_of(settings)
    data = json.loads(paths.profile.read_text())
    data["cert_valid_before"] = int(time.time()) + 500
    paths.profile.write_text(json.dumps(data))
    calls: list[str] = []
    monkeypatch.setattr(identity, "open_api", lambda *a: _api(calls))
    profile = identity.ready(settings)
    assert "/v1/certificates" in calls
    assert profile.cert_seconds_left() > 3000


def test_another_token_means_another_enrolment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path)
    identity.enroll(_api([]), settings, Secret("gph_other"))
    calls: list[str] = []
    monkeypatch.setattr(identity, "open_api", lambda *a: _api(calls))
    identity.ready(settings)
    assert calls[0] == "/v1/me"


def test_forget_keeps_the_key(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    identity.enroll(_api([]), settings, Secret("gph_t"))
    paths = identity.paths_of(settings)
    gone = identity.forget(paths)
    assert set(gone) == {paths.cert, paths.profile, paths.known_hosts}
    assert paths.key.exists() and identity.load_profile(paths) is None


def test_the_client_key_is_an_openssh_ed25519_key_made_once(
    tmp_path: Path, require_bin: Callable[[str], str]
) -> None:
    paths = identity.Paths(tmp_path / "id")
    line = identity.ensure_key(paths)
    assert line.startswith("ssh-ed25519 ") and line.endswith(" gpuhop")
    assert stat.S_IMODE(paths.key.stat().st_mode) == 0o600
    derived = subprocess.run(
        [require_bin("ssh-keygen"), "-y", "-f", str(paths.key)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert derived.stdout.split()[:2] == line.split()[:2]
    paths.public_key.unlink()
    assert identity.ensure_key(paths) == line  # the key on disk is kept, its .pub rewritten


def _fail() -> KeyringBackend:
    return keyring.backends.fail.Keyring()  # type: ignore[no-untyped-call]


def _no_network(*args: object) -> Client:
    raise AssertionError("a fresh certificate needs no API call")
