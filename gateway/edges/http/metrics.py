"""Prometheus metrics for one gateway process, served at ``GET /metrics`` by the API.

Nothing here runs per relayed chunk: relayed bytes are added once per session
end, from the ``session.end`` audit data (``bytes_up``/``bytes_down``); active
sessions and host probe numbers are read at scrape time from the live
registry and ``LiveState``. The gateway wires it in one place, by wrapping
its audit store::

    metrics = GatewayMetrics()
    audit = InstrumentedAuditStore(open_store(url), metrics)
    metrics.register_collectors(live_sessions, live_state)

Every gateway has its own ``CollectorRegistry`` (never the global one), so
several gateways can run in one process (tests) without clashing. Label values
are bounded: modes, directions, reason classes, API route templates and
status codes, inventory host names.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Final, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from gateway import __version__
from gateway.domain.models import Mode

if TYPE_CHECKING:
    from gateway.domain.audit.chain import AuditEvent, VerifyResult
    from gateway.ports import AuditStore
    from gateway.services.live import LiveState

MODES: Final = tuple(m.value for m in Mode)
FORWARD: Final = "forward"  # port forwards inside recorded sessions (``forward.close``)
# Audit appends commit to disk (SQLite FULL sync, PostgreSQL synchronous_commit):
# milliseconds normally, seconds while a database restarts.
AUDIT_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
API_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
API_REASONS: Final = frozenset(
    {"token_missing", "token_unknown", "token_expired", "token_revoked", "user_unknown"}
)
# SSH auth failure texts (gateway/edges/ssh/front.py) -> a small set of classes, most specific
# first:
# (class, text the reason starts with, or contains when it starts with a space).
_SSH_REASONS: Final = (
    ("certificate", "certificate "),
    ("key_not_registered", " is not registered to "),
    ("unknown_user", "unknown user"),
    ("no_credentials", "no acceptable key or certificate"),
)


class HasMode(Protocol):
    """A live session as the registry holds it (``ActiveSession``); only its mode is read."""

    @property
    def mode(self) -> Mode: ...


def reason_class(reasons: Iterable[str]) -> str:
    """The class of an SSH login failure, from the reasons noted for each key tried.

    >>> reason_class(["unknown user 'mallory'"])
    'unknown_user'
    >>> reason_class(["key SHA256:x is not registered to carol", "certificate rejected: expired"])
    'certificate'
    >>> reason_class([])
    'no_credentials'
    """
    texts = [r.lower() for r in reasons]
    if not texts:
        return "no_credentials"
    for name, needle in _SSH_REASONS:
        if any(needle in t if needle[0] == " " else t.startswith(needle) for t in texts):
            return name
    return "other"


def _mode(value: object) -> str:
    text = str(value)
    return text if text in MODES else "other"


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


class GatewayMetrics:
    """The gateway's metrics on a registry of its own; ``render()`` is the scrape body."""

    def __init__(self, *, process: bool = True) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.sessions_started = Counter(
            "gpuhop_sessions_started",
            "Sessions started (audited session.start).",
            ["mode"],
            registry=r,
        )
        self.sessions_ended = Counter(
            "gpuhop_sessions_ended", "Sessions ended (audited session.end).", ["mode"], registry=r
        )
        self.relayed_bytes = Counter(
            "gpuhop_relayed_bytes",
            "Bytes relayed, added when a session or forward ends; up = user to host.",
            ["direction", "mode"],
            registry=r,
        )
        self.auth_failures = Counter(
            "gpuhop_auth_failures",
            "Failed logins (ssh) and API authentications (api), by reason class.",
            ["channel", "reason"],
            registry=r,
        )
        self.auth_bans = Counter(
            "gpuhop_auth_bans",
            "Sources banned for too many failed authentications.",
            ["channel"],
            registry=r,
        )
        self.audit_write_seconds = Histogram(
            "gpuhop_audit_write_duration_seconds",
            "Time for an audit append to be durably committed (or to fail).",
            buckets=AUDIT_BUCKETS,
            registry=r,
        )
        self.audit_write_failures = Counter(
            "gpuhop_audit_write_failures",
            "Audit appends that failed or were cancelled.",
            registry=r,
        )
        self.api_seconds = Histogram(
            "gpuhop_api_request_duration_seconds",
            "HTTP API request latency, by route template and status code.",
            ["method", "route", "status"],
            buckets=API_BUCKETS,
            registry=r,
        )
        Gauge("gpuhop_build_info", "Version of this gateway.", ["version"], registry=r).labels(
            __version__
        ).set(1)
        for mode in MODES:  # series exist from the start, so rate() sees the first session
            self.sessions_started.labels(mode)
            self.sessions_ended.labels(mode)
            for direction in ("up", "down"):
                self.relayed_bytes.labels(direction, mode)
        if process:
            ProcessCollector(registry=r)
        self._live: _LiveCollector | None = None

    # -- what the gateway reports --

    def session_started(self, mode: str) -> None:
        self.sessions_started.labels(_mode(mode)).inc()

    def session_ended(self, mode: str, bytes_up: int, bytes_down: int) -> None:
        label = mode if mode == FORWARD else _mode(mode)
        if label != FORWARD:
            self.sessions_ended.labels(label).inc()
        if bytes_up > 0:
            self.relayed_bytes.labels("up", label).inc(bytes_up)
        if bytes_down > 0:
            self.relayed_bytes.labels("down", label).inc(bytes_down)

    def auth_failed(self, reason: str, channel: str = "ssh") -> None:
        """Count one failure; ``reason`` is a class (``reason_class``) or an API error code."""
        if channel == "api":
            reason = reason if reason in API_REASONS else "other"
        self.auth_failures.labels(channel, reason).inc()

    def auth_banned(self, channel: str = "ssh") -> None:
        self.auth_bans.labels(channel).inc()

    def audit_write(self, seconds: float, ok: bool = True) -> None:
        self.audit_write_seconds.observe(seconds)
        if not ok:
            self.audit_write_failures.inc()

    def api_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.api_seconds.labels(method, route, str(status)).observe(seconds)

    def observe_event(self, kind: str, data: Mapping[str, object]) -> None:
        """Count what an audit event says (before it is committed), by kind."""
        if kind == "session.end":
            self.session_ended(
                str(data.get("mode")), _count(data.get("bytes_up")), _count(data.get("bytes_down"))
            )
        elif kind == "forward.close":
            self.session_ended(
                FORWARD, _count(data.get("bytes_up")), _count(data.get("bytes_down"))
            )
        elif kind == "auth.fail":
            reasons = data.get("reasons")
            texts = [str(x) for x in reasons] if isinstance(reasons, list | tuple) else []
            self.auth_failed(reason_class(texts), "ssh")
        elif kind == "api.auth_fail":
            self.auth_failed(str(data.get("reason")), "api")
        elif kind in ("auth.ratelimited", "api.ratelimited"):
            self.auth_banned("api" if kind.startswith("api.") else "ssh")

    # -- scrape-time state --

    def register_collectors(
        self, live_sessions: Callable[[], Iterable[HasMode]], live_state: LiveState | None
    ) -> None:
        """Read active sessions and host probes at scrape time (a second call replaces them).

        Both are read on the event loop thread (the ``/metrics`` route is async),
        the only thread that changes them.
        """
        if self._live is not None:
            self.registry.unregister(self._live)
        self._live = _LiveCollector(live_sessions, live_state)
        self.registry.register(self._live)

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The scrape body and its content type, in the format the ``Accept`` header asks for.

        Prometheus text format 0.0.4 unless the scraper asks for OpenMetrics or a
        newer text version.
        """
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


class _LiveCollector(Collector):
    def __init__(
        self, live_sessions: Callable[[], Iterable[HasMode]], live_state: LiveState | None
    ) -> None:
        self._sessions = live_sessions
        self._live = live_state

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return self._families()

    def collect(self) -> Iterable[GaugeMetricFamily]:
        families = self._families()
        active, up, median, p95 = families
        counts = dict.fromkeys(MODES, 0)
        for session in self._sessions():
            counts[_mode(session.mode)] = counts.get(_mode(session.mode), 0) + 1
        for mode, n in counts.items():
            active.add_metric([mode], n)
        for host, region, state, med_ms, p95_ms in self._hosts():
            if state != "unknown":
                up.add_metric([host, region], 1.0 if state == "up" else 0.0)
            if med_ms is not None:
                median.add_metric([host, region], med_ms / 1000)
            if p95_ms is not None:
                p95.add_metric([host, region], p95_ms / 1000)
        return families

    def _hosts(self) -> Iterator[tuple[str, str, str, float | None, float | None]]:
        live = self._live
        if live is None:
            return
        for host in live.inventory.hosts:
            st = live.status(host.name)
            if st is not None:
                yield host.name, host.region, st.state, st.latency.median_ms, st.latency.p95_ms

    @staticmethod
    def _families() -> builtins.list[GaugeMetricFamily]:
        hosts = ["host", "region"]
        return [
            GaugeMetricFamily("gpuhop_sessions_active", "Sessions live now.", labels=["mode"]),
            GaugeMetricFamily(
                "gpuhop_host_up", "1 if the host answers probes, 0 if down.", labels=hosts
            ),
            GaugeMetricFamily(
                "gpuhop_host_rtt_median_seconds", "Median SSH probe round trip.", labels=hosts
            ),
            GaugeMetricFamily(
                "gpuhop_host_rtt_p95_seconds", "95th percentile probe round trip.", labels=hosts
            ),
        ]


class _AuditStoreCollector(Collector):
    """What a buffering store (PostgreSQL) says about itself: queued events, reachability."""

    def __init__(self, store: object) -> None:
        self._store = store

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        pending = getattr(self._store, "pending", None)
        available = getattr(self._store, "available", None)
        outages = getattr(self._store, "outages", None)
        if isinstance(pending, int):
            yield GaugeMetricFamily(
                "gpuhop_audit_pending_events",
                "Audit events accepted, not yet committed (buffered while the database is down).",
                value=pending,
            )
        if isinstance(available, bool):
            yield GaugeMetricFamily(
                "gpuhop_audit_database_up",
                "1 while the audit writer reaches its database, 0 while it buffers and retries.",
                value=1.0 if available else 0.0,
            )
        if isinstance(outages, int):
            yield CounterMetricFamily(
                "gpuhop_audit_database_outages",
                "Times the audit writer lost its database and started buffering.",
                value=outages,
            )


class InstrumentedAuditStore:
    """An ``AuditStore`` that times appends and counts sessions, bytes and auth failures.

    The gateway audits every event the metrics care about, so wrapping the store
    is the one place to observe them. ``session.start`` counts once committed
    (a session whose start cannot be audited is refused); the other kinds count
    when appended, since the thing they report has already happened.
    """

    def __init__(self, store: AuditStore, metrics: GatewayMetrics) -> None:
        self.store = store
        self.metrics = metrics
        metrics.registry.register(_AuditStoreCollector(store))

    async def append(self, kind: str, actor: str, data: Mapping[str, object]) -> AuditEvent:
        metrics = self.metrics
        if kind != "session.start":
            metrics.observe_event(kind, data)
        started = time.perf_counter()
        ok = False
        try:
            event = await self.store.append(kind, actor, data)
            ok = True
        finally:
            metrics.audit_write(time.perf_counter() - started, ok)
        if kind == "session.start":
            metrics.session_started(str(data.get("mode")))
        return event

    async def list(
        self,
        *,
        kind: str | None = None,
        actor: str | None = None,
        after_id: int = 0,
        limit: int = 100,
    ) -> builtins.list[AuditEvent]:
        return await self.store.list(kind=kind, actor=actor, after_id=after_id, limit=limit)

    async def verify(self) -> VerifyResult:
        return await self.store.verify()

    async def close(self) -> None:
        await self.store.close()
