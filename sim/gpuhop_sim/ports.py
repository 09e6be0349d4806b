"""Loopback helpers: the simulator never listens on, or sends to, anything else."""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1 (no name resolution is done)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def require_loopback(host: str, what: str) -> None:
    """Raise ``ValueError`` unless ``host`` is a loopback address."""
    if not is_loopback(host):
        raise ValueError(f"{what} {host!r} is not a loopback address; the simulator stays local")


def free_loopback_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (callers retry if another process takes it)."""
    require_loopback(host, "address")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def read_banner(host: str, port: int, timeout: float = 0.5) -> bytes:
    """The first bytes a server sends on connect, or b"" if it sends none in time."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            return s.recv(256)
    except OSError:
        return b""


def wait_for_banner(
    host: str,
    port: int,
    prefix: bytes = b"SSH-2.0",
    timeout: float = 10.0,
    alive: Callable[[], bool] = lambda: True,
) -> bool:
    """Poll until the server on ``port`` greets with ``prefix``; False on timeout or death."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        if read_banner(host, port).startswith(prefix):
            return True
        time.sleep(0.02)
    return False
