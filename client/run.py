"""``gpuhop run``: send the work directory to a host, run one command there, stream it back.

One SSH connection to the gateway, logged in as ``USER+HOST`` (recorded,
exact exit statuses), carries a few exec channels:

1. **send** — ``tar -x`` into a fresh ``~/.cache/gpuhop/runs/<id>/`` on the
   host, fed a tar stream: the wrapper, and the work directory under ``work/``;
2. **job** — opened while the files are still going out (one round trip
   saved); it waits for a ``go`` line (sent once the files are unpacked; EOF
   instead cleans up), then runs a small ``sh`` wrapper (``client.remote.JOB_SCRIPT``,
   sent with the files) that exports the environment, starts the command in
   its own session and process group (``setsid``), and keeps a watchdog on the
   channel's stdin: the client never closes it, so EOF means the client
   stopped the job or vanished (sshd closes a dead client's channels), and the
   watchdog kills the whole group, TERM then KILL. stdout and stderr stream
   back separately; the wrapper exits with the command's status (a signal N
   gives 128+N, as ``sh`` reports it) and kills whatever the command left
   running in its group;
3. **heartbeat** — opened only if the job runs past :data:`HEARTBEAT_DELAY_S`,
   a line every ``heartbeat_s`` from the host. Keepalives cover the link to the
   gateway; this covers the gateway's link to the host, so a frozen host is
   noticed within ``lost_after_s`` (default 12 s) instead of hanging;
4. **kill** — on SIGINT/SIGTERM or ``--timeout``, ``kill -TERM -PGID`` on the
   host, then EOF on the job's stdin so the watchdog escalates to KILL.

With ``RunRequest.image`` the command runs in a container instead
(:data:`IMAGE_SCRIPT`, the wrapper's command): ``gpuhop-<run id>`` is created
with the work directory mounted at ``/work``, the ``--env`` variables and, for
``--gpus``, ``--gpus "device=$CUDA_VISIBLE_DEVICES"`` (the gateway's lease; the
CLI sends the same DeviceRequest as ``client.envs.run``). It is started, its
output followed with ``docker logs -f`` (stdout and stderr stay apart) and its
exit code returned. Whatever stops the job (the kill above, the watchdog, a
lost client) sends the script TERM, and it runs ``docker rm -f`` before it
exits, in a session of its own so the group's KILL cannot cut it short.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import secrets
import shlex
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from client.errors import (
    ClientError,
    GatewayUnavailable,
    GpuRuntimeMissing,
    HostLost,
    HostNotFound,
    JobTimedOut,
    PolicyDenied,
    RunInterrupted,
    SendFailed,
)
from client.identity import Paths, Profile
from client.remote import (
    HEARTBEAT_SCRIPT,
    JOB_FILE,
    JOB_SCRIPT,
    JOB_START,
    KILL_SCRIPT,
    SEND_SCRIPT,
    script_command,
)
from client.settings import ClientSettings
from client.sshconn import asyncssh, connect, login_name
from client.workdir import Selection, chunks

T = TypeVar("T")

HEARTBEAT_DELAY_S = 2.0
CONTAINER_FAILED = 125  # docker's own code: the container could not be created or started
NO_GPU_RUNTIME = "the Docker engine on this host has no NVIDIA container runtime"
KILL_WAIT_S = 2.0
STOP_WAIT_S = 2.5
GATEWAY_NOTICE = re.compile(rb"\r?\n?(gpuhop: [^\r\n]*)\r?\n")
"""One line the gateway itself writes to a session's stderr (after a blank line, for a
terminal that may be mid-line), e.g. ``gpuhop: sg-1: host stopped answering``."""


class Output(Protocol):
    """Where the job's output goes (the terminal, or a test's buffer)."""

    def stdout(self, data: bytes) -> None: ...
    def stderr(self, data: bytes) -> None: ...


class StdStreams:
    """The process's own stdout and stderr, flushed chunk by chunk."""

    def __init__(self) -> None:
        self.ends_with_newline = True
        self._broken: set[str] = set()

    def stdout(self, data: bytes) -> None:
        self._write("stdout", data)
        self.ends_with_newline = data.endswith(b"\n")

    def stderr(self, data: bytes) -> None:
        self._write("stderr", data)

    def _write(self, name: str, data: bytes) -> None:
        if name in self._broken:
            return
        stream = getattr(sys, name).buffer
        try:
            stream.write(data)
            stream.flush()
        except BrokenPipeError:
            self._broken.add(name)  # the reader went away; the job goes on


@dataclass(frozen=True)
class RunRequest:
    """One job: where, what, with which environment and limits."""

    host: str
    command: tuple[str, ...]
    selection: Selection
    env: tuple[tuple[str, str], ...] = ()
    gpus: int = 0
    timeout_s: float | None = None
    account: str = ""
    data: str = ""  # a data set name: the gateway checks its residency against the host
    image: str = ""  # run in a container of this image (already on the host)


def channel_env(request: RunRequest, *, job: bool) -> dict[bytes | str, bytes | str]:
    """SSH environment the gateway reads: GPUs to lease (job channel only), data set."""
    env: dict[bytes | str, bytes | str] = {}
    if request.data:
        env["GPUHOP_DATA"] = request.data
    if job and request.gpus:
        env["GPUHOP_GPUS"] = str(request.gpus)
    return env


@dataclass(frozen=True)
class RunSummary:
    """How a job went; ``gpuhop run --json`` prints it."""

    run_id: str
    host: str
    outcome: str  # exited | timeout | lost | cancelled | denied | failed
    exit_code: int
    duration_s: float
    bytes_sent: int
    bytes_received: int
    error: ClientError | None = None
    error_shown: bool = False  # the host already printed the error's line


@dataclass
class _Beats:
    last: float = field(default_factory=time.monotonic)
    watching: bool = False


class _Job(asyncssh.SSHClientSession[bytes]):
    """The job channel: output to ``out``, exit status kept, closing reported."""

    def __init__(self, out: Output, beats: _Beats) -> None:
        self._out = out
        self._beats = beats
        self.exit_status: int | None = None
        self.exit_signal: str | None = None
        self.bytes_received = 0
        self.stderr_tail = b""
        self.closed: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        # Until "go" only the gateway speaks on this channel (a refusal); keep that
        # back, the send channel's refusal already says it.
        self._held: list[tuple[bytes, asyncssh.DataType]] | None = []
        self.notices: list[bytes] = []
        """The gateway's own lines, kept back: the error the run ends with says them once
        (``show_notices`` prints them when it does not)."""

    def release(self) -> None:
        """Start passing output through (the command is about to run)."""
        held, self._held = self._held or [], None
        for data, datatype in held:
            self._emit(data, datatype)

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.bytes_received += len(data)
        self._beats.last = time.monotonic()
        if datatype == asyncssh.EXTENDED_DATA_STDERR:
            self.stderr_tail = (self.stderr_tail + data)[-4096:]
        if self._held is not None:
            self._held.append((data, datatype))
        else:
            self._emit(data, datatype)

    def _emit(self, data: bytes, datatype: asyncssh.DataType) -> None:
        notice = (
            GATEWAY_NOTICE.fullmatch(data) if datatype == asyncssh.EXTENDED_DATA_STDERR else None
        )
        if notice is not None and not notice.group(1).startswith(b"gpuhop: warning: "):
            self.notices.append(notice.group(1) + b"\n")
        elif notice is not None:
            self._out.stderr(notice.group(1) + b"\n")  # a warning is news now
        elif datatype == asyncssh.EXTENDED_DATA_STDERR:
            self._out.stderr(data)
        else:
            self._out.stdout(data)

    def show_notices(self) -> None:
        """Print the gateway's kept-back lines (the run's end did not say them)."""
        notices, self.notices = self.notices, []
        for line in notices:
            self._out.stderr(line)

    def exit_status_received(self, status: int) -> None:
        self.exit_status = status

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self.exit_signal = signal

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(exc)


class _Heartbeat(asyncssh.SSHClientSession[bytes]):
    def __init__(self, beats: _Beats) -> None:
        self._beats = beats
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self._beats.last = time.monotonic()

    def connection_lost(self, exc: Exception | None) -> None:
        self._beats.watching = False  # the job is ending, or the job channel will say why
        if not self.closed.done():
            self.closed.set_result(None)


def new_run_id() -> str:
    return f"{int(time.time())}-{secrets.token_hex(4)}"


def job_command(run_id: str, request: RunRequest) -> str:
    """The exec line for the job channel (the host's login shell parses it)."""
    env = [f"{k}={v}" for k, v in request.env]
    env += [f"GPUHOP_RUN_ID={run_id}", f"GPUHOP_GPUS={request.gpus}"]
    command = image_command(run_id, request) if request.image else list(request.command)
    return shlex.join(["sh", "-c", JOB_START, "gpuhop-run", run_id, *env, "--", *command])


def send_chunks(request: RunRequest) -> Iterator[bytes]:
    """The tar stream the send channel unpacks: the wrapper, then ``work/``."""
    wrapper = (JOB_FILE, JOB_SCRIPT.encode(), 0o700)
    return chunks(request.selection, prefix="work/", extra=[wrapper])


# $1 container name, $2 GPUs asked (0 or more), then the `docker create` options,
# the image and the command. `--pull never`: a missing image is an error, never a pull.
IMAGE_SCRIPT = f"""n=$1 g=$2 x={CONTAINER_FAILED}; shift 2
gone() {{ setsid docker rm -f "$n" >/dev/null 2>&1; }}
trap 'gone; exit 143' TERM
trap 'gone; exit 130' INT
trap 'gone; exit 129' HUP
if [ "$g" != 0 ]; then
  [ -n "$CUDA_VISIBLE_DEVICES" ] || {{
    echo "gpuhop: --gpus: no GPUs were leased to this job" >&2; exit $x; }}
  set -- --gpus "\\"device=$CUDA_VISIBLE_DEVICES\\"" "$@"
fi
docker create --pull never --name "$n" -v "$PWD:/work" -w /work "$@" >/dev/null || exit $x
if ! e=$(docker start "$n" 2>&1 >/dev/null); then
  gone
  case $e in
  *"could not select device driver"*|*"unknown or invalid runtime name: nvidia"*)
    echo "gpuhop: --gpus $g: {NO_GPU_RUNTIME}" \\
      "(install nvidia-container-toolkit there, or run without --gpus)" >&2;;
  *) printf '%s\\n' "$e" >&2;;
  esac
  exit $x
fi
docker logs -f "$n" &
l=$!
s=$(docker wait "$n")
wait $l
gone
exit "${{s:-$x}}"
"""


def container_name(run_id: str) -> str:
    return f"gpuhop-{run_id}"


def image_command(run_id: str, request: RunRequest) -> list[str]:
    """The wrapped command for ``--image``: :data:`IMAGE_SCRIPT` and its arguments.

    Variables go by name (``--env K``): the wrapper has exported them, so their
    values never appear on the host's command lines.
    """
    keys = [k for k, _ in request.env] + ["GPUHOP_RUN_ID", "GPUHOP_GPUS"]
    options = [arg for k in dict.fromkeys(keys) for arg in ("--env", k)]
    name = container_name(run_id)
    return [
        "sh", "-c", IMAGE_SCRIPT, "gpuhop-image", name, str(request.gpus),
        *options, "--", request.image, *request.command,
    ]  # fmt: skip


def signal_exit_code(name: str) -> int:
    """128 + the signal's number, as a shell reports a command killed by it."""
    try:
        return 128 + int(signal.Signals["SIG" + name.removeprefix("SIG")])
    except KeyError:
        return 255


class Runner:
    """Runs one :class:`RunRequest`; ``stop(signum)`` (from a signal handler) cancels it."""

    def __init__(
        self,
        request: RunRequest,
        profile: Profile,
        paths: Paths,
        settings: ClientSettings,
        out: Output,
        *,
        run_id: str | None = None,
        connected: Callable[[], None] = lambda: None,
    ) -> None:
        """``connected`` is called once the gateway has answered (before any file goes
        out), so progress lines never come before a connection error."""
        self.request = request
        self.profile = profile
        self.paths = paths
        self.settings = settings
        self.out = out
        self.run_id = run_id or new_run_id()
        self.connected = connected
        self.bytes_sent = 0
        self._stop: asyncio.Future[int] | None = None
        self._started = time.monotonic()

    def failure(self, error: ClientError) -> RunSummary:
        """The summary of a run that ended before its command could (``--json``)."""
        if isinstance(error, PolicyDenied | HostNotFound):
            outcome = "denied"
        elif isinstance(error, RunInterrupted):
            outcome = "cancelled"
        else:
            outcome = "lost" if isinstance(error, HostLost) else "failed"
        return RunSummary(
            run_id=self.run_id,
            host=self.request.host,
            outcome=outcome,
            exit_code=error.exit_code,
            duration_s=round(time.monotonic() - self._started, 3),
            bytes_sent=self.bytes_sent,
            bytes_received=0,
            error=error,
        )

    def stop(self, signum: int) -> None:
        """Cancel the run (SIGINT/SIGTERM): the job is killed on the host, then we exit."""
        if self._stop is not None and not self._stop.done():
            self._stop.set_result(signum)

    async def run(self) -> RunSummary:
        self._stop = asyncio.get_running_loop().create_future()
        self._started = time.monotonic()
        username = login_name(self.profile, self.request.host, self.request.account)
        conn = await self._race(connect(self.profile, self.paths, self.settings, username))
        self.connected()
        beats = _Beats()
        job = _Job(self.out, beats)
        # The job channel opens while the files go out; its wrapper waits for "go".
        opening = asyncio.ensure_future(
            conn.create_session(
                lambda: job,
                job_command(self.run_id, self.request),
                env=channel_env(self.request, job=True),
                encoding=None,
            )
        )
        try:
            try:
                await self._race(self._send(conn))
                chan, _ = await self._race(opening)
            except asyncssh.ChannelOpenError as exc:
                raise self._open_refused(exc) from None
            except (asyncssh.Error, OSError) as exc:
                raise HostLost(f"lost the connection to the gateway: {_reason(exc)}") from None
            if job.closed.done():  # refused while the files were going out
                return self._ended(job)
            job.release()
            try:
                chan.write(b"go\n")
            except (OSError, asyncssh.Error):
                await asyncio.wait_for(asyncio.shield(job.closed), STOP_WAIT_S)
                return self._ended(job)
            return await self._job(conn, chan, job, beats)
        finally:
            if not opening.done():
                opening.cancel()
            conn.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.wait_closed(), 2.0)

    async def _race(self, work: Awaitable[T]) -> T:
        """Await ``work`` unless a stop signal comes first (before the job has started)."""
        assert self._stop is not None
        task = asyncio.ensure_future(work)
        waiting: set[asyncio.Future[Any]] = {task, self._stop}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        signum = self._stop.result()
        raise RunInterrupted(f"interrupted by {signal.Signals(signum).name}", signum)

    # -- sending the work directory --

    async def _send(self, conn: asyncssh.SSHClientConnection) -> None:
        proc = await conn.create_process(
            script_command(SEND_SCRIPT, self.run_id),
            env=channel_env(self.request, job=False),
            encoding=None,
        )
        it = send_chunks(self.request)
        try:
            while (chunk := await asyncio.to_thread(next, it, None)) is not None:
                if proc.exit_status is not None:
                    break  # refused or failed early: no point sending the rest
                proc.stdin.write(chunk)
                self.bytes_sent += len(chunk)
                await proc.stdin.drain()
            proc.stdin.write_eof()
        except (BrokenPipeError, ConnectionError, asyncssh.Error):
            pass  # the remote side stopped reading; its exit status says why
        result = await proc.wait(check=False)
        status = result.exit_status
        stderr = result.stderr if isinstance(result.stderr, bytes) else b""
        if status == 0:
            return
        raise self._failed_send(status, stderr.decode(errors="replace").strip())

    def _failed_send(self, status: int | None, message: str) -> ClientError:
        refusal = gateway_refusal(status, message, self.request.host, older=True)
        if refusal is not None:
            return refusal
        lines = message.replace("\r", "").strip().splitlines()
        line = lines[-1] if lines else ""
        if status in (86, 87):
            return SendFailed(f"{self.request.host}: cannot unpack the work directory: {line}")
        return SendFailed(
            f"{self.request.host}: sending the work directory failed "
            f"(exit {status}){': ' + line if line else ''}"
        )

    def _open_refused(self, exc: asyncssh.ChannelOpenError) -> ClientError:
        if exc.code == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED:
            return PolicyDenied(exc.reason)
        return HostLost(f"{self.request.host}: {exc.reason}")

    # -- the job --

    async def _job(
        self,
        conn: asyncssh.SSHClientConnection,
        chan: asyncssh.SSHClientChannel[bytes],
        job: _Job,
        beats: _Beats,
    ) -> RunSummary:
        assert self._stop is not None
        lost = asyncio.ensure_future(self._watch(conn, beats))
        timeout = self.request.timeout_s
        timer = asyncio.ensure_future(asyncio.sleep(timeout)) if timeout is not None else None
        waiting: set[asyncio.Future[Any]] = {job.closed, self._stop, lost}
        if timer is not None:
            waiting.add(timer)
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            if timer is not None:
                timer.cancel()
        if job.closed.done():
            return self._ended(job)
        if self._stop.done():
            signum = self._stop.result()
            await self._kill(conn, chan, job)
            name = signal.Signals(signum).name
            err: ClientError = RunInterrupted(f"{name}: the job was stopped on the host", signum)
            return self._summary("cancelled", err.exit_code, job, err)
        if timer is not None and timer.done():
            await self._kill(conn, chan, job)
            err = JobTimedOut(f"the job ran past --timeout ({timeout:g} s) and was killed")
            return self._summary("timeout", err.exit_code, job, err)
        chan.abort()
        err = HostLost(
            f"{self.request.host} went silent for {self.settings.lost_after_s:g} s "
            "(link frozen or host down); giving up"
        )
        return self._summary("lost", err.exit_code, job, err)

    def _ended(self, job: _Job) -> RunSummary:
        summary = self._outcome(job)
        if summary.error is None or summary.error_shown:
            job.show_notices()
        return summary

    def _outcome(self, job: _Job) -> RunSummary:
        exc = job.closed.result()
        if exc is not None:
            err: ClientError = HostLost(f"lost the connection to the gateway: {_reason(exc)}")
            return self._summary("lost", err.exit_code, job, err)
        if job.exit_signal is not None:
            return self._summary("exited", signal_exit_code(job.exit_signal), job)
        tail = job.stderr_tail.decode(errors="replace")
        if job.exit_status is None:
            err = HostLost(f"{self.request.host}: the session ended without an exit status")
            return self._summary("lost", err.exit_code, job, err)
        refusal = gateway_refusal(job.exit_status, tail, self.request.host)
        if refusal is not None:
            outcome = "denied" if isinstance(refusal, PolicyDenied | HostNotFound) else "lost"
            return self._summary(outcome, refusal.exit_code, job, refusal)
        if self.request.image and job.exit_status == CONTAINER_FAILED and NO_GPU_RUNTIME in tail:
            line = next(ln for ln in tail.splitlines() if NO_GPU_RUNTIME in ln)
            err = GpuRuntimeMissing(f"{self.request.host}: {line.removeprefix('gpuhop: ')}")
            summary = self._summary("failed", CONTAINER_FAILED, job, err)
            return dataclasses.replace(summary, error_shown=True)
        return self._summary("exited", job.exit_status, job)

    async def _watch(self, conn: asyncssh.SSHClientConnection, beats: _Beats) -> None:
        """Return when the host has been silent too long (the heartbeat channel is quiet)."""
        await asyncio.sleep(HEARTBEAT_DELAY_S)
        beats.last = time.monotonic()
        beats.watching = True
        beat = _Heartbeat(beats)
        command = script_command(HEARTBEAT_SCRIPT, self.run_id, f"{self.settings.heartbeat_s:g}")
        opener = asyncio.ensure_future(conn.create_session(lambda: beat, command, encoding=None))
        try:
            while True:
                await asyncio.sleep(0.5)
                if opener.done() and (opener.cancelled() or opener.exception() is not None):
                    beats.watching = False  # no heartbeat channel: keepalives only
                if beats.watching and time.monotonic() - beats.last > self.settings.lost_after_s:
                    return
        finally:
            if not opener.done():
                opener.cancel()
            elif not opener.cancelled() and opener.exception() is None:
                opener.result()[0].close()

    async def _kill(
        self, conn: asyncssh.SSHClientConnection, chan: asyncssh.SSHClientChannel[bytes], job: _Job
    ) -> None:
        """Kill the job's process group on the host, then close its stdin (the watchdog)."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                conn.run(script_command(KILL_SCRIPT, self.run_id), check=False, encoding=None),
                KILL_WAIT_S,
            )
        with contextlib.suppress(Exception):
            chan.write_eof()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(job.closed), STOP_WAIT_S)
        chan.close()

    def _summary(
        self, outcome: str, code: int, job: _Job, error: ClientError | None = None
    ) -> RunSummary:
        return RunSummary(
            run_id=self.run_id,
            host=self.request.host,
            outcome=outcome,
            exit_code=code,
            duration_s=round(time.monotonic() - self._started, 3),
            bytes_sent=self.bytes_sent,
            bytes_received=job.bytes_received,
            error=error,
        )


def gateway_refusal(
    status: int | None, stderr: str, host: str, *, older: bool = False
) -> ClientError | None:
    """What a gateway refusal or failure line means, or None when it is not one.

    The gateway ends a session it will not (or can no longer) serve with exit
    status 255 and one ``gpuhop: ...`` line on stderr: ``denied: ...`` for
    policy, GPU leases, budgets and unknown hosts; anything else when the host
    is unreachable or its connection died. ``older`` also reads exit status 1
    as a refusal, as earlier gateways sent (only safe on gpuhop's own channels).

    >>> type(gateway_refusal(255, "gpuhop: denied: role dev does not allow it\\r\\n", "sg-1"))
    <class 'client.errors.PolicyDenied'>
    >>> gateway_refusal(255, "some tool failed", "sg-1") is None
    True
    """
    if status != 255 and not (older and status == 1):
        return None
    lines = [ln for ln in stderr.replace("\r", "").splitlines() if ln.startswith("gpuhop: ")]
    if not lines:
        return None
    said = lines[-1].removeprefix("gpuhop: ")
    reason = said.removeprefix("denied: ")
    if reason.startswith("unknown host"):
        return HostNotFound(f"{reason}; `gpuhop hosts` lists them")
    if said.startswith("denied: ") or status == 1:
        return PolicyDenied(said)
    if said.startswith("warning: "):
        return None
    if said.startswith("session refused"):
        return GatewayUnavailable(said)
    return HostLost(f"{host}: {said}" if host not in said else said)


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", "") or exc or type(exc).__name__)


def install_signals(runner: Runner) -> Callable[[], None]:
    """Route SIGINT/SIGTERM to ``runner.stop``; a second one exits at once. Returns undo."""
    loop = asyncio.get_running_loop()
    seen: list[int] = []

    def handler(signum: int) -> None:
        if seen:
            sys.stderr.write("gpuhop: stopping without waiting for the host\n")
            raise SystemExit(128 + signum)
        seen.append(signum)
        sys.stderr.write(f"gpuhop: {signal.Signals(signum).name}: stopping the job on the host\n")
        runner.stop(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, handler, int(sig))

    def undo() -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)

    return undo
