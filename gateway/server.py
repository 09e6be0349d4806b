"""The gateway process: startup → serve → shutdown, like uvicorn.

``Gateway`` owns one SSH listener and the services behind it. Signals are
handled in one place (:func:`run`). With ``workers > 1`` a small supervisor
binds the listening socket once and starts N worker processes that accept on
it; they all append to the same audit chain (the store serialises appends
across processes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import ChainMap
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import asyncssh
import structlog

from gateway import __version__
from gateway.adapters.asciicast.recording import Limits as RecordingLimits
from gateway.adapters.audit.anchor import signer_for
from gateway.adapters.audit.store import open_store
from gateway.adapters.hosts.algorithms import connection_algorithms
from gateway.adapters.hosts.probes import ProbeCredentials
from gateway.adapters.hosts.upstream import UpstreamPool
from gateway.adapters.keys import (
    KeyRing,
    UserCA,
    ensure_private_key,
    gateway_host_keys,
    previous_keys,
)
from gateway.adapters.sshcompat import offer_host_keys
from gateway.adapters.storage import SessionStore, Storage, open_storage
from gateway.config.loader import Settings
from gateway.config.process import GatewaySettings
from gateway.domain.audit.coalesce import AuditCoalescer
from gateway.domain.inventory.catalog import load_catalog
from gateway.domain.inventory.leases import LeaseStore
from gateway.domain.metering.meter import Rate, rate_for
from gateway.domain.policy.passthrough import host_principal
from gateway.domain.policy.rules import default_account
from gateway.domain.ratelimit import FailureLimiter
from gateway.edges.http import ApiContext, session_controls, start_api
from gateway.edges.http.metrics import GatewayMetrics, InstrumentedAuditStore
from gateway.edges.http.readiness import Readiness
from gateway.edges.http.server import ApiServer, bind_api_socket
from gateway.edges.ssh.front import FrontConnection, FrontServer
from gateway.errors import GatewayError
from gateway.ports import AuditStore, append_within
from gateway.replication import ReplicaDuties
from gateway.services.directory import DirectoryService, stop_task
from gateway.services.directoryview import DirectoryView
from gateway.services.envstage import StagePolicy
from gateway.services.golden import GoldenLimits, GoldenRunner
from gateway.services.krlpush import KrlPublisher
from gateway.services.live import LiveState
from gateway.services.reconcile import (
    node_name,
    of_node,
    reconcile_at_start,
    reconcile_before_workers,
)
from gateway.services.runtime import Runtime, RuntimeRef
from gateway.services.sessions.authority import enforce
from gateway.services.sessions.context import ActiveSession, FrontContext
from gateway.services.sessions.limits import StartupLimiter

log = structlog.get_logger("gpuhop.server")


class Gateway:
    """One gateway worker: the SSH front, its audit store and live sessions.

    :meth:`startup` is the composition root: each builder below makes one thing
    once and registers its cleanup on one ``AsyncExitStack``, so a start-up that
    fails at any step closes what it had opened, in reverse, and
    :meth:`shutdown` is that same unwinding.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        sock: socket.socket | None = None,
        api_sock: socket.socket | None = None,
    ) -> None:
        self.settings = settings
        self._sock = sock
        self._api_sock = api_sock
        self.metrics = GatewayMetrics()
        self.port = 0
        self.api_port = 0
        self._stack = contextlib.AsyncExitStack()
        self._drain_s = settings.gateway.drain_timeout_s
        self._started = False
        self.runtime: RuntimeRef | None = None  # set once the directory is loaded
        # Built by startup(), each once:
        self.audit: AuditStore
        self.storage: Storage
        self.directory: DirectoryService
        self.ctx: FrontContext
        self.pool: UpstreamPool
        self.live: LiveState
        self.api: ApiServer
        self.krl: KrlPublisher | None = None  # only with ``krl_command``
        self._duties: asyncio.Task[None] | None = None  # this replica's heartbeat and sweeps
        self.readiness = Readiness(lambda: self.storage.ping())
        # Unwound after the drain, so GET /v1/ready answers "draining" meanwhile.
        self._after_drain = contextlib.AsyncExitStack()
        self._front_options: asyncssh.SSHServerConnectionOptions

    async def startup(self) -> None:
        async with contextlib.AsyncExitStack() as stack:
            await self._start(stack)
            self._stack = stack.pop_all()

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        g = self.settings.gateway
        self.audit = await self._open_audit(stack)
        keys = await asyncio.to_thread(load_key_ring, self.settings)
        # After the audit store: both may share one SQLite file.
        self.storage = await self._open_storage(stack)
        self.directory = DirectoryService(
            self.settings,
            self.storage.directory,
            self.audit,
            audit_timeout_s=g.audit_start_timeout_s,
            on_change=self._swap_directory,
        )
        self.runtime = runtime = RuntimeRef(Runtime(await self.directory.load(), keys))
        self.live = await asyncio.to_thread(
            build_live_state, self.settings, runtime, self.storage.leases
        )
        self.live.session_store = self.storage.sessions
        self.live.live_costs = self.storage.live_costs
        stack.push_async_callback(self.live.settle)
        self.ctx = await self._front_context(stack, runtime)
        runtime.on_change(self._apply_change)  # before anything can connect or call
        if self._sock is None:  # supervised workers: their supervisor did it, once
            await self._reconcile(runtime)
        await self._listen(stack, runtime)
        kill = await self._start_api(stack, runtime)
        await self.live.start()
        stack.push_async_callback(self.live.stop)
        await self._start_duties(kill)
        if g.krl_command:
            self.krl = self._start_krl(stack, runtime)
        watch = asyncio.get_running_loop().create_task(self.directory.watch())
        stack.push_async_callback(stop_task, watch)
        await self.audit.append(
            "gateway.start",
            "gateway",
            {"pid": os.getpid(), "port": self.port, "version": __version__},
        )
        self._started = True
        log.info(
            "gateway listening", ssh=f"{g.ssh_host}:{self.port}", api=self.api.url, pid=os.getpid()
        )

    async def _open_audit(self, stack: contextlib.AsyncExitStack) -> AuditStore:
        g = self.settings.gateway
        audit = InstrumentedAuditStore(
            open_store(g.storage_url.get_secret_value(), signer_for(g)), self.metrics
        )
        stack.push_async_callback(audit.close)
        stack.push_async_callback(self._audit_stop, audit)
        return audit

    async def _audit_stop(self, audit: AuditStore) -> None:
        if self._started:
            with contextlib.suppress(Exception):
                await append_within(audit, "gateway.stop", "gateway", {"pid": os.getpid()}, 5)

    async def _open_storage(self, stack: contextlib.AsyncExitStack) -> Storage:
        g = self.settings.gateway
        storage = await open_storage(
            g.storage_url.get_secret_value(),
            node=node_name(g),
            replica_timeout_s=g.replica_timeout_s,
        )
        stack.push_async_callback(storage.close)
        await storage.replicas.heartbeat()  # before any lease: they count while it beats
        stack.push_async_callback(self._retire, storage)
        # The replica's duties start later (they kill through the front) but stop
        # late: its leases and sessions count while it beats, drain included.
        stack.push_async_callback(lambda: stop_task(self._duties))
        return storage

    async def _retire(self, storage: Storage) -> None:
        with contextlib.suppress(GatewayError):
            await storage.replicas.retire()  # its sessions and leases are done

    async def _front_context(
        self, stack: contextlib.AsyncExitStack, runtime: RuntimeRef
    ) -> FrontContext:
        g = self.settings.gateway
        self.pool = build_pool(g, runtime)
        ctx = build_front_context(
            self.settings, runtime, self.audit, self.pool, self.storage.sessions, self.live
        )
        stack.push_async_callback(ctx.flush)
        stack.push_async_callback(self.pool.close)
        ctx.inner_options = await inner_options(g)
        return ctx

    async def _reconcile(self, runtime: RuntimeRef) -> None:
        g, live = self.settings.gateway, self.live

        def rate_of(name: str) -> Rate | None:
            host = runtime.current.inventory.host(name)
            return live.rate(host) if host is not None else None

        await reconcile_at_start(
            self.storage,
            self.audit,
            rate_of=rate_of,
            recordings_dir=g.recordings_dir,
            owned=of_node(node_name(g)),
            audit_timeout_s=g.audit_start_timeout_s,
        )

    async def _listen(self, stack: contextlib.AsyncExitStack, runtime: RuntimeRef) -> None:
        g, ctx = self.settings.gateway, self.ctx
        options = await front_options(g, ctx, runtime.current.keys.host_keys)
        self._front_options = options
        loop = asyncio.get_running_loop()

        def factory() -> FrontConnection:
            conn = FrontConnection.for_listener(options)
            conn.ctx = ctx  # counts it among unauthenticated connections until it logs in
            return conn

        if self._sock is not None:
            server = await loop.create_server(factory, sock=self._sock, backlog=1024)
        else:
            server = await loop.create_server(
                factory, g.ssh_host, g.ssh_port, backlog=1024, reuse_address=True
            )
        stack.push_async_callback(self._after_drain.aclose)
        stack.push_async_callback(self._drain)
        stack.callback(server.close)
        self.port = server.sockets[0].getsockname()[1]

    async def _start_api(
        self, stack: contextlib.AsyncExitStack, runtime: RuntimeRef
    ) -> Callable[[str], bool]:
        """The HTTP API; returns its ``kill_session`` (sessions and recorded jumps)."""
        g, ctx = self.settings.gateway, self.ctx
        # The kill API reaches sessions and recorded jumps; metrics count sessions.
        kill, live_sessions = session_controls(
            ChainMap[str, ActiveSession](ctx.sessions, ctx.jumps)
        )
        self.metrics.register_collectors(session_controls(ctx.sessions)[1], self.live)
        api_ctx = ApiContext(
            settings=self.settings,
            runtime=runtime,
            audit=self.audit,
            tokens=self.storage.tokens,
            sessions=self.storage.sessions,
            kill_session=kill,
            live_sessions=live_sessions,
            readiness=self.readiness,
            kills=self.storage.kills,
            ssh_port=self.port,
            live=self.live,
            golden=GoldenRunner(
                ctx,
                self.live,
                self._audit_within,
                default_account,
                g.golden_command,
                GoldenLimits(g.golden_max_running, g.golden_max_s),
            ),
            metrics=self.metrics,
            metrics_token_required=g.metrics_require_token,
            directory=self.directory,
        )
        self.api = await start_api(api_ctx, g.api_host, g.api_port, sock=self._api_sock)
        self._after_drain.push_async_callback(self.api.stop)
        self.api_port = self.api.port
        return kill

    async def _start_duties(self, kill: Callable[[str], bool]) -> None:
        live = self.live
        duties = ReplicaDuties(
            self.storage,
            self.audit,
            rate_of=lambda name: live.rate(h) if (h := live.inventory.host(name)) else None,
            kill=kill,
            audit_timeout_s=self.settings.gateway.audit_start_timeout_s,
        )
        await duties.close_lost()
        self._duties = asyncio.get_running_loop().create_task(duties.run())

    def _start_krl(self, stack: contextlib.AsyncExitStack, runtime: RuntimeRef) -> KrlPublisher:
        g = self.settings.gateway
        krl = KrlPublisher(
            self.audit,
            self.pool,
            runtime,
            account=g.probe_account,
            command=g.krl_command,
            interval_s=g.krl_push_interval_s,
        )
        krl.start()
        stack.push_async_callback(krl.stop)
        return krl

    def _swap_directory(self, view: DirectoryView) -> None:
        """A changed directory becomes the current runtime (the first load is the start's)."""
        if self.runtime is not None:
            self.runtime.replace(self.runtime.current.with_view(view))

    def _apply_change(self, old: Runtime, new: Runtime) -> None:
        """New logins, channels, API calls and probes read ``new`` already; live
        connections, jumps and sessions it no longer allows are closed now
        (:func:`gateway.services.sessions.authority.enforce`), wherever the swap runs."""
        if new.view is old.view:
            return
        enforce(self.ctx)
        self.live.update(new.inventory, new.view.dataset_list(), new.view.budget_limits())
        log.info(
            "directory loaded",
            version=new.view.version,
            users=len(new.inventory.users),
            hosts=len(new.inventory.hosts),
        )

    async def _audit_within(self, kind: str, actor: str, data: dict[str, object]) -> None:
        await append_within(self.audit, kind, actor, data, 5.0)

    def reload_keys(self) -> None:
        """SIGHUP: pick up a rotated user CA, host CA and gateway host key for new
        logins and sessions.

        Live sessions are untouched (a connection keeps the host key its key
        exchange used); certificates from a rotated-out user CA stay valid until
        they expire (see :func:`gateway.adapters.keys.previous_keys`).
        """
        runtime = self.runtime
        if runtime is None:
            return
        try:
            keys = reload_key_ring(self.settings, runtime.current.keys)
        except (GatewayError, ValueError) as exc:
            log.error("key reload failed; keeping the old keys", error=str(exc))
            return
        offer_host_keys(self._front_options, keys.host_keys)
        runtime.replace(runtime.current.with_keys(keys))
        log.info("keys reloaded", user_cas=len(keys.user_ca.trusted_lines()))
        self.ctx.audit_soon(
            "gateway.keys_reloaded",
            "gateway",
            {
                "pid": os.getpid(),
                "user_ca": keys.user_ca.public_line,
                "host_ca": keys.host_ca_line,
                "host_keys": list(keys.host_key_lines),
            },
        )

    async def shutdown(self, drain_s: float | None = None) -> None:
        """Stop accepting, let live sessions finish up to ``drain_s``, then close.

        The API serves until the sessions are done, ``/v1/ready`` answering 503.
        """
        self.readiness.draining = True
        if drain_s is not None:
            self._drain_s = drain_s
        await self._stack.aclose()
        log.info("gateway stopped")

    async def _drain(self) -> None:
        ctx, timeout = self.ctx, self._drain_s
        # Connections with no live session have nothing to drain.
        busy = {s.user for s in ctx.sessions.values()}
        for conn in list(ctx.connections):
            if conn.principal is None or conn.principal.user not in busy:
                conn.close()
        deadline = time.monotonic() + timeout
        if ctx.sessions:
            log.info("draining", sessions=len(ctx.sessions), timeout_s=timeout)
        while ctx.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(ctx.connections):
            conn.close()
        end = time.monotonic() + 2.0
        while (ctx.connections or ctx.sessions) and time.monotonic() < end:
            await asyncio.sleep(0.02)


HOST_KEY_COMMENT = "gpuhop gateway host key"


def load_user_ca(settings: Settings) -> UserCA:
    """The current user CA plus those rotated out less than the longest validity ago."""
    g = settings.gateway
    previous = previous_keys(g.user_ca_key, g.cert_max_validity_s + 300)
    return UserCA.from_paths(g.user_ca_key, previous)


def load_upstream_ca(settings: Settings) -> UserCA:
    """The CA of the gateway's own logins to hosts; users never get its certificates."""
    return UserCA.from_paths(settings.gateway.upstream_ca_key, comment="gpuhop upstream CA")


def load_key_ring(settings: Settings) -> KeyRing:
    """Every key the gateway uses, made where missing (blocking: run it in a thread)."""
    g = settings.gateway
    return KeyRing(
        user_ca=load_user_ca(settings),
        host_keys=tuple(gateway_host_keys(g.host_key, HOST_KEY_COMMENT)),
        host_ca=ensure_private_key(g.host_ca_key, "gpuhop host CA"),
        upstream_key=ensure_private_key(g.upstream_key, "gpuhop gateway upstream"),
        upstream_ca=load_upstream_ca(settings),
    )


def reload_key_ring(settings: Settings, old: KeyRing) -> KeyRing:
    """The rotated keys on a reload; the upstream key stays, and so does the upstream
    CA when it cannot be read now."""
    g = settings.gateway
    upstream_ca = old.upstream_ca
    user_ca = load_user_ca(settings)
    host_keys = tuple(gateway_host_keys(g.host_key, HOST_KEY_COMMENT))
    host_ca = ensure_private_key(g.host_ca_key, "gpuhop host CA")
    with contextlib.suppress(GatewayError, ValueError):
        upstream_ca = load_upstream_ca(settings)
    return KeyRing(user_ca, host_keys, host_ca, old.upstream_key, upstream_ca)


def build_front_context(
    settings: Settings,
    runtime: RuntimeRef,
    audit: AuditStore,
    pool: UpstreamPool,
    session_store: SessionStore,
    live: LiveState,
) -> FrontContext:
    g = settings.gateway
    return FrontContext(
        runtime=runtime,
        audit=audit,
        pool=pool,
        session_store=session_store,
        live=live,
        limiter=FailureLimiter(
            g.auth_max_failures,
            g.auth_failure_window_s,
            g.auth_ban_s,
            address_max_failures=g.auth_address_max_failures,
        ),
        window=g.window,
        max_packet=g.max_packet,
        audit_start_timeout_s=g.audit_start_timeout_s,
        max_forwards_per_session=g.max_forwards_per_session,
        recordings_dir=g.recordings_dir,
        record_input=g.record_input,
        recording_limits=RecordingLimits(g.recording_max_bytes, g.recordings_min_free_bytes),
        env_stage=StagePolicy(
            min_rtt_s=g.env_push_min_rtt_ms / 1000.0,
            connections=g.env_push_connections,
            per_connection=g.env_push_streams_per_connection,
            chunk_size=g.env_push_chunk_mib * 1024 * 1024,
            spool_ahead=g.env_push_spool_ahead_mib * 1024 * 1024,
        ),
        startups=StartupLimiter(g.max_startups, g.max_startups_per_source),
        max_channels=g.max_channels_per_connection,
        max_env=g.max_env_per_channel,
        max_resizes_per_s=g.max_resizes_per_s,
        coalescer=AuditCoalescer(g.audit_events_per_connection_s),
    )


def build_pool(g: GatewaySettings, runtime: RuntimeRef) -> UpstreamPool:
    return UpstreamPool(
        lambda: runtime.current.keys,
        target_rate=g.upstream_target_rate,
        max_packet=g.max_packet,
        keepalive_s=g.upstream_keepalive_s,
        idle_s=g.upstream_idle_s,
    )


def _server_options(g: GatewaySettings) -> dict[str, Any]:
    """What the front and the inner servers of recorded jumps share."""
    return {
        "server_version": f"gpuhop_{__version__}",
        "encoding": None,
        "window": g.window,
        "max_pktsize": g.max_packet,
        "login_timeout": g.login_timeout_s,
        "agent_forwarding": False,
        "x11_forwarding": False,
        "allow_pty": True,
        "rdns_lookup": False,
        **connection_algorithms(g.ssh_algorithms),
    }


async def inner_options(g: GatewaySettings) -> asyncssh.SSHServerConnectionOptions:
    """The inner servers' options (recorded jumps): their host key comes per host."""
    options: asyncssh.SSHServerConnectionOptions = (
        await asyncssh.SSHServerConnectionOptions.construct(None, **_server_options(g))
    )
    return options


async def front_options(
    g: GatewaySettings, ctx: FrontContext, host_keys: Sequence[asyncssh.SSHKey]
) -> asyncssh.SSHServerConnectionOptions:
    options: asyncssh.SSHServerConnectionOptions = (
        await asyncssh.SSHServerConnectionOptions.construct(
            None,
            server_factory=lambda: FrontServer(ctx),
            server_host_keys=list(host_keys),
            send_server_host_keys=True,  # clients learn a staged next key before it is used
            keepalive_interval=g.keepalive_interval_s,
            keepalive_count_max=g.keepalive_count_max,
            **_server_options(g),
        )
    )
    return options


def build_live_state(settings: Settings, runtime: RuntimeRef, lease_store: LeaseStore) -> LiveState:
    """Probes log in with the gateway's upstream key and a day-long certificate per host
    from the upstream CA (principal ``PROBE_ACCOUNT@HOST``), both read from the runtime
    at each probe. Data sets and budgets come from its directory (config and admin
    entries)."""
    g = settings.gateway
    now = runtime.current

    def probe_cert(host: str) -> asyncssh.SSHCertificate:
        keys = runtime.current.keys
        return keys.upstream_ca.sign(
            keys.upstream_key,
            user="gateway-probe",
            accounts=[host_principal(g.probe_account, host)],
            validity_s=86400,
        ).cert

    rates = {}
    if g.catalog is not None:
        catalog = load_catalog(g.catalog)
        rates = {h.name: rate_for(h, catalog) for h in now.inventory.hosts}
    live = LiveState(
        now.inventory,
        ProbeCredentials(g.probe_account, now.keys.upstream_key, certificate_for=probe_cert),
        interval_s=g.probe_interval_s,
        timeout_s=g.probe_timeout_s,
        gpu_interval_s=g.probe_gpu_interval_s,
        datasets=now.view.dataset_list(),
        budgets=now.view.budget_limits(),
        rates=rates,
        lease_store=lease_store,
    )
    live.idle_util_pct = g.idle_gpu_util_pct
    live.idle_timeout_s = g.idle_timeout_s
    live.idle_warn_s = g.idle_warn_s
    return live


def write_ready_file(path: Path, port: int, api_port: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "ssh_port": port, "api_port": api_port}) + "\n")
    tmp.replace(path)


async def serve(
    settings: Settings,
    *,
    sock: socket.socket | None = None,
    api_sock: socket.socket | None = None,
    ready_file: Path | None = None,
) -> None:
    """Run one gateway worker until SIGTERM/SIGINT, then drain and stop."""
    gateway = Gateway(settings, sock=sock, api_sock=api_sock)
    await gateway.startup()
    if ready_file is not None and sock is None:
        write_ready_file(ready_file, gateway.port, gateway.api_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, gateway.reload_keys)
    try:
        await stop.wait()
    finally:
        await gateway.shutdown()


def run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run with uvloop when installed (faster relays), else asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def bind_listener(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def supervise(
    config: Path, settings: Settings, workers: int, ready_file: Path | None = None
) -> int:
    """Bind once, run ``workers`` processes accepting on the shared socket.

    SIGTERM/SIGINT are passed on to every worker; each drains on its own. SIGHUP
    (reload keys) is passed on too. A worker that dies unexpectedly is
    restarted, at most 10 times in all.
    """
    g = settings.gateway
    reconcile_before_workers(settings)
    sock = bind_listener(g.ssh_host, g.ssh_port)
    port = sock.getsockname()[1]
    api_sock = bind_api_socket(g.api_host, g.api_port)
    api_sock.set_inheritable(True)
    api_port = api_sock.getsockname()[1]
    log.info("supervisor listening", ssh=f"{g.ssh_host}:{port}", workers=workers)

    def spawn() -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config)]
        cmd += ["--listen-fd", str(sock.fileno()), "--api-listen-fd", str(api_sock.fileno())]
        return subprocess.Popen(cmd, pass_fds=(sock.fileno(), api_sock.fileno()))

    procs = [spawn() for _ in range(workers)]
    if ready_file is not None:
        write_ready_file(ready_file, port, api_port)
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = stopping or signum != signal.SIGHUP  # a reload is not a stop
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, forward)
    restarts = 0
    while True:
        alive = [p for p in procs if p.poll() is None]
        if stopping:
            if not alive:
                break
        else:
            for i, p in enumerate(procs):
                if p.poll() is not None:
                    restarts += 1
                    if restarts > 10:
                        log.error("workers keep dying; stopping")
                        forward(signal.SIGTERM, None)
                        break
                    log.warning("worker exited; restarting", code=p.returncode)
                    procs[i] = spawn()
        time.sleep(0.2)
    sock.close()
    api_sock.close()
    return max((p.returncode or 0) for p in procs) if procs else 0
