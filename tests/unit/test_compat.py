"""One test per asyncssh internal that gateway/adapters/sshcompat.py relies on.

Each fails if the installed asyncssh no longer has the name, the signature or
the behaviour the fence expects, so an upgrade shows at once what broke.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
from collections.abc import AsyncIterator

import asyncssh
import pytest
from asyncssh.channel import SSHAgentChannel
from asyncssh.connection import SSHConnection
from asyncssh.public_key import CERT_TYPE_USER, decode_ssh_certificate

from gateway.adapters import sshcompat as compat


def _params(func: object) -> list[str]:
    return list(inspect.signature(func).parameters)  # type: ignore[arg-type]


@pytest.fixture
async def conn() -> AsyncIterator[compat.ServerConnection]:
    options = await asyncssh.SSHServerConnectionOptions.construct(
        None, server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")]
    )
    yield compat.ServerConnection.for_listener(options)


def test_agent_requests_run_in_the_channels_finish_coroutine() -> None:
    finish = asyncssh.SSHServerChannel._finish_agent_req_request  # type: ignore[attr-defined]
    assert inspect.iscoroutinefunction(finish)
    assert "create_agent_listener" in inspect.getsource(finish)


def test_create_agent_listener_is_async_without_arguments() -> None:
    original = asyncssh.SSHServerConnection.create_agent_listener
    assert inspect.iscoroutinefunction(original)
    assert _params(original) == ["self"]
    assert compat.ServerConnection.create_agent_listener is not original


def test_connection_constructor_takes_loop_options_acceptor_error_handler() -> None:
    names = _params(asyncssh.SSHServerConnection.__init__)
    assert names[:5] == ["self", "loop", "options", "acceptor", "error_handler"]


async def test_connection_keeps_its_owner_and_version(conn: compat.ServerConnection) -> None:
    assert hasattr(conn, "_owner") and conn.owner is None  # set by connection_made
    assert isinstance(conn._version, bytes) and conn.server_version == conn._version


def test_send_packet_takes_type_args_and_handler() -> None:
    assert _params(asyncssh.SSHServerConnection.send_packet) == [
        "self",
        "pkttype",
        "args",
        "handler",
    ]


def test_connection_validates_offered_keys_with_the_raw_key_data() -> None:
    method = asyncssh.SSHServerConnection.validate_public_key
    assert inspect.iscoroutinefunction(method)
    assert _params(method) == ["self", "username", "key_data", "msg", "signature"]


def _user_certificate(key_id: str) -> asyncssh.SSHCertificate:
    ca = asyncssh.generate_private_key("ssh-ed25519")
    key = asyncssh.generate_private_key("ssh-ed25519")
    return ca.generate_user_certificate(key, key_id, principals=["alice"])


def test_certificates_decode_validate_and_keep_their_key_id() -> None:
    cert = _user_certificate("gpuhop:alice")
    decoded = decode_ssh_certificate(cert.public_data)
    assert compat.certificate_key_id(decoded) == "gpuhop:alice"
    compat.check_user_certificate(decoded, "alice")
    with pytest.raises(ValueError):
        compat.check_user_certificate(decoded, "mallory")
    assert CERT_TYPE_USER == 1


def test_client_connection_sends_single_global_requests() -> None:
    method = getattr(asyncssh.SSHClientConnection, "_make_global_request", None)
    assert callable(method) and inspect.iscoroutinefunction(method)


async def test_login_options_live_on_the_connection(conn: compat.ServerConnection) -> None:
    assert compat.login_options(conn) == ({}, None)
    compat.set_login_options(conn, {"no-pty": True}, {"force-command": "true"})
    assert conn.get_key_option("no-pty") is True
    assert conn.get_certificate_option("force-command") == "true"


async def test_options_keep_host_key_tables() -> None:
    a = asyncssh.generate_private_key("ssh-ed25519")
    options = await asyncssh.SSHServerConnectionOptions.construct(
        None, server_host_keys=[a], send_server_host_keys=True
    )
    assert a.public_data in {p.public_data for p in options.server_host_keys.values()}
    assert set(options.all_server_host_keys) == {a.public_data}


async def test_connection_keeps_a_channel_table(conn: compat.ServerConnection) -> None:
    assert isinstance(conn._channels, dict) and compat.open_channel_count(conn) == 0


def test_server_channel_handlers_for_env_and_session_start() -> None:
    chan = asyncssh.SSHServerChannel
    assert _params(chan._process_env_request) == ["self", "packet"]  # type: ignore[attr-defined]
    assert _params(chan._start_session) == [  # type: ignore[attr-defined]
        "self",
        "command",
        "subsystem",
    ]
    assert callable(asyncssh.packet.SSHPacket.get_remaining_payload)


def test_connections_open_agent_channels() -> None:
    assert compat.AgentChannel is SSHAgentChannel and compat.Connection is SSHConnection
    assert issubclass(asyncssh.SSHServerConnection, SSHConnection)
    sig = inspect.signature(asyncssh.SSHServerConnection.create_agent_channel)
    assert "SSHAgentChannel" in str(sig.return_annotation)


def test_sessions_are_driven_through_their_callbacks_only() -> None:
    session = asyncssh.SSHServerSession
    for name in ("connection_made", "session_started", "data_received", "eof_received"):
        assert callable(getattr(session, name))


class _NoAuth(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return False


async def test_server_runs_on_a_connected_socket() -> None:
    """serve_on_socket builds the server side; a real client handshakes with it."""
    a, b = socket.socketpair()
    options = await asyncssh.SSHServerConnectionOptions.construct(
        None,
        server_factory=_NoAuth,
        server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
    )
    server = await compat.serve_on_socket(lambda: compat.ServerConnection.for_listener(options), a)
    async with asyncssh.connect(
        "inner", sock=b, known_hosts=None, username="u", config=None
    ) as client:
        assert client.get_server_host_key() is not None
    server.close()
    await asyncio.wait_for(server.wait_closed(), 10)
