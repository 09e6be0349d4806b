"""``gpuhop-env``: environment pushes fanned out at the gateway, policy-checked and audited.

Pushing an image to five regions should upload each missing layer once, not
five times. The gateway already holds a pinned connection to every host, so
it runs the fan-out::

    ssh USER@gateway gpuhop-env images HOST...                        each host's images
    ssh USER@gateway gpuhop-env load REF IMAGE_ID HOST... <archive    load everywhere, verify
    ssh USER@gateway gpuhop-env tag IMAGE_ID REF HOST...              name an image a host has

``images`` lets the client build *one* ``docker save`` archive thinned to the
layer chains every target already holds. ``load`` starts ``docker load`` on
each host over the gateway's upstream connection and tees each chunk of stdin
to all of them. The gateway does not thin per host: Docker's loader skips the
layers a host already has, so extra bytes cost only the gateway's links,
never the developer's. Afterwards each host's image ID for REF must equal
IMAGE_ID. stdout is one JSON object (``hosts``: per host ``status``, ``error``,
``image_id``, ``bytes``, ``seconds``, ``images``); the exit status is 0 when
every host succeeded, 1 otherwise, 2 for a malformed request.

Policy: a host must allow the user recorded mode with the account an
``ssh gateway HOST`` session would get. Refused hosts are reported and audited
(``channel.deny``); the others proceed. Audit: ``env.images`` per query;
``env.push.start`` before any byte reaches a host (fail closed); ``env.push``
per host with REF, IMAGE_ID, the bytes received from the client and sent to
the host, and the result (``loaded``, ``tagged``, ``failed``, ``aborted``).

Flow control: a host whose channel buffer passes ``HOST_BUFFER`` pauses
reading from the client, so the slowest host sets the pace and no buffer
grows without bound; a host that drains nothing for ``STALL_S`` is dropped.
The far hosts' spool pauses it too once it runs ``env_push_spool_ahead_mib``
ahead of the slowest of them (:mod:`gateway.services.envstage`). Data that arrives
before the hosts are open waits within one channel window (reading is paused).
Once every host has failed the gateway stops reading, says so in one line on
stderr, and replies at once: the rest of the archive is never taken in.

Far hosts: a host whose pooled connection measured a round trip of at least
``env_push_min_rtt_ms`` (20 ms) is not fed from the tee. The gateway spools the
archive and sends it there in chunks over parallel channels on several
connections into a staging directory, loading it as it comes
(:mod:`gateway.services.envstage`): one channel's window would cap a 120 ms host near
17 MB/s. A cut-off staged push
keeps the chunks that arrived whole, and a retry of the same archive sends only
the rest.

Atomicity: ``docker load`` reads the whole archive before it registers
anything. When the client goes away before its EOF, each host's load is
killed (``signal KILL``, then the channel is dropped), never ended with an EOF
that would pass a truncated archive off as complete: the hosts keep their
previous images.

The wire (request parsing, the commands run on hosts, the reply) is
:mod:`gateway.services.envprotocol`; :func:`gateway.edges.ssh.inner.resolver_for` hands a
channel whose command starts with ``gpuhop-env`` to :class:`EnvSession`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncssh
import structlog

from gateway.domain.models import AccessRequest, Host, Mode, Principal
from gateway.domain.policy.rules import evaluate
from gateway.errors import GatewayError, UpstreamError
from gateway.ports import append_within
from gateway.services import envstage
from gateway.services.envprotocol import (
    ENV_COMMAND,
    IMAGES_SCRIPT,
    LOAD_COMMAND,
    EnvRequest,
    HostReport,
    as_bytes,
    docker_error,
    id_script,
    loaded_report,
    parse_images,
    parse_request,
)
from gateway.services.sessions.context import FrontContext

log = structlog.get_logger("gpuhop.envservice")

HOST_BUFFER = 1 << 20  # per host, beyond its SSH window
STALL_S = 600.0  # a host that drains nothing, or a client that sends nothing, for this long
QUERY_TIMEOUT_S = 120.0
LOAD_TIMEOUT_S = 1800.0  # after the EOF: registering large layers takes a while
_KEEP = 4096  # of each host's docker output, for error lines
_STDERR = asyncssh.EXTENDED_DATA_STDERR

AccountFor = Callable[[Principal, Host], str]


@dataclass(frozen=True, slots=True)
class _Allowed:
    host: Host
    account: str
    role: str


class _Branch(asyncssh.SSHClientSession[bytes]):
    """One host's ``docker load``: its stdin is a branch of the tee."""

    def __init__(self, owner: EnvSession, target: _Allowed, entry: Any) -> None:
        self.owner, self.target, self.entry = owner, target, entry
        self.chan: asyncssh.SSHClientChannel[bytes] | None = None
        self.sent = 0
        self.status: int | None = None
        self.signal = ""
        self.output = bytearray()
        self.error = ""
        self.broken = False  # a write failed: the host's side is going away
        self.closed = asyncio.Event()
        self.paused_since: float | None = None

    @property
    def live(self) -> bool:
        return self.chan is not None and not (self.closed.is_set() or self.error or self.broken)

    def send(self, data: bytes) -> None:
        assert self.chan is not None
        try:
            self.chan.write(data)
        except OSError:
            self.broken = True  # its exit status, arriving now, says why
            return
        self.sent += len(data)

    def abort(self, reason: str) -> None:
        """Kill the host's ``docker load`` and drop the channel: never an EOF."""
        self.error = self.error or reason
        if self.chan is not None and not self.closed.is_set():
            with contextlib.suppress(OSError):
                self.chan.send_signal("KILL")
            self.chan.abort()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.output += data
        del self.output[:-_KEEP]

    def exit_status_received(self, status: int) -> None:
        self.status = status

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self.signal = signal

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and not self.error:
            self.error = f"{self.target.host.name}: connection lost: {exc}"
        self.closed.set()
        self.owner.branch_ended(self)

    def pause_writing(self) -> None:
        self.paused_since = time.monotonic()
        self.owner.pause(self)

    def resume_writing(self) -> None:
        self.paused_since = None
        self.owner.resume(self)


@dataclass
class _Feed:
    """The client's side of a load: what arrived, and whether it ended cleanly."""

    received: int = 0
    early: list[bytes] = field(default_factory=list)
    active: bool = False
    eof: bool = False
    gone: bool = False
    last_data: float = field(default_factory=time.monotonic)


class EnvSession(asyncssh.SSHServerSession[bytes]):
    """The user's ``gpuhop-env`` channel; see the module docstring."""

    def __init__(
        self, ctx: FrontContext, principal: Principal, args: str, account_for: AccountFor
    ) -> None:
        self._ctx, self._principal, self._args = ctx, principal, args
        self._account_for = account_for
        self._chan: asyncssh.SSHServerChannel[bytes] | None = None
        self._task: asyncio.Task[None] | None = None
        self._feed = _Feed()
        self._branches: list[_Branch] = []
        self._staged: list[tuple[_Allowed, envstage.StagedHost]] = []
        self._spool: envstage.Spool | None = None
        self._paused_by: set[_Branch] = set()
        self._wake = asyncio.Event()
        self._stopped = ""  # why the rest of the archive was not read

    # -- the user's channel --

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self._chan = chan

    def exec_requested(self, command: str) -> bool:
        return True

    def session_started(self) -> None:
        assert self._chan is not None
        self._chan.pause_reading()  # until every host's docker load is open
        self._task = asyncio.get_running_loop().create_task(self._serve())

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        feed = self._feed
        feed.received += len(data)
        feed.last_data = time.monotonic()
        if not feed.active:
            if self._chan is not None:
                self._chan.pause_reading()  # what waits stays within one channel window
            feed.early.append(data)
            return
        if self._spool is not None:
            self._spool.append(data)
            if self._spool.full and self._chan is not None:
                self._chan.pause_reading()  # the slowest far host holds the client back
        for branch in self._branches:
            if branch.live:
                branch.send(data)
        if not self._hosts_left() and self._chan is not None:
            self._chan.pause_reading()  # nobody to send it to: take no more
            self._wake.set()

    def eof_received(self) -> bool:
        self._feed.eof = True
        if self._spool is not None:
            self._spool.finish(eof=True)
        self._wake.set()
        return True  # keep the channel open for the reply

    def connection_lost(self, exc: Exception | None) -> None:
        feed = self._feed
        feed.gone = True
        if self._spool is not None:
            self._spool.finish(eof=False)
        if feed.active and not feed.eof:
            reason = (
                f"the client went away after {feed.received} bytes, before the end of the"
                " archive; the load was killed and the previous image kept"
            )
            for branch in self._branches:
                branch.abort(reason)
        self._wake.set()

    # -- flow control, from the branches --

    def pause(self, branch: _Branch) -> None:
        self._paused_by.add(branch)
        if self._chan is not None:
            self._chan.pause_reading()

    def resume(self, branch: _Branch) -> None:
        self._paused_by.discard(branch)
        self._resume_if_clear()

    def branch_ended(self, branch: _Branch) -> None:
        self._paused_by.discard(branch)
        self._resume_if_clear()
        self._wake.set()

    def _hosts_left(self) -> bool:
        """Whether any host still takes the archive: a live tee branch or a far host's spool."""
        spool = self._spool
        return any(b.live for b in self._branches) or (spool is not None and spool.readers > 0)

    def _resume_if_clear(self) -> None:
        spool_full = self._spool is not None and self._spool.full
        clear = not self._paused_by and not spool_full and self._hosts_left()
        if self._feed.active and clear and self._chan is not None:
            self._chan.resume_reading()

    # -- serving one request --

    async def _serve(self) -> None:
        try:
            request = parse_request(self._args)
        except ValueError as exc:
            self._reply_error(f"gpuhop-env: {exc}", 2)
            return
        try:
            allowed, reports = self._admit(request)
            if request.verb == "images":
                reports.update(await self._images(request, allowed))
            elif request.verb == "tag":
                reports.update(await self._tag(request, allowed))
            else:
                loaded = await self._load(request, allowed)
                if loaded is None:
                    return  # the client is gone: nobody to answer
                reports.update(loaded)
        except Exception as exc:  # one line for the user; the details go to the log
            log.exception("gpuhop-env failed", user=self._principal.user)
            self._reply_error(f"gpuhop-env: {type(exc).__name__}: {exc}", 1)
            return
        reply = {
            "ref": request.ref,
            "image_id": request.image_id,
            "bytes_received": self._feed.received,
            "hosts": {name: reports[name].wire() for name in request.hosts},
        }
        ok = all(r.status in ("ok", "loaded", "tagged") for r in reports.values())
        chan = self._chan
        assert chan is not None
        with contextlib.suppress(OSError):
            if self._stopped:
                chan.write((self._stopped + "\n").encode(), _STDERR)
            chan.write((json.dumps(reply) + "\n").encode())
            chan.exit(0 if ok else 1)

    def _reply_error(self, message: str, status: int) -> None:
        assert self._chan is not None
        with contextlib.suppress(OSError):
            self._chan.write((message + "\n").encode(), _STDERR)
            self._chan.exit(status)

    def _admit(self, request: EnvRequest) -> tuple[list[_Allowed], dict[str, HostReport]]:
        """Policy per host: recorded mode with the default account, as ``ssh gw HOST``."""
        allowed: list[_Allowed] = []
        refused: dict[str, HostReport] = {}
        p = self._principal
        for name in request.hosts:
            host = self._ctx.inventory.host(name)
            account = self._account_for(p, host) if host is not None else ""
            if host is None:
                reason = f"unknown host {name}"
            else:
                decision = evaluate(p, AccessRequest(host, Mode.RECORDED, account=account))
                if decision.allowed:
                    allowed.append(_Allowed(host, account, decision.role))
                    continue
                reason = decision.reason
            refused[name] = HostReport("refused", f"denied: {reason}")
            self._ctx.audit_soon(
                "channel.deny",
                p.user,
                {
                    "user": p.user,
                    "source": p.source,
                    "request": f"{ENV_COMMAND} {request.verb}",
                    "host": name,
                    "account": account,
                    "dest": f"{account}@{name}",
                    "reason": reason,
                },
                scope=p.source,
            )
        return allowed, refused

    async def _run_on(self, target: _Allowed, command: str) -> tuple[int | None, bytes, bytes]:
        """Run ``command`` on a host over the gateway's pooled connection."""
        pool = self._ctx.pool
        entry = await pool.acquire(self._principal.user, target.host, target.account)
        try:
            proc = await entry.conn.create_process(command)
            try:
                result = await proc.wait(check=False, timeout=QUERY_TIMEOUT_S)
            finally:
                proc.close()  # a timed-out command must not keep a channel on the pooled link
        except (asyncssh.Error, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", "") or str(exc) or type(exc).__name__
            raise UpstreamError(f"{target.host.name}: {reason}") from exc
        finally:
            pool.release(entry)
        return result.exit_status, as_bytes(result.stdout), as_bytes(result.stderr)

    async def _images(
        self, request: EnvRequest, allowed: Sequence[_Allowed]
    ) -> dict[str, HostReport]:
        async def one(target: _Allowed) -> HostReport:
            started = time.monotonic()
            try:
                status, out, err = await self._run_on(target, IMAGES_SCRIPT)
                if status != 0:
                    return HostReport("failed", docker_error(target.host.name, status, err))
                images = tuple(parse_images(out))
            except (GatewayError, ValueError, KeyError) as exc:
                return HostReport("failed", str(exc))
            return HostReport("ok", seconds=time.monotonic() - started, images=images)

        reports = await asyncio.gather(*(one(t) for t in allowed))
        await self._audit(
            "env.images",
            {"hosts": list(request.hosts), "allowed": [t.host.name for t in allowed]},
        )
        return {t.host.name: r for t, r in zip(allowed, reports, strict=True)}

    async def _tag(self, request: EnvRequest, allowed: Sequence[_Allowed]) -> dict[str, HostReport]:
        command = (
            f"docker tag {shlex.quote(request.image_id)} {shlex.quote(request.ref)} && "
            + id_script(request.ref)
        )

        async def one(target: _Allowed) -> HostReport:
            started = time.monotonic()
            try:
                status, out, err = await self._run_on(target, command)
            except GatewayError as exc:
                report = HostReport("failed", str(exc))
            else:
                found = out.decode(errors="replace").strip()
                if status != 0:
                    report = HostReport("failed", docker_error(target.host.name, status, err))
                elif found != request.image_id:
                    report = HostReport(
                        "failed", f"{target.host.name} has {found} as {request.ref}"
                    )
                else:
                    report = HostReport("tagged", image_id=found)
            report = _timed(report, started)
            await self._audit_push(request, target, report, 0)
            return report

        reports = await asyncio.gather(*(one(t) for t in allowed))
        return {t.host.name: r for t, r in zip(allowed, reports, strict=True)}

    # -- load: the fan-out --

    async def _load(
        self, request: EnvRequest, allowed: Sequence[_Allowed]
    ) -> dict[str, HostReport] | None:
        """Tee stdin into ``docker load`` on every allowed host; None when the client left early."""
        if not allowed:
            return {}
        p = self._principal
        try:
            await append_within(
                self._ctx.audit,
                "env.push.start",
                p.user,
                {
                    "user": p.user,
                    "source": p.source,
                    "ref": request.ref,
                    "image_id": request.image_id,
                    "hosts": [t.host.name for t in allowed],
                },
                self._ctx.audit_start_timeout_s,
            )
        except Exception as exc:  # fail closed: nothing reaches a host unaudited
            return {t.host.name: HostReport("failed", f"refused: {exc}") for t in allowed}
        started = time.monotonic()
        spool = envstage.Spool(ahead=self._ctx.env_stage.ahead)
        spool.on_room = self._resume_if_clear
        opened = await asyncio.gather(*(self._open(t, request, spool) for t in allowed))
        reports: dict[str, HostReport] = {}
        for target, result in zip(allowed, opened, strict=True):
            if isinstance(result, str):
                reports[target.host.name] = HostReport("failed", result)
                await self._audit_push(request, target, reports[target.host.name], 0)
            elif isinstance(result, envstage.StagedHost):
                self._staged.append((target, result))
            else:
                self._branches.append(result)
        if self._staged:
            self._spool = spool
        staged = [asyncio.ensure_future(s.run()) for _, s in self._staged]
        for task in staged:
            task.add_done_callback(lambda _: self._wake.set())
        try:
            await self._pump(staged)
            feed = self._feed
            if feed.gone and not feed.eof:
                for branch in self._branches:
                    branch.abort(f"the client went away after {feed.received} bytes")
                    report = _timed(HostReport("aborted", branch.error), started)
                    await self._audit_push(request, branch.target, report, branch.sent)
                for (target, host), report in zip(
                    self._staged, await self._staged_reports(staged), strict=True
                ):
                    await self._audit_push(request, target, _timed(report, started), host)
                return None
            await self._finish_loads()
            results, staged_results = await asyncio.gather(
                asyncio.gather(*(self._verify(b, request) for b in self._branches)),
                self._staged_reports(staged),
            )
            for branch, report in zip(self._branches, results, strict=True):
                report = _timed(report, started)
                reports[branch.target.host.name] = report
                await self._audit_push(request, branch.target, report, branch.sent)
            for (target, host), report in zip(self._staged, staged_results, strict=True):
                report = _timed(report, started)
                reports[target.host.name] = report
                await self._audit_push(request, target, report, host)
        finally:
            self._feed.active = False
            pool = self._ctx.pool
            for task in staged:
                task.cancel()
            for branch in self._branches:
                branch.abort("the push ended")  # no-op for a closed channel
                pool.release(branch.entry)
            for _, host in self._staged:
                host.abort()
                pool.release(host.entry)
            spool.close()
        return reports

    async def _staged_reports(
        self, tasks: Sequence[asyncio.Future[HostReport]]
    ) -> list[HostReport]:
        """Each staged host's report; one that raised is reported as failed."""
        results = await asyncio.gather(*tasks, return_exceptions=True)
        reports: list[HostReport] = []
        for (_, host), result in zip(self._staged, results, strict=True):
            if isinstance(result, HostReport):
                reports.append(result)
            else:
                log.error("staged push failed", host=host.name, error=repr(result))
                reports.append(HostReport("failed", f"{host.name}: {result}", bytes=host.sent))
        return reports

    async def _open(
        self, target: _Allowed, request: EnvRequest, spool: envstage.Spool
    ) -> _Branch | envstage.StagedHost | str:
        """A tee branch for a near host, a staged push for a far one, or why neither."""
        pool = self._ctx.pool
        try:
            entry = await pool.acquire(self._principal.user, target.host, target.account)
        except GatewayError as exc:
            return str(exc)
        policy = self._ctx.env_stage
        if policy.applies(self._rtt_s(target.host, entry.rtt_s)):
            user, host, account = self._principal.user, target.host, target.account

            async def connect_extra() -> asyncssh.SSHClientConnection:
                return await pool.connect_extra(user, host, account)

            staged = envstage.StagedHost(
                host.name, entry, request.image_id, request.ref, spool, policy, connect_extra
            )
            try:
                await staged.prepare()
            except GatewayError as exc:
                pool.release(entry)
                return str(exc)
            return staged
        branch = _Branch(self, target, entry)
        try:
            chan, _ = await entry.conn.create_session(
                lambda: branch,
                LOAD_COMMAND,
                encoding=None,
                window=entry.window,
                max_pktsize=self._ctx.max_packet,
            )
        except (asyncssh.Error, OSError) as exc:
            pool.release(entry)
            reason = getattr(exc, "reason", "") or str(exc)
            return f"{target.host.name}: cannot start docker load: {reason}"
        chan.set_write_buffer_limits(high=HOST_BUFFER)
        branch.chan = chan
        return branch

    def _rtt_s(self, host: Host, login_estimate: float) -> float:
        """The host's round trip: the probes' median, else the login-time estimate."""
        status = self._ctx.live.status(host.name)
        median_ms = status.latency.median_ms if status is not None else None
        return login_estimate if median_ms is None else median_ms / 1000.0

    async def _pump(self, staged: Sequence[asyncio.Future[HostReport]]) -> None:
        """Feed the hosts until the client's EOF, the client leaving, or no host left."""
        feed = self._feed
        feed.active = True
        for data in feed.early:
            if self._spool is not None:
                self._spool.append(data)
            for branch in self._branches:
                if branch.live:
                    branch.send(data)
        feed.early.clear()
        feed.last_data = time.monotonic()
        self._resume_if_clear()
        while not (feed.eof or feed.gone) and (
            any(b.live for b in self._branches) or any(not t.done() for t in staged)
        ):
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 1.0)
            now = time.monotonic()
            for branch in list(self._paused_by):
                since = branch.paused_since
                if since is not None and now - since > STALL_S:
                    branch.abort(
                        f"{branch.target.host.name}: stalled: read nothing for {STALL_S:.0f} s"
                    )
            if not self._paused_by and now - feed.last_data > STALL_S:
                for branch in self._branches:
                    branch.abort(f"the client sent nothing for {STALL_S:.0f} s")
                if self._spool is not None:
                    self._spool.error = f"the client sent nothing for {STALL_S:.0f} s"
                    self._spool.finish(eof=False)
        feed.active = False
        if feed.gone and not feed.eof:
            return
        if not feed.eof:  # every host failed: say so now rather than swallow the rest
            assert self._chan is not None
            self._chan.pause_reading()
            self._stopped = (
                f"gpuhop-env: every host failed; stopped reading the archive after"
                f" {feed.received} bytes"
            )

    async def _finish_loads(self) -> None:
        """EOF to each host still reading (the archive is complete), then wait for its exit."""
        live = [b for b in self._branches if b.live]
        for branch in live:
            assert branch.chan is not None
            branch.chan.write_eof()
        waits = [asyncio.ensure_future(b.closed.wait()) for b in live]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=LOAD_TIMEOUT_S)
            for w in pending:
                w.cancel()
        for branch in live:
            if not branch.closed.is_set():
                branch.abort(f"{branch.target.host.name}: docker load did not finish in time")

    async def _verify(self, branch: _Branch, request: EnvRequest) -> HostReport:
        name = branch.target.host.name
        if branch.error:
            return HostReport("failed", branch.error, bytes=branch.sent)
        detail = ""
        if branch.signal:
            detail = f"{name}: killed by SIG{branch.signal}"
        elif branch.status is None:
            detail = f"{name}: ended without an exit status"
        elif branch.status != 0:
            detail = docker_error(name, branch.status, bytes(branch.output))
        elif not self._feed.eof:
            detail = f"{name}: ended before the archive did"
        if detail:
            return HostReport("failed", f"docker load failed: {detail}", bytes=branch.sent)
        try:
            status, out, err = await self._run_on(branch.target, id_script(request.ref))
        except GatewayError as exc:
            return HostReport("failed", str(exc), bytes=branch.sent)
        return loaded_report(name, request.ref, request.image_id, status, out, err, branch.sent)

    # -- audit --

    async def _audit_push(
        self,
        request: EnvRequest,
        target: _Allowed,
        report: HostReport,
        to_host: int | envstage.StagedHost,
    ) -> None:
        staged: dict[str, object] = {}
        if isinstance(to_host, envstage.StagedHost):
            staged = {"streams": to_host.streams, "resumed_bytes": to_host.skipped}
            to_host = to_host.sent
        await self._audit(
            "env.push",
            {
                "host": target.host.name,
                "region": target.host.region,
                "account": target.account,
                "role": target.role,
                "ref": request.ref,
                "image_id": request.image_id,
                "bytes": self._feed.received,
                "bytes_to_host": to_host,
                "result": report.status,
                "error": report.error,
                "duration_s": round(report.seconds, 6),
                **staged,
            },
        )

    async def _audit(self, kind: str, data: dict[str, object]) -> None:
        p = self._principal
        payload = {"user": p.user, "source": p.source, **data}
        try:
            await append_within(self._ctx.audit, kind, p.user, payload, 5.0)
        except Exception as exc:  # the outcome stands; the log says the record is missing
            log.error("audit write failed", kind=kind, error=str(exc))


def _timed(report: HostReport, started: float) -> HostReport:
    return dataclasses.replace(report, seconds=time.monotonic() - started)
