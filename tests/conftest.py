"""Fixtures shared by every test: an isolated environment and real peers on loopback.

A peer that is missing (``ssh``, ``sshd``, ``docker``…) skips a test on a
developer's machine but fails it under ``CI=true``: call ``require`` (import it
as ``tests.conftest.require``) or the ``require_bin`` fixture. Key and
certificate helpers live in ``tests.sshkeys``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NoReturn

import pytest

from gpuhop_sim.delayproxy import ThreadedDelayProxy
from gpuhop_sim.sshd import SshdHost, sshd_path
from tests.sshkeys import KeyPair, make_keypair, sign_user_key

_SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def missing_peer(message: str) -> NoReturn:
    """Skip the test on a developer's machine; under CI=true, fail it: CI installs every peer."""
    if in_ci():
        pytest.fail(f"{message} (CI=true: a missing peer is a failure)", pytrace=False)
    pytest.skip(message)


def require(binary: str) -> str:
    """Path of ``binary``; skip the test if it is missing, fail instead under CI=true."""
    if binary == "sshd":
        found = sshd_path()
    elif os.sep in binary:
        found = binary if os.access(binary, os.X_OK) else None
    else:
        path = os.pathsep.join([os.environ.get("PATH", ""), *_SBIN])
        found = shutil.which(binary, path=path)
    if found is None:
        missing_peer(f"{binary} is not installed")
    return found


@pytest.fixture
def require_bin() -> Callable[[str], str]:
    """``require`` for test modules: ``ssh = require_bin("ssh")``."""
    return require


@pytest.fixture(autouse=True)
def _isolated_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """No GPUHOP_* from the developer's shell; XDG dirs point at a fresh temp dir."""
    for name in list(os.environ):
        if name.startswith("GPUHOP_"):
            monkeypatch.delenv(name)
    xdg = tmp_path_factory.mktemp("xdg")
    for kind in ("CONFIG", "DATA", "STATE", "CACHE"):
        path = xdg / kind.lower()
        path.mkdir()
        monkeypatch.setenv(f"XDG_{kind}_HOME", str(path))


@pytest.fixture
def user_ca(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    """A user certificate authority (ed25519) in its own temp dir."""
    require("ssh-keygen")
    return make_keypair(tmp_path_factory.mktemp("user-ca"), "user_ca", "gpuhop-test-ca")


@pytest.fixture
def user_key(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    """A client key (ed25519) in its own temp dir; not yet certified."""
    require("ssh-keygen")
    return make_keypair(tmp_path_factory.mktemp("user-key"), "id_ed25519", "dev@gpuhop-test")


@pytest.fixture
def user_cert(user_ca: KeyPair, user_key: KeyPair) -> Path:
    """``user_key`` certified by ``user_ca`` for principal ``root``, valid five minutes."""
    return sign_user_key(user_ca, user_key)


@pytest.fixture
def sim_host(
    tmp_path: Path, user_ca: KeyPair, user_key: KeyPair
) -> Iterator[Callable[..., SshdHost]]:
    """Start OpenSSH hosts: ``sim_host("sg-1", gpus=2, gpu_model="H100")``.

    A host trusts ``user_ca`` (unless ``trust_ca=False``) and ``user_key``
    (unless other ``authorized_keys`` are given). Its certificates open any
    account their principals name, unless ``scoped_principals=True`` (a gpuhop
    host: ACCOUNT needs ``ACCOUNT@NAME``). All hosts are stopped, with their
    sessions, at teardown.
    """
    require("sshd")
    stops = contextlib.ExitStack()  # stops every host even if one stop fails

    def start(
        name: str = "sim-1",
        *,
        gpus: int = 1,
        gpu_model: str = "H100",
        trust_ca: bool = True,
        authorized_keys: Sequence[str] | None = None,
        port: int = 0,
        scoped_principals: bool = False,
    ) -> SshdHost:
        host = SshdHost(
            name,
            tmp_path / "hosts" / name,
            gpus=gpus,
            gpu_model=gpu_model,
            user_ca_pub=user_ca.public_line if trust_ca else None,
            authorized_keys=[user_key.public_line] if authorized_keys is None else authorized_keys,
            port=port,
            scoped_principals=scoped_principals,
        )
        stops.callback(host.stop)
        return host.start()

    with stops:
        yield start


@pytest.fixture
def delay_proxy() -> Iterator[Callable[..., ThreadedDelayProxy]]:
    """Start delay proxies: ``delay_proxy(target_port, rtt_ms=40)``; stopped at teardown."""
    stops = contextlib.ExitStack()

    def start(target_port: int, rtt_ms: float = 0.0, listen_port: int = 0) -> ThreadedDelayProxy:
        proxy = ThreadedDelayProxy("127.0.0.1", target_port, rtt_ms, listen_port=listen_port)
        stops.callback(proxy.stop)
        return proxy.start()

    with stops:
        yield start
