"""Push an image to one or more engines, sending only the layers each one lacks.

    source = DockerEngine(connect("unix:///var/run/docker.sock"), "local")
    hosts = [DockerEngine(connect(url), name) for name, url in targets]
    report = push(source, "gpuhop-env/base:latest", hosts, progress=print)

For each target: if it already has the image under that name, nothing moves;
if it has the image ID under another name, it is tagged; otherwise the engine
asks it which layer chains it holds, streams ``docker save`` through
``thin_archive`` (dropping every ``layer.tar`` the target has) into the
target's ``docker load``, and finally checks that the target's image ID for the
name equals the local one.

Several targets: the archive is thinned against what *all* of them hold, read
from the source once, and teed to every target (``tee``); each branch is
thinned again against its own target. In the gateway design the client sends
that one archive over its link and the gateway runs the tee, so each missing
layer crosses the developer's link once however many regions receive it.

Atomicity: ``docker load`` reads the whole archive before it registers
anything and moves the tag last, so a push cut off at any byte leaves the
target with its previous image; the next push asks again and completes.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from client.envs.archive import ThinStats, chain_ids, thin_archive
from client.envs.engine import ImageEngine
from client.errors import EnvError, EnvNotFound, SyncFailed

LINK = "link"  # the progress name of the client's own uplink in a fan-out
STALL_TIMEOUT = 600.0  # a target that reads nothing for this long is given up
_ARCHIVE_OVERHEAD = 16 * 1024  # manifest, config and per-layer json, roughly


@dataclass(frozen=True)
class Progress:
    """One progress report: ``sent`` bytes of about ``total`` to ``target`` at ``rate`` B/s."""

    target: str
    sent: int
    total: int | None
    rate: float
    done: bool = False


ProgressFn = Callable[[Progress], None]
Status = Literal["current", "tagged", "loaded", "failed"]


@dataclass(frozen=True)
class TargetResult:
    """What one target received and how it ended."""

    target: str
    status: Status
    image_id: str | None
    bytes_sent: int = 0
    layers_sent: tuple[str, ...] = ()
    layers_skipped: tuple[str, ...] = ()
    seconds: float = 0.0
    error: str | None = None


@dataclass(frozen=True)
class PushReport:
    """A push's outcome; ``link_bytes`` is what left the client, once, for all targets."""

    ref: str
    image_id: str
    link_bytes: int
    source_bytes: int
    seconds: float
    targets: tuple[TargetResult, ...] = field(default_factory=tuple)

    @property
    def failed(self) -> tuple[TargetResult, ...]:
        return tuple(t for t in self.targets if t.status == "failed")


class _Meter:
    """Counts the bytes of a stream and reports progress at most every ``interval`` s."""

    def __init__(
        self,
        chunks: Iterable[bytes],
        target: str,
        total: int | None,
        progress: ProgressFn | None,
        interval: float = 0.1,
    ) -> None:
        self._chunks, self.target, self.total = chunks, target, total
        self._progress, self._interval = progress, interval
        self.sent = 0
        self._start = self._last = 0.0

    def _report(self, done: bool) -> None:
        if self._progress is not None:
            elapsed = max(time.monotonic() - self._start, 1e-6)
            self._progress(Progress(self.target, self.sent, self.total, self.sent / elapsed, done))

    def __iter__(self) -> Iterator[bytes]:
        self._start = self._last = time.monotonic()
        for chunk in self._chunks:
            yield chunk
            self.sent += len(chunk)
            now = time.monotonic()
            if now - self._last >= self._interval:
                self._last = now
                self._report(False)
        self._report(True)


class _Aborted(Exception):
    """Fed to a branch when the source failed, so its load is abandoned, not completed."""


_END = object()


def tee(
    chunks: Iterable[bytes],
    consumers: Sequence[Callable[[Iterator[bytes]], None]],
    depth: int = 16,
) -> list[BaseException | None]:
    """Read ``chunks`` once and hand every chunk to each consumer (one thread each).

    A consumer that fails stops receiving; the others go on. If the source
    fails, every branch sees an exception instead of the end of its stream, so
    no target mistakes a partial archive for a whole one; the source's
    exception is then re-raised. Returns each consumer's exception or None.
    """
    n = len(consumers)
    queues: list[queue.Queue[object]] = [queue.Queue(maxsize=depth) for _ in range(n)]
    errors: list[BaseException | None] = [None] * n
    finished = [threading.Event() for _ in range(n)]
    stalled: set[int] = set()

    def feed(q: queue.Queue[object]) -> Iterator[bytes]:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, bytes)
            yield item

    def run(i: int) -> None:
        try:
            consumers[i](feed(queues[i]))
        except BaseException as e:
            errors[i] = e
        finally:
            finished[i].set()

    def put(i: int, item: object) -> None:
        deadline = time.monotonic() + STALL_TIMEOUT
        while not finished[i].is_set():
            try:
                queues[i].put(item, timeout=0.2)
                return
            except queue.Full:
                if time.monotonic() > deadline:
                    errors[i] = SyncFailed(f"stalled: nothing read for {STALL_TIMEOUT:.0f} s")
                    stalled.add(i)
                    finished[i].set()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    source_error: BaseException | None = None
    try:
        for chunk in chunks:
            live = [i for i in range(n) if not finished[i].is_set()]
            if not live:
                break
            for i in live:
                put(i, chunk)
    except BaseException as e:
        source_error = e
    final: object = _END if source_error is None else _Aborted(str(source_error))
    for i in range(n):
        put(i, final)
    for i, t in enumerate(threads):
        t.join(timeout=1.0 if i in stalled else None)  # a stalled branch is abandoned
    if source_error is not None:
        raise source_error
    return errors


def _estimate(sizes: tuple[int, ...] | None, chains: Sequence[str], have: frozenset[str]) -> int:
    if sizes is None:
        return 0
    return _ARCHIVE_OVERHEAD + sum(s for s, c in zip(sizes, chains, strict=True) if c not in have)


def _message(e: BaseException) -> str:
    return str(e) if isinstance(e, EnvError) else f"{type(e).__name__}: {e}"


def push(
    source: ImageEngine,
    ref: str,
    targets: Sequence[ImageEngine],
    *,
    progress: ProgressFn | None = None,
    refilter: bool = True,
    check: bool = True,
) -> PushReport:
    """Make every target hold ``ref`` with the source's image ID; see the module docstring.

    ``refilter`` thins each fan-out branch against its own target (what the
    gateway does per host). With ``check`` (the default) any failed target
    raises ``SyncFailed`` naming each failure, after all targets have finished.
    """
    started = time.monotonic()
    image_id = source.image_id(ref)
    if image_id is None:
        raise EnvNotFound(f"no local image {ref}: build it first")
    diff_ids = source.diff_ids(ref)
    chains = chain_ids(diff_ids)
    results: dict[str, TargetResult] = {}
    pending: list[tuple[ImageEngine, frozenset[str]]] = []
    for target in targets:
        try:
            if target.image_id(ref) == image_id:
                results[target.name] = TargetResult(target.name, "current", image_id)
            elif target.image_id(image_id) == image_id:
                target.tag(image_id, ref)
                results[target.name] = TargetResult(target.name, "tagged", image_id)
            else:
                pending.append((target, target.present_chains() & frozenset(chains)))
        except EnvError as e:
            results[target.name] = TargetResult(target.name, "failed", None, error=str(e))
    link_bytes = source_bytes = 0
    if pending:
        common = frozenset.intersection(*(have for _, have in pending))
        sizes = source.layer_sizes(ref)
        source_meter = _Meter(source.save(ref), "source", None, None)
        union = ThinStats()
        link = _Meter(
            thin_archive(source_meter, diff_ids, common, union),
            LINK,
            _estimate(sizes, chains, common) or None,
            progress if len(pending) > 1 else None,
        )
        branches = [
            _Branch(target, have, diff_ids, refilter and len(pending) > 1, progress)
            for target, have in pending
        ]
        for branch in branches:
            branch.total = _estimate(sizes, chains, branch.have) or None
            if not branch.refilter:
                branch.stats = union
        if len(branches) == 1:
            errors: list[BaseException | None] = [None]
            try:
                branches[0](iter(link))
            except Exception as e:
                errors[0] = e
        else:
            errors = tee(link, branches)
        link_bytes, source_bytes = link.sent, source_meter.sent
        for branch, error in zip(branches, errors, strict=True):
            results[branch.target.name] = branch.result(image_id, ref, error, started)
    report = PushReport(
        ref,
        image_id,
        link_bytes,
        source_bytes,
        time.monotonic() - started,
        tuple(results[t.name] for t in targets),
    )
    if check and report.failed:
        lines = "; ".join(f"{t.target}: {t.error}" for t in report.failed)
        raise SyncFailed(f"push of {ref} failed on {len(report.failed)} host(s): {lines}")
    return report


class _Branch:
    """One target's side of a push: (re)thin, meter, load, verify."""

    def __init__(
        self,
        target: ImageEngine,
        have: frozenset[str],
        diff_ids: Sequence[str],
        refilter: bool,
        progress: ProgressFn | None,
    ) -> None:
        self.target, self.have, self.diff_ids = target, have, diff_ids
        self.refilter, self.progress = refilter, progress
        self.total: int | None = None
        self.stats = ThinStats()
        self.sent = 0

    def __call__(self, chunks: Iterator[bytes]) -> None:
        stream: Iterable[bytes] = chunks
        if self.refilter:
            stream = thin_archive(chunks, self.diff_ids, self.have, self.stats)
        meter = _Meter(stream, self.target.name, self.total, self.progress)
        try:
            self.target.load(meter)
        finally:
            self.sent = meter.sent

    def result(
        self, image_id: str, ref: str, error: BaseException | None, started: float
    ) -> TargetResult:
        name = self.target.name
        seconds = time.monotonic() - started
        sent, skipped = tuple(self.stats.layers_sent), tuple(self.stats.layers_skipped)
        if error is None:
            try:
                found = self.target.image_id(ref)
            except EnvError as e:
                error, found = e, None
            else:
                if found != image_id:
                    error = SyncFailed(f"{name} has {found} as {ref} after loading, not {image_id}")
        if error is not None:
            return TargetResult(
                name, "failed", None, self.sent, sent, skipped, seconds, _message(error)
            )
        return TargetResult(name, "loaded", image_id, self.sent, sent, skipped, seconds)
