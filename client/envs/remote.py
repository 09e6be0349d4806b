"""``gpuhop env push`` and ``env status`` through the gateway, fanned out there.

    async def gateway() -> asyncssh.SSHClientConnection:
        return await sshconn.connect(profile, paths, settings, profile.user)

    local = DockerEngine(connect("unix:///var/run/docker.sock"), "local")
    report = await push_via_gateway(local, env_ref("base"), ["sg-1", "my-1"],
                                    connect_gateway=gateway, progress=show)

One SSH connection to the gateway (logged in as the plain user) carries the
gateway's ``gpuhop-env`` requests (``gateway/services/envpush.py``):

1. ``images HOST...``: what each host holds. Per host the push is then
   ``current`` (the name already points at our image ID), ``tagged`` (the ID
   is there under another name: ``tag``), or pending.
2. ``load REF IMAGE_ID HOST...``: *one* ``docker save`` archive, thinned
   against the layer chains every pending host already holds, goes to the
   gateway once; the gateway tees it into ``docker load`` on each host and
   checks the image ID there. So a missing layer crosses the developer's link
   once however many hosts receive it: ``PushReport.link_bytes`` counts what
   was written to the gateway channel.

A host that already has a layer another lacks receives it again from the
gateway and Docker skips it: that costs the gateway's links, not ours.
If the local save fails or the push is interrupted, the channel is dropped
without EOF: the gateway kills the hosts' loads and each keeps its previous
image. Blocking docker-py calls run in threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from client.envs.archive import ThinStats, chain_ids, thin_archive
from client.envs.build import LABEL_ENV, LABEL_FINGERPRINT, EnvImage, env_ref
from client.envs.engine import ImageEngine
from client.envs.sync import LINK, Progress, ProgressFn, PushReport, TargetResult
from client.errors import EnvError, EnvNotFound, SyncFailed
from client.sshconn import asyncssh

ENV_COMMAND = "gpuhop-env"
GatewayConnect = Callable[[], Awaitable["asyncssh.SSHClientConnection"]]
_ARCHIVE_OVERHEAD = 16 * 1024  # manifest, config and per-layer json, roughly
_PROGRESS_INTERVAL = 0.1


class _WireImage(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    tags: list[str] = Field(default_factory=list)
    layers: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)


class _WireHost(BaseModel):
    model_config = ConfigDict(frozen=True)

    status: str
    error: str = ""
    image_id: str | None = None
    bytes: int = 0
    seconds: float = 0.0
    images: list[_WireImage] = Field(default_factory=list)


class _WireReply(BaseModel):
    """What ``gpuhop-env`` prints on stdout (unknown keys are ignored: newer gateways)."""

    model_config = ConfigDict(frozen=True)

    bytes_received: int = 0
    hosts: dict[str, _WireHost]


@dataclass(frozen=True)
class RemoteImage:
    """One image on a host, as the gateway reported it."""

    image_id: str
    tags: tuple[str, ...]
    diff_ids: tuple[str, ...]
    labels: Mapping[str, str]


@dataclass(frozen=True)
class HostImages:
    """A host's images, or why the gateway could not ask (refused, unreachable, no Docker)."""

    host: str
    images: tuple[RemoteImage, ...] = ()
    error: str = ""

    def chains(self) -> frozenset[str]:
        """Every layer chain the host holds: what its ``docker load`` can skip."""
        return frozenset(c for image in self.images for c in chain_ids(image.diff_ids))

    def tagged(self, ref: str) -> RemoteImage | None:
        return next((i for i in self.images if _full(ref) in map(_full, i.tags)), None)

    def has_id(self, image_id: str) -> bool:
        return any(i.image_id == image_id for i in self.images)


def _full(ref: str) -> str:
    """``repo`` → ``repo:latest``, as Docker lists it."""
    return ref if ":" in ref.rsplit("/", 1)[-1] else f"{ref}:latest"


async def _call(conn: asyncssh.SSHClientConnection, args: Sequence[str]) -> _WireReply:
    result = await conn.run(shlex.join([ENV_COMMAND, *args]), check=False)
    return _reply(result.exit_status, _text(result.stdout), _text(result.stderr))


def _reply(status: int | None, out: str, err: str) -> _WireReply:
    """The gateway's JSON answer; one ``EnvError`` line when there is none."""
    try:
        return _WireReply.model_validate_json(out)
    except ValidationError:
        pass
    if err.strip():  # a refused or malformed request: the gateway's own line
        raise EnvError(err.strip().splitlines()[-1])
    if status is None:
        raise SyncFailed(
            "the gateway closed the connection before answering; push again to see"
            " where each host stands"
        )
    first = (out.strip().splitlines() or ["no answer"])[0]
    raise EnvError(
        f"the gateway does not offer {ENV_COMMAND} (is it older than this client?): {first}"
    )


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")


async def host_images(
    conn: asyncssh.SSHClientConnection, hosts: Sequence[str]
) -> dict[str, HostImages]:
    """Ask the gateway what each host holds (``gpuhop-env images``)."""
    reply = await _call(conn, ["images", *hosts])
    found: dict[str, HostImages] = {}
    for name in hosts:
        host = reply.hosts.get(name)
        if host is None:
            found[name] = HostImages(name, error="the gateway did not report on this host")
        elif host.status != "ok":
            found[name] = HostImages(name, error=host.error or host.status)
        else:
            images = tuple(
                RemoteImage(i.id, tuple(i.tags), tuple(i.layers), dict(i.labels))
                for i in host.images
            )
            found[name] = HostImages(name, images)
    return found


async def push_via_gateway(
    local: ImageEngine,
    ref: str,
    hosts: Sequence[str],
    *,
    connect_gateway: GatewayConnect,
    progress: ProgressFn | None = None,
    check: bool = True,
) -> PushReport:
    """Make every host hold ``ref`` with the local image ID; see the module docstring.

    With ``check`` (the default) a host that failed or was refused raises
    ``SyncFailed`` naming each, after all hosts have finished.
    """
    started = time.monotonic()
    image_id = await asyncio.to_thread(local.image_id, ref)
    if image_id is None:
        raise EnvNotFound(f"no local image {ref}: build it first")
    diff_ids = await asyncio.to_thread(local.diff_ids, ref)
    chains = frozenset(chain_ids(diff_ids))
    names = list(dict.fromkeys(hosts))
    results: dict[str, TargetResult] = {}
    link_bytes = source_bytes = 0
    conn = await connect_gateway()
    try:
        remote = await host_images(conn, names)
        to_tag: list[str] = []
        pending: dict[str, frozenset[str]] = {}
        for name in names:
            info = remote[name]
            if info.error:
                results[name] = TargetResult(name, "failed", None, error=info.error)
            elif (current := info.tagged(ref)) is not None and current.image_id == image_id:
                results[name] = TargetResult(name, "current", image_id)
            elif info.has_id(image_id):
                to_tag.append(name)
            else:
                pending[name] = info.chains() & chains
        if to_tag:
            reply = await _call(conn, ["tag", image_id, ref, *to_tag])
            results.update({n: _result(n, reply, image_id, None) for n in to_tag})
        if pending:
            common = frozenset.intersection(*pending.values())
            sizes = await asyncio.to_thread(local.layer_sizes, ref)
            total = None
            if sizes is not None:
                missing = (
                    s for s, c in zip(sizes, chain_ids(diff_ids), strict=True) if c not in common
                )
                total = _ARCHIVE_OVERHEAD + sum(missing)
            sender = _Sender(local, ref, diff_ids, common, _Meter(total, progress))
            reply = await sender.send(conn, ["load", ref, image_id, *pending])
            link_bytes, source_bytes = sender.meter.sent, sender.source_bytes
            results.update({n: _result(n, reply, image_id, sender.stats) for n in pending})
    finally:
        conn.close()
        with contextlib.suppress(Exception):
            await conn.wait_closed()
    report = PushReport(
        ref,
        image_id,
        link_bytes,
        source_bytes,
        time.monotonic() - started,
        tuple(results[n] for n in names),
    )
    if check and report.failed:
        lines = "; ".join(f"{t.target}: {t.error}" for t in report.failed)
        raise SyncFailed(f"push of {ref} failed on {len(report.failed)} host(s): {lines}")
    return report


def _result(name: str, reply: _WireReply, image_id: str, stats: ThinStats | None) -> TargetResult:
    host = reply.hosts.get(name)
    if host is None:
        return TargetResult(name, "failed", None, error="the gateway did not report on this host")
    if host.status not in ("loaded", "tagged") or host.image_id != image_id:
        error = host.error or f"ended {host.status}"
        return TargetResult(name, "failed", None, host.bytes, seconds=host.seconds, error=error)
    sent = tuple(stats.layers_sent) if stats else ()
    skipped = tuple(stats.layers_skipped) if stats else ()
    status: Literal["loaded", "tagged"] = "loaded" if host.status == "loaded" else "tagged"
    return TargetResult(name, status, image_id, host.bytes, sent, skipped, host.seconds)


class _Meter:
    """Bytes written to the gateway, reported at most every 0.1 s and once at the end."""

    def __init__(self, total: int | None, progress: ProgressFn | None) -> None:
        self.total, self._progress = total, progress
        self.sent = 0
        self._start = self._last = time.monotonic()

    def add(self, n: int) -> None:
        self.sent += n
        now = time.monotonic()
        if now - self._last >= _PROGRESS_INTERVAL:
            self._last = now
            self._report(False)

    def done(self) -> None:
        self._report(True)

    def _report(self, done: bool) -> None:
        if self._progress is not None:
            rate = self.sent / max(time.monotonic() - self._start, 1e-6)
            self._progress(Progress(LINK, self.sent, self.total, rate, done))


class _Sender:
    """Streams one thinned ``docker save`` into ``gpuhop-env load`` and reads the verdict."""

    def __init__(
        self,
        local: ImageEngine,
        ref: str,
        diff_ids: Sequence[str],
        common: frozenset[str],
        meter: _Meter,
    ) -> None:
        self.stats = ThinStats()
        self.meter = meter
        self.source_bytes = 0
        self._save = local.save(ref)
        self._chunks = thin_archive(self._counted(), diff_ids, common, self.stats)

    def _counted(self) -> Iterator[bytes]:
        for chunk in self._save:
            self.source_bytes += len(chunk)
            yield chunk

    def _next(self) -> bytes | None:
        try:
            return next(self._chunks, None)
        except ValueError as exc:  # thin_archive: the local save ended early
            raise SyncFailed(f"the local docker save is not a complete archive: {exc}") from None

    async def send(self, conn: asyncssh.SSHClientConnection, args: Sequence[str]) -> _WireReply:
        proc = await conn.create_process(shlex.join([ENV_COMMAND, *args]), encoding=None)
        ahead: asyncio.Future[bytes | None] = asyncio.ensure_future(asyncio.to_thread(self._next))
        try:
            while (chunk := await ahead) is not None:
                ahead = asyncio.ensure_future(asyncio.to_thread(self._next))  # read while sending
                try:
                    proc.stdin.write(chunk)
                    await proc.stdin.drain()
                except (BrokenPipeError, ConnectionError, asyncssh.Error):
                    break  # the gateway ended early: every host failed; its answer says why
                self.meter.add(len(chunk))
            else:
                proc.stdin.write_eof()
            self.meter.done()
            out, err = await proc.stdout.read(), await proc.stderr.read()
            await proc.wait_closed()
        except BaseException:
            proc.channel.abort()  # no EOF: the gateway kills the hosts' loads
            raise
        finally:
            if not ahead.done():
                with contextlib.suppress(BaseException):
                    await ahead
            await asyncio.to_thread(self._close)
        return _reply(proc.exit_status, _text(out), _text(err))

    def _close(self) -> None:
        for stream in (self._chunks, self._save):  # generators: close the docker response
            close = getattr(stream, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()


# -- status --------------------------------------------------------------------------

State = Literal["current", "drift", "missing", "remote-only", "error"]


@dataclass(frozen=True)
class EnvState:
    """One environment on one host, compared with the local build by fingerprint."""

    host: str
    name: str
    state: State
    local_fingerprint: str = ""
    remote_fingerprint: str = ""
    image_id: str = ""
    detail: str = ""


def compare_envs(local: Sequence[EnvImage], remote: Mapping[str, HostImages]) -> list[EnvState]:
    """Per host and environment: current, drift (other fingerprint), missing, or remote-only."""
    mine = {e.name: e for e in local if e.current}
    rows: list[EnvState] = []
    for host, info in remote.items():
        if info.error:
            rows.append(EnvState(host, "*", "error", detail=info.error))
            continue
        theirs: dict[str, RemoteImage] = {}
        for image in info.images:
            name = image.labels.get(LABEL_ENV)
            if name and _full(env_ref(name)) in map(_full, image.tags):
                theirs[name] = image
        for name in sorted(set(mine) | set(theirs)):
            have, there = mine.get(name), theirs.get(name)
            fp_local = have.fingerprint if have else ""
            fp_remote = there.labels.get(LABEL_FINGERPRINT, "") if there else ""
            state: State
            if there is None:
                state = "missing"
            elif have is None:
                state = "remote-only"
            else:
                state = "current" if fp_remote == fp_local else "drift"
            image_id = there.image_id if there else ""
            rows.append(EnvState(host, name, state, fp_local, fp_remote, image_id))
    return rows


async def env_status(
    hosts: Sequence[str], local: Sequence[EnvImage], *, connect_gateway: GatewayConnect
) -> list[EnvState]:
    """``gpuhop env status``: every host's environments against the local ones."""
    conn = await connect_gateway()
    try:
        remote = await host_images(conn, list(dict.fromkeys(hosts)))
    finally:
        conn.close()
        with contextlib.suppress(Exception):
            await conn.wait_closed()
    return compare_envs(local, remote)
