"""Staged pushes to far hosts: the archive in chunks over parallel channels.

One SSH channel carries at most the host's channel window per round trip:
OpenSSH's sshd opens session channels with a 2 MiB window, so a single
``docker load`` stream to a host 120 ms away tops out near 17 MB/s however fast
the link is. A host whose measured round trip is at least ``min_rtt_s`` gets
the archive another way:

1. The gateway spools what the client sends (:class:`Spool`, an unlinked
   temporary file), so the client is never held back by the far host, and
   near hosts still get the stream as it comes (the tee in
   :mod:`gateway.services.envpush`).
2. Workers take the archive's ``chunk_size`` pieces in turn, each on its own
   channel, into a staging directory on the host
   (``envprotocol.stage_chunk_command``). With N channels, N windows are in
   flight. The workers are spread over ``connections`` SSH connections,
   ``per_connection`` each: the pooled one (which interactive sessions share,
   so it takes no more) and fresh ones opened for this push, since one
   connection's channels share one TCP congestion window and sshd allows 10
   sessions per connection by default (``MaxSessions``). Workers on the pooled
   connection start at once; the others join when their connection is up.
3. One ``docker load`` on the host reads the chunks in order while later
   ones are still on their way: the gateway names each chunk to it on its
   stdin once that chunk and all before it are complete, and ends with
   ``END`` after the client's EOF (``envprotocol.stage_load_command``). Then
   the directory is removed and the image ID checked as for a streamed load.

The spool is bounded by back-pressure, not by size: it runs at most
``spool_ahead`` bytes ahead of the slowest far host still loading (what that
host has not yet taken whole), and stops taking data once no far host is left
to read it. Past that the client's channel stays paused, so a far host that
is slow holds the client back instead of filling the gateway's disk, and a far
host whose ``docker load`` dies fails the push for that host at once (it is
watched, not found out at the end).

A chunk appears under its final name only when all of its bytes arrived, and
that name holds its digest. A push that is cut off leaves the complete chunks
on the host; a retry of the same archive lists them and sends only the rest.
``docker load`` registers nothing before its archive has ended, and a push cut
off before ``END`` kills it, so an interrupted push never changes the host's
images.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncssh
import structlog

from gateway.errors import GatewayError
from gateway.services.envprotocol import (
    STAGE_END,
    HostReport,
    as_bytes,
    chunk_name,
    docker_error,
    id_script,
    loaded_report,
    parse_chunk_list,
    stage_chunk_command,
    stage_list_script,
    stage_load_command,
)

CHUNK_SIZE = 8 * 1024 * 1024
SPOOL_AHEAD = 1024 * 1024 * 1024
MIN_RTT_S = 0.02
CHUNK_TIMEOUT_S = 600.0
LOAD_TIMEOUT_S = 1800.0
QUERY_TIMEOUT_S = 120.0

log = structlog.get_logger("gpuhop.envstage")


@dataclass(frozen=True, slots=True)
class StagePolicy:
    """When and how wide a push is staged (``[gateway] env_push_*`` settings)."""

    min_rtt_s: float = MIN_RTT_S
    connections: int = 4
    per_connection: int = 4
    chunk_size: int = CHUNK_SIZE
    spool_ahead: int = SPOOL_AHEAD

    @property
    def streams(self) -> int:
        return max(1, self.connections) * max(1, self.per_connection)

    @property
    def ahead(self) -> int:
        """How far the spool may run ahead of the slowest far host: at least what all its
        channels carry at once, or they would starve (and below a chunk, deadlock)."""
        return max(self.spool_ahead, self.streams * self.chunk_size)

    def applies(self, rtt_s: float) -> bool:
        return self.streams > 1 and rtt_s >= self.min_rtt_s


ConnectExtra = Callable[[], Awaitable[asyncssh.SSHClientConnection]]


class Spool:
    """What the client has sent so far, on the gateway's disk, readable while it grows."""

    def __init__(self, directory: str | None = None, ahead: int = SPOOL_AHEAD) -> None:
        self._directory = directory
        self._fd = -1  # opened on the first byte: a push to near hosts only never needs it
        self.size = 0
        self.ahead = ahead
        self.eof = False
        self.gone = False
        self.error = ""
        self._grew = asyncio.Event()
        self._marks: dict[str, int] = {}  # per far host: the bytes it has taken whole
        self.on_room: Callable[[], None] = lambda: None

    @property
    def readers(self) -> int:
        return len(self._marks)

    @property
    def full(self) -> bool:
        """Whether the client must wait: the slowest reader is ``ahead`` bytes behind."""
        return bool(self._marks) and self.size - min(self._marks.values()) >= self.ahead

    def reader(self, name: str) -> None:
        """Register a far host that will read the spool from its start."""
        self._marks[name] = 0

    def advance(self, name: str, offset: int) -> None:
        """``name`` has taken everything before ``offset``: the spool may grow past it."""
        if name in self._marks:
            self._marks[name] = max(self._marks[name], offset)
            if not self.full:
                self.on_room()

    def drop(self, name: str) -> None:
        """``name`` reads no more (done or failed): it no longer holds the client back."""
        if self._marks.pop(name, None) is not None:
            self.on_room()

    def poke(self) -> None:
        """Wake the readers waiting for data (one of them failed)."""
        self._grew.set()

    def append(self, data: bytes) -> None:
        if self.error or not self._marks:
            return  # nobody left to read it: kept nowhere
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

    async def wait_for(self, end: int, stop: Callable[[], object] = lambda: False) -> None:
        """Until ``end`` bytes are here, the stream ended one way or another, or ``stop()``."""
        while self.size < end and not (self.eof or self.gone or self.error or stop()):
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
    entry: Any  # gateway.adapters.hosts.upstream._Entry: .conn, .rtt_s
    image_id: str
    ref: str
    spool: Spool
    policy: StagePolicy = StagePolicy()
    connect_extra: ConnectExtra | None = None
    sent: int = 0
    skipped: int = 0
    error: str = ""
    _next: int = 0
    _have: frozenset[str] = frozenset()
    _procs: set[asyncssh.SSHClientProcess[bytes]] = field(default_factory=set)
    _done: dict[int, str] = field(default_factory=dict)  # complete, not yet named to the loader
    _fed: int = 0
    _loader: asyncssh.SSHClientProcess[bytes] | None = None
    _extra: list[asyncssh.SSHClientConnection] = field(default_factory=list)
    _loader_result: asyncio.Future[asyncssh.SSHCompletedProcess] | None = None
    _ending: bool = False  # END was sent: the loader may exit now
    streams: int = 0  # workers that ran

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
        try:
            self._loader = await self.conn.create_process(
                stage_load_command(self.image_id), encoding=None
            )
        except (asyncssh.Error, OSError) as exc:
            reason = getattr(exc, "reason", "") or str(exc) or type(exc).__name__
            raise GatewayError(f"{self.name}: cannot start docker load: {reason}") from exc
        self._loader_result = asyncio.ensure_future(self._loader.wait(check=False))
        self._loader_result.add_done_callback(self._loader_ended)
        self.spool.reader(self.name)

    def _loader_ended(self, result: asyncio.Future[asyncssh.SSHCompletedProcess]) -> None:
        """A loader that exits before ``END`` has failed: stop sending this host chunks."""
        if self._ending or result.cancelled():
            return
        detail = f"{self.name}: ended before the archive did"
        if result.exception() is None:
            done = result.result()
            if done.exit_status not in (None, 0):
                detail = docker_error(self.name, done.exit_status, as_bytes(done.stderr))
        self.fail(f"docker load failed: {detail}")

    def fail(self, reason: str) -> None:
        """Give up on this host now: kill what runs there, free the spool of it."""
        self.error = self.error or reason
        self.abort()
        self.spool.drop(self.name)
        self.spool.poke()

    async def run(self) -> HostReport:
        """Upload every chunk (``streams`` at a time), then load and verify."""
        started = time.monotonic()
        policy = self.policy
        lanes = [self._lane(self.conn)]
        lanes += [self._extra_lane() for _ in range(max(0, policy.connections - 1))]
        tasks = [asyncio.ensure_future(lane) for lane in lanes]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            self.abort()
            raise
        finally:
            for conn in self._extra:
                conn.close()
            if self.error or self.spool.gone:
                self.spool.drop(self.name)
        if self.spool.gone and not self.spool.eof:
            self.abort()
            return HostReport("aborted", self.error or "the client went away", bytes=self.sent)
        if self.error:
            self.abort()
            return HostReport("failed", self.error, bytes=self.sent)
        staged_s = time.monotonic() - started
        report = await self._load()
        log.info(
            "staged push",
            host=self.name,
            streams=self.streams,
            sent=self.sent,
            resumed=self.skipped,
            staged_s=round(staged_s, 3),
            load_s=round(time.monotonic() - started - staged_s, 3),
            result=report.status,
        )
        return report

    async def _lane(self, conn: asyncssh.SSHClientConnection) -> None:
        """``per_connection`` workers on one connection."""
        count = max(1, self.policy.per_connection)
        self.streams += count
        await asyncio.gather(*(self._worker(conn) for _ in range(count)))

    async def _extra_lane(self) -> None:
        """A fresh connection's workers; a connection that fails leaves the work to the others.

        Opened only once the archive outgrows what the pooled connection's channels
        take in one round (a one-layer re-push never pays for extra logins).
        """
        policy = self.policy
        one_round = policy.per_connection * policy.chunk_size
        await self.spool.wait_for(one_round + 1, lambda: self.error)
        if self.connect_extra is None or self._finished() or self.spool.size <= one_round:
            return
        try:
            conn = await self.connect_extra()
        except (GatewayError, asyncssh.Error, OSError) as exc:
            log.warning("staged push: extra connection failed", host=self.name, error=str(exc))
            return
        self._extra.append(conn)
        if not self._finished():
            await self._lane(conn)

    def _finished(self) -> bool:
        spool = self.spool
        return bool(self.error or spool.error or spool.gone) or (
            spool.eof and self._next * self.policy.chunk_size >= spool.size
        )

    def abort(self) -> None:
        """Kill the loader and every chunk in flight: never an EOF, never ``END``."""
        loader, self._loader = self._loader, None
        for proc in [*self._procs, *([loader] if loader is not None else [])]:
            with contextlib.suppress(OSError):
                proc.send_signal("KILL")
            proc.channel.abort()

    async def _worker(self, conn: asyncssh.SSHClientConnection) -> None:
        spool = self.spool
        chunk_size = self.policy.chunk_size
        while not self.error:
            index = self._next
            self._next += 1
            start = index * chunk_size
            await spool.wait_for(start + chunk_size, lambda: self.error)
            if self.error:
                return
            if spool.error:
                self.error = f"{self.name}: {spool.error}"
                return
            if spool.gone and not spool.eof:
                return
            size = min(chunk_size, spool.size - start)
            if size <= 0:
                return  # past the end of the archive
            data = await spool.read(start, size)
            name = chunk_name(index, hashlib.sha256(data).hexdigest())
            if name in self._have:
                self.skipped += size
            else:
                try:
                    await self._upload(conn, name, data)
                except (asyncssh.Error, OSError, TimeoutError, GatewayError) as exc:
                    reason = getattr(exc, "reason", "") or str(exc) or type(exc).__name__
                    self.error = (
                        self.error or f"{self.name}: staging chunk {index} failed: {reason}"
                    )
                    return
            self._complete(index, name)

    def _complete(self, index: int, name: str) -> None:
        """Name to the loader every chunk that is now complete with all before it."""
        self._done[index] = name
        loader = self._loader
        while self._fed in self._done:
            line = self._done.pop(self._fed).encode() + b"\n"
            self._fed += 1
            if loader is not None:
                with contextlib.suppress(OSError):  # a loader that died says why at the end
                    loader.stdin.write(line)
        self.spool.advance(self.name, self._fed * self.policy.chunk_size)

    async def _upload(self, conn: asyncssh.SSHClientConnection, name: str, data: bytes) -> None:
        command = stage_chunk_command(self.image_id, name, len(data))
        proc = await conn.create_process(command, encoding=None)
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
            raise GatewayError(docker_error(self.name, result.exit_status, as_bytes(result.stderr)))
        self.sent += len(data)

    async def _load(self) -> HostReport:
        """End the loader's list, wait for it, and check the image ID it registered."""
        loader, waiting = self._loader, self._loader_result
        self.spool.drop(self.name)  # all of it is on the host: nothing more to read
        if loader is None or waiting is None:
            return HostReport("failed", f"{self.name}: docker load was stopped", bytes=self.sent)
        self._ending = True
        try:
            with contextlib.suppress(OSError):
                loader.stdin.write(STAGE_END)
                loader.stdin.write_eof()
            result = await asyncio.wait_for(asyncio.shield(waiting), LOAD_TIMEOUT_S)
        except (asyncssh.Error, OSError, TimeoutError) as exc:
            self.abort()
            reason = getattr(exc, "reason", "") or str(exc) or type(exc).__name__
            return HostReport(
                "failed", f"docker load failed: {self.name}: {reason}", bytes=self.sent
            )
        finally:
            self._loader = None
            loader.close()
        status, err = result.exit_status, as_bytes(result.stderr)
        if status != 0:
            detail = docker_error(self.name, status, err)
            return HostReport("failed", f"docker load failed: {detail}", bytes=self.sent)
        status, out, err = await self._run(id_script(self.ref), QUERY_TIMEOUT_S)
        return loaded_report(self.name, self.ref, self.image_id, status, out, err, self.sent)

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
        return result.exit_status, as_bytes(result.stdout), as_bytes(result.stderr)
