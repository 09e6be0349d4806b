"""One recorded session's relay to the user's ssh-agent (``ssh -A``, when a role allows it).

The host's sshd asks for the agent over the gateway's own connection to it
(opened with agent forwarding for this session only, see
:meth:`gateway.adapters.hosts.upstream.UpstreamPool.acquire_private`). asyncssh sends those
requests to a UNIX socket; this module owns that socket: one per session, mode
0600, in a private 0700 directory under the gateway's temporary directory
(``TMPDIR``), each connection to it relayed as an ``auth-agent@openssh.com``
channel back to the user's connection that asked for the agent. Nothing reads
or keeps the agent protocol's bytes. Closing the relay closes its connections
and removes the socket and its directory.

asyncssh keeps its own agent listener per connection, not per session, in the
system temporary directory; the gateway does not use it (see
:mod:`gateway.adapters.sshcompat`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import asyncssh
import structlog

from gateway.adapters.sshcompat import AgentChannel, Connection, open_agent_channel

log = structlog.get_logger("gpuhop.agent")

MAX_AGENT_CONNECTIONS = 8  # open at once through one session's relay
SOCKET_NAME = "agent.sock"


class _ToSocket(asyncssh.SSHUNIXSession[bytes]):
    """The user's side of one agent connection: what the user's agent says goes to the host."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self._writer.write(data)

    def eof_received(self) -> bool:
        with contextlib.suppress(OSError):
            self._writer.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._writer.close()


class AgentRelay:
    """A listening socket that reaches the user's agent through ``conn``; see the module doc."""

    def __init__(self, conn: Connection, directory: Path) -> None:
        self._conn = conn
        self.directory = directory
        self.path = directory / SOCKET_NAME
        self._server: asyncio.AbstractServer | None = None
        self._open: set[asyncio.StreamWriter] = set()  # one per agent connection
        self._channels: set[AgentChannel] = set()
        self._closed = False

    @classmethod
    async def open(cls, conn: Connection, parent: Path | None = None) -> AgentRelay:
        """Listen in a new private directory under ``parent`` (default: the temp dir)."""
        directory = Path(tempfile.mkdtemp(prefix="gpuhop-agent-", dir=parent))  # mode 0700
        relay = cls(conn, directory)
        try:
            relay._server = await asyncio.start_unix_server(relay._serve, path=str(relay.path))
            os.chmod(relay.path, 0o600)
        except BaseException:
            relay.close()
            raise
        return relay

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closed or len(self._open) >= MAX_AGENT_CONNECTIONS:
            writer.close()
            return
        self._open.add(writer)
        try:
            await self._relay(reader, writer)
        except (asyncssh.Error, OSError) as exc:
            log.info("agent connection ended", error=str(exc))
        finally:
            self._open.discard(writer)
            writer.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        chan = open_agent_channel(self._conn)
        self._channels.add(chan)
        try:
            await chan.open(lambda: _ToSocket(writer))
            while not self._closed and (data := await reader.read(65536)):
                chan.write(data)  # agent messages are small; the channel window bounds them
            chan.write_eof()
            await chan.wait_closed()
        finally:
            self._channels.discard(chan)
            chan.close()

    def close(self) -> None:
        """Stop listening, end open agent connections, remove the socket and its directory."""
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()
        for chan in list(self._channels):
            chan.close()  # its relay task then ends by itself
        for writer in list(self._open):
            writer.close()
        shutil.rmtree(self.directory, ignore_errors=True)
