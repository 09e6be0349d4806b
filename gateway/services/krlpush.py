"""Keeping hosts' revocation lists current: the gateway pushes them.

Why push rather than let hosts fetch: the gateway already holds an
authenticated, host-key-pinned connection to every host (its upstream pool),
learns of a removal the moment the directory changes, and can tell which hosts
have the current list; a host that fetched would need a timer, a route back to
the gateway and a way to authenticate it. So on every directory change, and
every ``interval_s`` for hosts that missed one (down, restarted, reset), the
gateway rebuilds the KRL (:mod:`gateway.domain.krl`) from the ``cert.issued`` events
of its audit log and runs ``krl_command`` on each host with the list on stdin;
that command installs the host's ``RevokedKeys`` file (docs/hosts.md).

Bounded: one round at a time, each host push under ``timeout_s``, audit reads
paged up to a fixed number of pages per round, and the list capped at
``gateway.domain.krl.MAX_ENTRIES``. A push that fails is logged and retried next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import structlog

from gateway.adapters.hosts.upstream import UpstreamPool
from gateway.domain.inventory.hosts import Inventory
from gateway.domain.krl import IssuedCert, build_krl, revoked_fingerprints
from gateway.domain.models import Host
from gateway.errors import GatewayError
from gateway.ports import AuditStore
from gateway.services.runtime import RuntimeRef

log = structlog.get_logger("gpuhop.krl")

KRL_ACTOR = "gateway-krl"  # the gpuhop user named by the push's certificate key id
PAGE = 1000
MAX_PAGES = 100  # per round; the rest is read next round


class KrlPublisher:
    """Rebuilds the KRL and pushes it to every inventory host that lacks it."""

    def __init__(
        self,
        audit: AuditStore,
        pool: UpstreamPool,
        runtime: RuntimeRef,
        *,
        account: str,
        command: str,
        interval_s: float = 10.0,
        timeout_s: float = 10.0,
        refresh_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._audit = audit
        self._pool = pool
        self._runtime = runtime  # the directory, read each round; its changes wake a round
        self._account = account
        self._command = command
        self._interval = interval_s
        self._timeout = timeout_s
        self._refresh = refresh_s
        self._clock = clock
        self._issued: dict[str, IssuedCert] = {}  # by key id
        self._after_id = 0
        self._fingerprints: tuple[str, ...] | None = None
        self._version = 0
        self.krl = b""
        self._pushed: dict[str, tuple[int, float]] = {}  # host -> (version, when)
        self._warned: dict[str, int] = {}  # host -> version a failure was logged for
        self._task: asyncio.Task[None] | None = None

    @property
    def fingerprints(self) -> tuple[str, ...]:
        return self._fingerprints or ()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    @property
    def inventory(self) -> Inventory:
        return self._runtime.current.inventory

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self) -> None:
        seen = self._runtime.current
        while True:
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bad round must not end revocation for good
                log.error("revocation round failed", error=str(exc))
            with contextlib.suppress(TimeoutError):  # a change during the round: at once
                seen = await asyncio.wait_for(self._runtime.changed(seen), self._interval)

    async def round(self) -> None:
        """Rebuild the list, then push it to each host that does not have it yet."""
        await self._read_issued()
        now = self._clock()
        users = {u.name for u in self.inventory.users}
        fps = revoked_fingerprints(self._issued.values(), users, now)
        if fps != self._fingerprints:
            self._fingerprints = fps
            self._version += 1
            self.krl = build_krl(fps, version=self._version, generated=int(now))
            log.info("revocation list rebuilt", version=self._version, keys=len(fps))
        for key_id in [k for k, c in self._issued.items() if c.valid_before <= now]:
            del self._issued[key_id]
        stale = [h for h in self.inventory.hosts if self._needs_push(h, now)]
        if stale:
            await asyncio.gather(*(self._push(h, self._version, self.krl) for h in stale))

    def _needs_push(self, host: Host, now: float) -> bool:
        version, when = self._pushed.get(host.name, (0, 0.0))
        return version != self._version or now - when >= self._refresh

    async def _read_issued(self) -> None:
        for _ in range(MAX_PAGES):
            page = await self._audit.list(kind="cert.issued", after_id=self._after_id, limit=PAGE)
            for event in page:
                self._after_id = max(self._after_id, event.id)
                data = event.data
                user, fp = data.get("user"), data.get("fingerprint")
                before, key_id = data.get("valid_before"), data.get("key_id")
                if isinstance(user, str) and isinstance(fp, str) and isinstance(before, int):
                    self._issued[str(key_id)] = IssuedCert(user, fp, float(before))
            if len(page) < PAGE:
                return

    async def _push(self, host: Host, version: int, krl: bytes) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                entry = await self._pool.acquire(KRL_ACTOR, host, self._account)
                try:
                    result = await entry.conn.run(self._command, input=krl, encoding=None)
                finally:
                    self._pool.release(entry)
        except (TimeoutError, GatewayError, OSError) as exc:
            self._failed(host, version, str(exc) or "timed out")
            return
        except Exception as exc:  # asyncssh errors: the host refused the login or channel
            self._failed(host, version, str(exc))
            return
        if result.exit_status != 0:
            err = result.stderr if isinstance(result.stderr, bytes) else b""
            status = f"{self._command} exited {result.exit_status}"
            self._failed(host, version, f"{status}: {err.decode(errors='replace')[:200]}")
            return
        self._warned.pop(host.name, None)
        self._pushed[host.name] = (version, self._clock())
        log.debug("revocation list pushed", host=host.name, version=version)

    def _failed(self, host: Host, version: int, error: str) -> None:
        """Log a failed push once per host and list version; it is retried every round."""
        if self._warned.get(host.name) != version:
            self._warned[host.name] = version
            log.warning("revocation push failed", host=host.name, version=version, error=error)
