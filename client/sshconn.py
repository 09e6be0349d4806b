"""The client's own SSH connection to the gateway (asyncssh), for ``gpuhop run``.

It logs in with the gpuhop key and certificate as ``USER+HOST`` (the gateway's
direct recorded form: the gateway re-originates every channel to HOST, records
it, and passes exit statuses and signals through exactly), pins the gateway's
host key from the gpuhop known_hosts file, offers modern algorithms only, and
sends keepalives (5 s x 3 by default) so a dead link ends the connection.

asyncssh is imported lazily, and without its liboqs probe: at import it runs
``ctypes.util.find_library("oqs")``, which forks ``ldconfig`` and ``gcc`` and
costs ~90 ms per ``gpuhop run``. gpuhop never offers sntrup761 (the only
algorithm that needs liboqs), so the probe is skipped.
"""

from __future__ import annotations

import contextlib
import ctypes.util
from collections.abc import Iterator
from typing import TYPE_CHECKING

from client.errors import ClientError, GatewayUnavailable, PolicyDenied, TokenRejected
from client.settings import ClientSettings

if TYPE_CHECKING:
    from client.identity import Paths, Profile


@contextlib.contextmanager
def _no_liboqs_probe() -> Iterator[None]:
    original = ctypes.util.find_library

    def find_library(name: str) -> str | None:
        return None if name in ("oqs", "liboqs") else original(name)

    ctypes.util.find_library = find_library
    try:
        yield
    finally:
        ctypes.util.find_library = original


# Other client modules take asyncssh from here, so that it is imported this way.
with _no_liboqs_probe():
    import asyncssh

__all__ = ["asyncssh", "connect", "login_name"]

KEX_ALGS = ("mlkem768x25519-sha256", "curve25519-sha256", "curve25519-sha256@libssh.org")
ENCRYPTION_ALGS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes256-ctr",
    "aes128-ctr",
)
MAC_ALGS = ("hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com", "hmac-sha2-256")
SIGNATURE_ALGS = ("ssh-ed25519", "ecdsa-sha2-nistp256", "rsa-sha2-512", "rsa-sha2-256")


def login_name(profile: Profile, host: str, account: str = "") -> str:
    """``user+host`` (or ``user+host+account``): the gateway routes on the login name."""
    return f"{profile.user}+{host}" + (f"+{account}" if account else "")


async def connect(
    profile: Profile, paths: Paths, settings: ClientSettings, username: str
) -> asyncssh.SSHClientConnection:
    """An authenticated connection to the gateway, logged in as ``username``."""
    try:
        key = asyncssh.read_private_key(str(paths.key))
        cert = asyncssh.read_certificate(str(paths.cert))
    except (OSError, ValueError, asyncssh.KeyImportError) as exc:
        raise ClientError(f"cannot load the gpuhop key or certificate: {exc}") from None
    try:
        return await asyncssh.connect(
            profile.ssh_host,
            profile.ssh_port,
            username=username,
            client_keys=[(key, cert)],
            known_hosts=str(paths.known_hosts),
            agent_path=None,
            config=None,
            preferred_auth=["publickey"],
            connect_timeout=settings.connect_timeout_s,
            login_timeout=settings.connect_timeout_s,
            keepalive_interval=settings.keepalive_interval_s,
            keepalive_count_max=settings.keepalive_count_max,
            encoding=None,
            kex_algs=list(KEX_ALGS),
            encryption_algs=list(ENCRYPTION_ALGS),
            mac_algs=list(MAC_ALGS),
            signature_algs=list(SIGNATURE_ALGS),
            compression_algs=["none"],
        )
    except asyncssh.PermissionDenied as exc:
        raise TokenRejected(
            f"the gateway refused the gpuhop certificate ({exc.reason}); run `gpuhop login`"
        ) from None
    except asyncssh.HostKeyNotVerifiable as exc:
        raise ClientError(
            f"the gateway's SSH host key does not match the pinned one ({exc.reason}); "
            "if it was rotated on purpose, run `gpuhop login` again"
        ) from None
    except asyncssh.DisconnectError as exc:
        if exc.code == asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE:
            raise PolicyDenied(f"the gateway refused the login: {exc.reason}") from None
        raise GatewayUnavailable(f"SSH to the gateway failed: {exc.reason}") from None
    except (OSError, TimeoutError) as exc:
        where = f"{profile.ssh_host}:{profile.ssh_port}"
        raise GatewayUnavailable(
            f"cannot reach the gateway at {where}: {exc or 'timed out'}"
        ) from None
