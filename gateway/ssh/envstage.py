"""Staged pushes to far hosts: the archive in chunks over parallel channels.

One SSH channel carries at most the host's channel window per round trip:
OpenSSH's sshd opens session channels with a 2 MiB window, so a single
``docker load`` stream to a host 120 ms away tops out near 17 MB/s however fast
the link is. A host whose measured round trip is at least ``min_rtt_s`` gets
the archive another way:

1. The gateway spools what the client sends (:class:`Spool`, an unlinked
   temporary file), so the client is never held back by the far host, and
   near hosts still get the stream as it comes (the tee in
   :mod:`gateway.ssh.envservice`).
2. ``streams`` workers take the archive's ``chunk_size`` pieces in turn, each
   on its own channel of the pooled upstream connection, into a staging
   directory on the host (``envprotocol.stage_chunk_command``). With N
   channels, N windows are in flight.
3. When the client's EOF has come and every chunk is there, one
   ``docker load`` reads the chunks in order, the directory is removed, and
   the image ID is checked as for a streamed load.

A chunk appears under its final name only when all of its bytes arrived, and
that name holds its digest. A push that is cut off leaves the complete chunks
on the host; a retry of the same archive lists them and sends only the rest.
Nothing is loaded before the whole archive is there, so an interrupted push
never changes the host's images.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import asyncssh

from gateway.errors import GatewayError
from gateway.ssh.envprotocol import (
    HostReport,
    chunk_name,
    docker_error,
    id_script,
    parse_chunk_list,
    stage_chunk_command,
    stage_list_script,
    stage_load_command,
)

STREAMS = 4
CHUNK_SIZE = 8 * 1024 * 1024
MIN_RTT_S = 0.02
CHUNK_TIMEOUT_S = 600.0
LOAD_TIMEOUT_S = 1800.0
QUERY_TIMEOUT_S = 120.0


class SpoolError(GatewayError):
    """The gateway could not keep the archive (its disk is full, say)."""


class Spool:
    """What the client has sent so far, on the gateway's disk, readable while it grows."""

    def __init__(self, directory: str | None = None) -> None:
        self._directory = directory
        self._fd = -1  # opened on the first byte: a push to near hosts only never needs it
        self.size = 0
        self.eof = False
        self.gone = False
        self.error = ""
        self._grew = asyncio.Event()

    def append(self, data: bytes) -> None:
        if self.error:
            return
        try:
            if self._fd < 0:
                self._fd = _unlinked_file(self._directory)
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as exc:
            self.error = f"the gateway cannot keep the archive: {exc.strerror or exc}"
        self.size += len(data)
        self._grew.set()

    def finish(self, *, eof: bool) -> None:
        """The client's EOF (``eof=True``) or its going away."""
        self.eof = self.eof or eof
        self.gone = self.gone or not eof
        self._grew.set()

    async def wait_for(self, end: int) -> None:
        """Until ``end`` bytes are here, or the stream ended one way or another."""
        while self.size < end and not (self.eof or self.gone or self.error):
            self._grew.clear()
            await self._grew.wait()

    async def read(self, offset: int, size: int) -> bytes:
        return await asyncio.to_thread(os.pread, self._fd, size, offset)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _unlinked_file(directory: str | None) -> int:
    """A read-write file descriptor whose file has no name: gone when closed, or on a crash."""
    fd, path = tempfile.mkstemp(prefix="gpuhop-push-", dir=directory)
    os.unlink(path)
    return fd


@dataclass
class StagedHost:
    """One far host's staged push; ``run`` returns its report."""

    name: str
    entry: Any  # gateway.ssh.upstream._Entry: .conn, .rtt_s
    image_id: str
    ref: str
    spool: Spool
    streams: int = STREAMS
    chunk_size: int = CHUNK_SIZE
    sent: int = 0
    skipped: int = 0
    error: str = ""
    _names: dict[int, str] = field(default_factory=dict)
    _next: int = 0
    _have: frozenset[str] = frozenset()
    _procs: set[asyncssh.SSHClientProcess[bytes]] = field(default_factory=set)

    @property
    def conn(self) -> asyncssh.SSHClientConnection:
        conn: asyncssh.SSHClientConnection = self.entry.conn
        return conn

    async def prepare(self) -> None:
        """Make the staging directory and learn which chunks a cut-off push left there."""
        status, out, err = await self._run(stage_list_script(self.image_id), QUERY_TIMEOUT_S)
        if status != 0:
            raise GatewayError(f"cannot stage there: {docker_error(self.name, status, err)}")
        self._have = parse_chunk_list(out)

    async def run(self) -> HostReport:
        """Upload every chunk (``streams`` at a time), then load and verify."""
        workers = [asyncio.create_task(self._worker()) for _ in range(max(1, self.streams))]
        try:
            await asyncio.gather(*workers)
        except BaseException:
            for w in workers:
                w.cancel()
            self.abort()
            raise
        if self.spool.gone and not self.spool.eof:
            return HostReport("aborted", self.error or "the client went away", bytes=self.sent)
        if self.error:
            return HostReport("failed", self.error, bytes=self.sent)
        return await self._load()

    def abort(self) -> None:
        """Stop every chunk in flight: killed, never ended with an EOF."""
        for proc in list(self._procs):
            with contextlib.suppress(OSError):
                proc.send_signal("KILL")
            proc.channel.abort()

    async def _worker(self) -> None:
        spool = self.spool
        while not self.error:
            index = self._next
            self._next += 1
            start = index * self.chunk_size
            await spool.wait_for(start + self.chunk_size)
            if spool.error:
                self.error = f"{self.name}: {spool.error}"
                return
            if spool.gone and not spool.eof:
                return
            size = min(self.chunk_size, spool.size - start)
            if size <= 0:
                return  # past the end of the archive
            data = await spool.read(start, size)
            name = chunk_name(index, hashlib.sha256(data).hexdigest())
            self._names[index] = name
            if name in self._have:
                self.skipped += size
                continue
            try:
                await self._upload(name, data)
            except (asyncssh.Error, OSError, TimeoutError, GatewayError) as exc:
                reason = getattr(exc, "reason", "") or str(exc) or type(exc).__name__
                self.error = self.error or f"{self.name}: staging chunk {index} failed: {reason}"
                return

    async def _upload(self, name: str, data: bytes) -> None:
        command = stage_chunk_command(self.image_id, name, len(data))
        proc = await self.conn.create_process(command, encoding=None)
        self._procs.add(proc)
        try:
            async with asyncio.timeout(CHUNK_TIMEOUT_S):
                try:
                    proc.stdin.write(data)
                    await proc.stdin.drain()
                    proc.stdin.write_eof()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the host's side ended early: its exit status and stderr say why
                result = await proc.wait(check=False)
        finally:
            self._procs.discard(proc)
            proc.close()
        if result.exit_status != 0:
            raise GatewayError(docker_error(self.name, result.exit_status, _bytes(result.stderr)))
        self.sent += len(data)

    async def _load(self) -> HostReport:
        names = [self._names[i] for i in sorted(self._names)]
        status, _, err = await self._run(stage_load_command(self.image_id, names), LOAD_TIMEOUT_S)
        if status != 0:
            detail = docker_error(self.name, status, err)
            return HostReport("failed", f"docker load failed: {detail}", bytes=self.sent)
        status, out, err = await self._run(id_script(self.ref), QUERY_TIMEOUT_S)
        found = out.decode(errors="replace").strip()
        if status != 0 or found != self.image_id:
            have = found if status == 0 else docker_error(self.name, status, err)
            return HostReport(
                "failed",
                f"{self.name} has {have} as {self.ref} after loading, not {self.image_id}",
                bytes=self.sent,
            )
        return HostReport("loaded", image_id=found, bytes=self.sent)

    async def _run(self, command: str, limit_s: float) -> tuple[int | None, bytes, bytes]:
        started = time.monotonic()
        try:
            proc = await self.conn.create_process(command, encoding=None)
            try:
                result = await proc.wait(check=False, timeout=limit_s)
            finally:
                proc.close()
        except (asyncssh.Error, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", "") or str(exc) or type(exc).__name__
            waited = time.monotonic() - started
            raise GatewayError(f"{self.name}: {reason} (after {waited:.0f} s)") from exc
        return result.exit_status, _bytes(result.stdout), _bytes(result.stderr)


def _bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value or "").encode()
