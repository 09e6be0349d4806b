"""The fence around asyncssh's login options (gateway/edges/ssh/restrictions.py).

A real asyncssh server and client on loopback: the options a certificate
carries are read off the connection that authenticated with it, and a second
connection that authenticated with nothing enforces them once they are applied.
If asyncssh renames its private attributes, these tests fail rather than the
restrictions silently vanishing inside ``ssh -J``.
"""

from __future__ import annotations

import asyncio

import asyncssh

from gateway.edges.ssh.restrictions import LoginRestrictions


class _Server(asyncssh.SSHServer):
    def __init__(self, ca: asyncssh.SSHKey, seen: asyncio.Future[LoginRestrictions]) -> None:
        self._ca = ca
        self._seen = seen
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_ca_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return key.public_data == self._ca.public_data

    def auth_completed(self) -> None:
        assert self._conn is not None
        if not self._seen.done():
            self._seen.set_result(LoginRestrictions.of(self._conn))


async def test_certificate_options_are_read_and_enforced_elsewhere() -> None:
    ca = asyncssh.generate_private_key("ssh-ed25519")
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    user_key = asyncssh.generate_private_key("ssh-ed25519")
    cert = ca.generate_user_certificate(
        user_key,
        "gpuhop:alice:1",
        principals=["alice"],
        force_command="echo forced",
        permit_pty=False,
    )
    seen: asyncio.Future[LoginRestrictions] = asyncio.get_running_loop().create_future()
    server = await asyncssh.listen(
        "127.0.0.1", 0, server_host_keys=[host_key], server_factory=lambda: _Server(ca, seen)
    )
    port = server.sockets[0].getsockname()[1]
    try:
        async with asyncssh.connect(
            "127.0.0.1",
            port,
            username="alice",
            client_keys=[(user_key, cert)],
            known_hosts=None,
        ):
            restrictions = await asyncio.wait_for(seen, 10)
    finally:
        server.close()
        await server.wait_closed()
    assert restrictions.forced_command == "echo forced"
    assert restrictions.cert_options is not None
    assert "permit-pty" not in restrictions.cert_options  # absent: refused

    other = asyncssh.SSHServerConnection.__new__(asyncssh.SSHServerConnection)
    other._key_options = {}
    other._cert_options = None
    restrictions.apply(other)
    assert other.get_certificate_option("force-command") == "echo forced"
    assert not other.check_certificate_permission("pty")
    assert other.check_certificate_permission("port-forwarding")  # granted by default


def test_no_login_options_means_no_restrictions() -> None:
    none = LoginRestrictions()
    assert none.forced_command is None and none.cert_options is None
