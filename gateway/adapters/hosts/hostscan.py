"""Fetching a host's SSH host key before it is pinned (``gpuhop admin hosts add``).

The gateway connects, completes the key exchange, and hangs up without
authenticating: the key is what the host presents to anyone, so an admin can
compare its fingerprint with one read on the host's console before trusting
it. Only the modern host key types the gateway itself accepts are asked for,
ed25519 first.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import asyncssh

from gateway.adapters.hosts.algorithms import KEX_ALGS, SIGNATURE_ALGS
from gateway.adapters.keys import public_line
from gateway.errors import UpstreamError

_HOST_KEY_ALGS = [a for a in SIGNATURE_ALGS if not a.startswith("sk-")]


@dataclass(frozen=True, slots=True)
class ScannedKey:
    line: str
    """``ssh-ed25519 AAAA...``: what ``host_key`` pins."""
    fingerprint: str
    """``SHA256:...``, as ``ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`` prints it."""


async def scan_host_key(address: str, port: int, timeout_s: float = 10.0) -> ScannedKey:
    """The host key ``address:port`` presents; ``UpstreamError`` (one line) if none.

    >>> import asyncio
    >>> try:
    ...     asyncio.run(scan_host_key("127.0.0.1", 1, timeout_s=2))
    ... except UpstreamError as exc:
    ...     print(str(exc).split(":")[0])
    127.0.0.1
    """
    try:
        key = await asyncio.wait_for(
            asyncssh.get_server_host_key(
                address,
                port,
                kex_algs=list(KEX_ALGS),
                server_host_key_algs=_HOST_KEY_ALGS,
                config=None,
            ),
            timeout_s,
        )
    except TimeoutError:
        raise UpstreamError(f"{address}:{port}: no SSH answer within {timeout_s:g} s") from None
    except (OSError, asyncssh.Error) as exc:
        detail = getattr(exc, "reason", "") or getattr(exc, "strerror", "") or str(exc)
        raise UpstreamError(f"{address}:{port}: cannot fetch the host key: {detail}") from None
    if key is None:
        raise UpstreamError(f"{address}:{port}: the host presented no host key")
    return ScannedKey(public_line(key), key.get_fingerprint())
