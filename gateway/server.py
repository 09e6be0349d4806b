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
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import asyncssh
import structlog

from gateway import __version__
from gateway.api import ApiContext, session_controls, start_api
from gateway.api.context import GatewayKeys
from gateway.api.server import ApiServer, bind_api_socket
from gateway.audit.anchor import signer_for
from gateway.audit.coalesce import AuditCoalescer
from gateway.audit.reconcile import (
    node_name,
    of_node,
    reconcile_at_start,
    reconcile_before_workers,
)
from gateway.audit.recording import Limits as RecordingLimits
from gateway.audit.store import AuditStore, append_within, open_store
from gateway.config.loader import Settings
from gateway.directory.service import DirectoryService, stop_task
from gateway.directory.view import DirectoryView
from gateway.errors import GatewayError
from gateway.inventory.catalog import load_catalog
from gateway.inventory.hosts import Inventory
from gateway.inventory.leases import LeaseStore
from gateway.inventory.probes import ProbeCredentials
from gateway.keys import (
    HostCertificates,
    UserCA,
    ensure_private_key,
    gateway_host_keys,
    previous_keys,
    public_line,
)
from gateway.krlpush import KrlPublisher
from gateway.live import LiveState
from gateway.metering.meter import rate_for
from gateway.metrics import GatewayMetrics, InstrumentedAuditStore
from gateway.placement.golden import GoldenLimits, GoldenRunner
from gateway.policy.passthrough import host_principal
from gateway.policy.rules import default_account
from gateway.replication import ReplicaDuties
from gateway.ssh.algorithms import connection_algorithms
from gateway.ssh.authority import enforce
from gateway.ssh.compat import offer_host_keys
from gateway.ssh.context import ActiveSession, FrontContext
from gateway.ssh.envstage import StagePolicy
from gateway.ssh.front import FrontConnection, FrontServer
from gateway.ssh.limits import StartupLimiter
from gateway.ssh.ratelimit import FailureLimiter
from gateway.ssh.upstream import UpstreamPool
from gateway.storage import Storage, open_storage

log = structlog.get_logger("gpuhop.server")


class Gateway:
    """One gateway worker: the SSH front, its audit store and live sessions."""

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
        self.storage: Storage | None = None
        self.live: LiveState | None = None
        self.metrics = GatewayMetrics()
        self.api: ApiServer | None = None
        self.api_port = 0
        self._server: asyncio.AbstractServer | None = None
        self.audit: AuditStore | None = None
        self.ctx: FrontContext | None = None
        self.port = 0
        self._front_options: asyncssh.SSHServerConnectionOptions | None = None
        self._api_ctx: ApiContext | None = None
        self.directory: DirectoryService | None = None
        self._directory_watch: asyncio.Task[None] | None = None
        self.krl: KrlPublisher | None = None
        self._heartbeat: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        g = self.settings.gateway
        self.audit = InstrumentedAuditStore(
            open_store(g.storage_url.get_secret_value(), signer_for(g)), self.metrics
        )
        try:
            host_keys = await asyncio.to_thread(gateway_host_keys, g.host_key, HOST_KEY_COMMENT)
            host_key = host_keys[0]
            user_ca = await asyncio.to_thread(load_user_ca, self.settings)
            host_ca = await asyncio.to_thread(ensure_private_key, g.host_ca_key, "gpuhop host CA")
            upstream_key = await asyncio.to_thread(
                ensure_private_key, g.upstream_key, "gpuhop gateway upstream"
            )
            upstream_ca = await asyncio.to_thread(load_upstream_ca, self.settings)
        except BaseException:
            await self.audit.close()
            raise
        try:
            # After the audit store: both may share one SQLite file.
            self.storage = await open_storage(
                g.storage_url.get_secret_value(),
                node=node_name(g),
                replica_timeout_s=g.replica_timeout_s,
            )
            await self.storage.replicas.heartbeat()  # before any lease: they count while it beats
        except BaseException:
            await self.audit.close()
            raise
        self.directory = DirectoryService(
            self.settings,
            self.storage.directory,
            self.audit,
            audit_timeout_s=g.audit_start_timeout_s,
            on_change=self._swap_directory,
        )
        try:
            view = await self.directory.load()
        except BaseException:
            await self.storage.close()
            await self.audit.close()
            raise
        inventory = view.inventory()
        ctx = FrontContext(
            inventory=inventory,
            audit=self.audit,
            user_ca=user_ca,
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
            host_certificate=HostCertificates(host_ca, host_key),
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
        ctx.pool = UpstreamPool(
            upstream_ca,
            upstream_key,
            target_rate=g.upstream_target_rate,
            max_packet=g.max_packet,
            keepalive_s=g.upstream_keepalive_s,
            idle_s=g.upstream_idle_s,
        )
        ctx.inner_options = await asyncssh.SSHServerConnectionOptions.construct(
            None,
            server_version=f"gpuhop_{__version__}",
            encoding=None,
            window=g.window,
            max_pktsize=g.max_packet,
            login_timeout=g.login_timeout_s,
            agent_forwarding=False,
            x11_forwarding=False,
            allow_pty=True,
            rdns_lookup=False,
            **connection_algorithms(g.ssh_algorithms),
        )
        ctx.session_store = self.storage.sessions
        self.live = await asyncio.to_thread(
            build_live_state,
            self.settings,
            inventory,
            upstream_ca,
            upstream_key,
            view,
            self.storage.leases,
        )
        self.live.session_store = self.storage.sessions
        self.live.live_costs = self.storage.live_costs
        ctx.live = self.live
        if self._sock is None:  # supervised workers: their supervisor did it, once
            state = self.live
            try:
                await reconcile_at_start(
                    self.storage,
                    self.audit,
                    rate_of=lambda name: state.rate(h) if (h := inventory.host(name)) else None,
                    recordings_dir=g.recordings_dir,
                    owned=of_node(node_name(g)),
                    audit_timeout_s=g.audit_start_timeout_s,
                )
            except BaseException:
                await self.storage.close()
                await self.audit.close()
                raise
        self.ctx = ctx
        options = await asyncssh.SSHServerConnectionOptions.construct(
            None,
            server_factory=lambda: FrontServer(ctx),
            server_host_keys=host_keys,
            send_server_host_keys=True,  # clients learn a staged next key before it is used
            server_version=f"gpuhop_{__version__}",
            encoding=None,
            window=g.window,
            max_pktsize=g.max_packet,
            login_timeout=g.login_timeout_s,
            keepalive_interval=g.keepalive_interval_s,
            keepalive_count_max=g.keepalive_count_max,
            agent_forwarding=False,
            x11_forwarding=False,
            allow_pty=True,
            rdns_lookup=False,
            **connection_algorithms(g.ssh_algorithms),
        )
        loop = asyncio.get_running_loop()

        self._front_options = options

        def factory() -> FrontConnection:
            conn = FrontConnection.for_listener(options)
            conn.ctx = ctx  # counts it among unauthenticated connections until it logs in
            return conn

        if self._sock is not None:
            self._server = await loop.create_server(factory, sock=self._sock, backlog=1024)
        else:
            self._server = await loop.create_server(
                factory, g.ssh_host, g.ssh_port, backlog=1024, reuse_address=True
            )
        self.port = self._server.sockets[0].getsockname()[1]
        # The kill API reaches sessions and recorded jumps; metrics count sessions.
        kill, live = session_controls(ChainMap[str, ActiveSession](ctx.sessions, ctx.jumps))
        self.metrics.register_collectors(session_controls(ctx.sessions)[1], self.live)
        self._api_ctx = ApiContext(
            settings=self.settings,
            inventory=inventory,
            audit=self.audit,
            tokens=self.storage.tokens,
            sessions=self.storage.sessions,
            user_ca=user_ca,
            kill_session=kill,
            live_sessions=live,
            kills=self.storage.kills,
            ssh_port=self.port,
            ssh_keys=GatewayKeys(tuple(public_line(k) for k in host_keys)),
            host_ca_key=public_line(host_ca),
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
        self.api = await start_api(self._api_ctx, g.api_host, g.api_port, sock=self._api_sock)
        self.api_port = self.api.port
        await self.live.start()
        live_state = self.live
        duties = ReplicaDuties(
            self.storage,
            self.audit,
            rate_of=lambda name: (
                live_state.rate(h) if (h := live_state.inventory.host(name)) else None
            ),
            kill=kill,
            audit_timeout_s=g.audit_start_timeout_s,
        )
        await duties.close_lost()
        self._heartbeat = loop.create_task(duties.run())
        if g.krl_command:
            self.krl = KrlPublisher(
                self.audit,
                ctx.pool,
                inventory,
                account=g.probe_account,
                command=g.krl_command,
                interval_s=g.krl_push_interval_s,
            )
            self.krl.start()
        self._directory_watch = asyncio.get_running_loop().create_task(self.directory.watch())
        await self.audit.append(
            "gateway.start",
            "gateway",
            {"pid": os.getpid(), "port": self.port, "version": __version__},
        )
        log.info(
            "gateway listening",
            ssh=f"{g.ssh_host}:{self.port}",
            api=self.api.url,
            pid=os.getpid(),
        )

    def _swap_directory(self, view: DirectoryView) -> None:
        """Install a changed directory: new logins, channels, API calls and probes use it,
        and live connections, jumps and sessions it no longer allows are closed
        (:func:`gateway.ssh.authority.enforce`), wherever the swap runs."""
        inventory = view.inventory()
        if self.ctx is not None:
            self.ctx.inventory = inventory
            enforce(self.ctx)
        if self._api_ctx is not None:
            self._api_ctx.swap_inventory(inventory)
        if self.live is not None:
            self.live.update(inventory, view.dataset_list(), view.budget_limits())
        if self.krl is not None:
            self.krl.update(inventory)  # a removed user's certificates are revoked now
        if self.ctx is not None:
            log.info(
                "directory loaded",
                version=view.version,
                users=len(inventory.users),
                hosts=len(inventory.hosts),
            )

    async def _audit_within(self, kind: str, actor: str, data: dict[str, object]) -> None:
        assert self.audit is not None
        await append_within(self.audit, kind, actor, data, 5.0)

    def reload_keys(self) -> None:
        """SIGHUP: pick up a rotated user CA, host CA and gateway host key for new
        logins and sessions.

        Live sessions are untouched (a connection keeps the host key its key
        exchange used); certificates from a rotated-out user CA stay valid until
        they expire (see :func:`gateway.keys.previous_keys`).
        """
        ctx = self.ctx
        if ctx is None:
            return
        g = self.settings.gateway
        try:
            ctx.user_ca = load_user_ca(self.settings)
            host_keys = gateway_host_keys(g.host_key, HOST_KEY_COMMENT)
            host_ca = ensure_private_key(g.host_ca_key, "gpuhop host CA")
            ctx.host_certificate = HostCertificates(host_ca, host_keys[0])
            if self._front_options is not None:
                offer_host_keys(self._front_options, host_keys)
        except (GatewayError, ValueError) as exc:
            log.error("key reload failed; keeping the old keys", error=str(exc))
            return
        if self._api_ctx is not None:
            self._api_ctx.ssh_keys.lines = tuple(public_line(k) for k in host_keys)
        if ctx.pool is not None:
            with contextlib.suppress(GatewayError, ValueError):
                ctx.pool.upstream_ca = load_upstream_ca(self.settings)
        log.info("keys reloaded", user_cas=len(ctx.user_ca.trusted_lines()))
        ctx.audit_soon(
            "gateway.keys_reloaded",
            "gateway",
            {
                "pid": os.getpid(),
                "user_ca": ctx.user_ca.public_line,
                "host_ca": public_line(host_ca),
                "host_keys": [public_line(k) for k in host_keys],
            },
        )

    async def shutdown(self, drain_s: float | None = None) -> None:
        """Stop accepting, let live sessions finish up to ``drain_s``, then close."""
        timeout = self.settings.gateway.drain_timeout_s if drain_s is None else drain_s
        if self._server is not None:
            self._server.close()
        await stop_task(self._directory_watch)
        if self.api is not None:
            await self.api.stop()
        if self.live is not None:
            await self.live.stop()
        if self.krl is not None:
            await self.krl.stop()
        ctx = self.ctx
        if ctx is not None:
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
            if ctx.pool is not None:
                await ctx.pool.close()
            await ctx.flush()
        if self.live is not None:
            await self.live.settle()
        await stop_task(self._heartbeat)
        if self.storage is not None:
            with contextlib.suppress(GatewayError):
                await self.storage.replicas.retire()  # its sessions and leases are done
        if self.audit is not None:
            with contextlib.suppress(Exception):
                await append_within(self.audit, "gateway.stop", "gateway", {"pid": os.getpid()}, 5)
            await self.audit.close()
        if self.storage is not None:
            await self.storage.close()
        log.info("gateway stopped")


HOST_KEY_COMMENT = "gpuhop gateway host key"


def load_user_ca(settings: Settings) -> UserCA:
    """The current user CA plus those rotated out less than the longest validity ago."""
    g = settings.gateway
    previous = previous_keys(g.user_ca_key, g.cert_max_validity_s + 300)
    return UserCA.from_paths(g.user_ca_key, previous)


def load_upstream_ca(settings: Settings) -> UserCA:
    """The CA of the gateway's own logins to hosts; users never get its certificates."""
    return UserCA.from_paths(settings.gateway.upstream_ca_key, comment="gpuhop upstream CA")


def build_live_state(
    settings: Settings,
    inventory: Inventory,
    upstream_ca: UserCA,
    upstream_key: asyncssh.SSHKey,
    view: DirectoryView | None = None,
    lease_store: LeaseStore | None = None,
) -> LiveState:
    """Probes log in with the gateway's upstream key and a day-long certificate per host
    from the upstream CA (principal ``PROBE_ACCOUNT@HOST``).

    Data sets and budgets come from ``view`` (config and admin entries) when given,
    else from the config file alone."""
    g = settings.gateway

    def probe_cert(host: str) -> asyncssh.SSHCertificate:
        return upstream_ca.sign(
            upstream_key,
            user="gateway-probe",
            accounts=[host_principal(g.probe_account, host)],
            validity_s=86400,
        ).cert

    rates = {}
    if g.catalog is not None:
        catalog = load_catalog(g.catalog)
        rates = {h.name: rate_for(h, catalog) for h in inventory.hosts}
    budgets = (
        view.budget_limits()
        if view is not None
        else {
            ("user", b.user) if b.user else ("team", b.team): b.to_limits()
            for b in settings.budgets
        }
    )
    datasets = (
        view.dataset_list() if view is not None else [d.to_dataset() for d in settings.datasets]
    )
    live = LiveState(
        inventory,
        ProbeCredentials(g.probe_account, upstream_key, certificate_for=probe_cert),
        interval_s=g.probe_interval_s,
        timeout_s=g.probe_timeout_s,
        gpu_interval_s=g.probe_gpu_interval_s,
        datasets=datasets,
        budgets=budgets,
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
