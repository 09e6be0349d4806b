"""The agent hook and relay (gateway/adapters/sshcompat.py, gateway/edges/ssh/agentrelay.py).

A real asyncssh server and client on loopback: the client asks for agent
forwarding on one session channel, the hook names that channel (found in the
task asyncssh runs the request in: if asyncssh renames it, this fails rather
than every request being refused), and a relay opened on the server connection
reaches the client's agent, here a UNIX echo server standing in for ssh-agent.
"""

from __future__ import annotations

import asyncio
import inspect
import stat
from pathlib import Path

import asyncssh

from gateway.adapters.sshcompat import ServerConnection
from gateway.edges.ssh.agentrelay import AgentRelay


class _Session(asyncssh.SSHServerSession[bytes]):
    def __init__(self) -> None:
        self.chan: asyncssh.SSHServerChannel[bytes] | None = None

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self.chan = chan

    def exec_requested(self, command: str) -> bool:
        return True


class _Server(asyncssh.SSHServer):
    def __init__(self, asked: asyncio.Future[tuple[object, object]]) -> None:
        self._asked = asked
        self._conn: asyncssh.SSHServerConnection | None = None
        self.session = _Session()
        self.chan: asyncssh.SSHServerChannel[bytes] | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn

    def begin_auth(self, username: str) -> bool:
        return False

    def session_requested(self) -> tuple[asyncssh.SSHServerChannel[bytes], _Session]:
        assert self._conn is not None
        self.chan = self._conn.create_server_channel()  # as the gateway does: the key it keeps
        return self.chan, self.session

    def agent_requested(self, chan: asyncssh.SSHServerChannel[bytes] | None) -> None:
        if not self._asked.done():
            self._asked.set_result((chan, self._conn))


class _Agent:
    """Stands in for ssh-agent: answers each message with ``agent:`` and the message."""

    def __init__(self) -> None:
        self.ended = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(b"agent:" + data)
            await writer.drain()
        writer.close()
        await writer.wait_closed()
        self.ended.set()


async def test_hook_names_the_channel_and_the_relay_reaches_the_clients_agent(
    tmp_path: Path,
) -> None:
    loop = asyncio.get_running_loop()
    fake = _Agent()
    agent = await asyncio.start_unix_server(fake.serve, path=str(tmp_path / "agent"))
    asked: asyncio.Future[tuple[object, object]] = loop.create_future()
    server_obj = _Server(asked)
    options = await asyncssh.SSHServerConnectionOptions.construct(
        None,
        server_factory=lambda: server_obj,
        server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
    )
    server = await loop.create_server(
        lambda: ServerConnection.for_listener(options), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    try:
        async with asyncssh.connect(
            "127.0.0.1",
            port,
            username="u",
            known_hosts=None,
            agent_path=None,
            agent_forwarding=str(tmp_path / "agent"),
            config=None,
        ) as client:
            chan, _ = await client.create_session(asyncssh.SSHClientSession, "x")
            found, conn = await asyncio.wait_for(asked, 10)
            assert found is server_obj.chan  # the very channel that asked
            assert isinstance(conn, asyncssh.SSHServerConnection)
            relay = await AgentRelay.open(conn, tmp_path)
            assert stat.S_IMODE(relay.path.stat().st_mode) == 0o600
            assert stat.S_IMODE(relay.directory.stat().st_mode) == 0o700
            assert relay.directory.parent == tmp_path
            reader, writer = await asyncio.open_unix_connection(str(relay.path))
            writer.write(b"hello")
            assert await asyncio.wait_for(reader.readexactly(11), 10) == b"agent:hello"
            writer.write_eof()  # the host's side is done: the client's agent side ends too
            assert await asyncio.wait_for(reader.read(), 10) == b""
            await asyncio.wait_for(fake.ended.wait(), 10)
            writer.close()
            await writer.wait_closed()
            reader, writer = await asyncio.open_unix_connection(str(relay.path))
            writer.write(b"again")
            assert await asyncio.wait_for(reader.readexactly(11), 10) == b"agent:again"
            relay.close()  # the session ended: its open agent connections end too
            assert not relay.directory.exists()
            assert await asyncio.wait_for(reader.read(), 10) == b""
            writer.close()
            await writer.wait_closed()
            chan.close()
            await chan.wait_closed()
    finally:
        server.close()
        await server.wait_closed()
        agent.close()
        await agent.wait_closed()


def test_asyncssh_runs_agent_requests_where_the_hook_looks() -> None:
    """The channel answers auth-agent-req in a task of ``_finish_agent_req_request``,
    which asks its connection's ``create_agent_listener``; the relay opens channels
    with ``create_agent_channel``."""
    finish = asyncssh.SSHServerChannel._finish_agent_req_request  # type: ignore[attr-defined]
    assert inspect.iscoroutinefunction(finish)
    assert "create_agent_listener" in inspect.getsource(finish)
    assert callable(asyncssh.SSHServerConnection.create_agent_channel)
