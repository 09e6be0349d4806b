"""A runtime snapshot for tests that build a context without a gateway: real types,
throwaway keys, the directory of ``settings`` alone; and front and API contexts over one."""

from __future__ import annotations

from collections.abc import Mapping

import asyncssh

from gateway.adapters.hosts.upstream import UpstreamPool
from gateway.adapters.keys import KeyRing, UserCA
from gateway.adapters.storage import SessionStore, Storage
from gateway.config.loader import Settings
from gateway.domain.policy.rules import default_account
from gateway.domain.ratelimit import FailureLimiter
from gateway.edges.http import ApiContext, ClosableSession, session_controls
from gateway.edges.http.metrics import GatewayMetrics
from gateway.edges.http.readiness import Readiness
from gateway.ports import AuditStore, append_within
from gateway.services.directory import DirectoryService
from gateway.services.directoryview import DirectoryView
from gateway.services.golden import GoldenLimits, GoldenRunner
from gateway.services.live import LiveState
from gateway.services.runtime import Runtime, RuntimeRef
from gateway.services.sessions.context import FrontContext


def _key() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519")


def key_ring(user_ca: UserCA | None = None) -> KeyRing:
    """Fresh keys in every role, each distinct; the user CA ``user_ca`` when given."""
    return KeyRing(
        user_ca=user_ca or UserCA([_key()]),
        host_keys=(_key(),),
        host_ca=_key(),
        upstream_key=_key(),
        upstream_ca=UserCA([_key()]),
    )


def runtime_of(settings: Settings | None = None, user_ca: UserCA | None = None) -> RuntimeRef:
    """The directory of ``settings`` (config only) with :func:`key_ring` keys."""
    return RuntimeRef(Runtime(DirectoryView.build(settings or Settings()), key_ring(user_ca)))


def front_context(ref: RuntimeRef, audit: AuditStore, session_store: SessionStore) -> FrontContext:
    """A front context over ``ref``: a pool that connects nowhere until asked and live
    state that probes nothing until started."""
    return FrontContext(
        ref,
        audit,
        FailureLimiter(5, 60, 60),
        UpstreamPool(lambda: ref.current.keys),
        session_store,
        LiveState(ref.current.inventory, None),
    )


def api_context(
    settings: Settings,
    ref: RuntimeRef,
    audit: AuditStore,
    storage: Storage,
    sessions: Mapping[str, ClosableSession],
    *,
    metrics: GatewayMetrics | None = None,
    metrics_token_required: bool = True,
) -> ApiContext:
    """An API context over ``ref`` and ``storage`` with no SSH front: kill and list
    ``sessions``; live state, golden runs and the directory are real and reach no host."""
    g = settings.gateway
    front = front_context(ref, audit, storage.sessions)

    async def audit_within(kind: str, actor: str, data: dict[str, object]) -> None:
        await append_within(audit, kind, actor, data, 5.0)

    kill, live_sessions = session_controls(sessions)
    return ApiContext(
        settings=settings,
        runtime=ref,
        audit=audit,
        tokens=storage.tokens,
        sessions=storage.sessions,
        kill_session=kill,
        live_sessions=live_sessions,
        readiness=Readiness(storage.ping),
        kills=storage.kills,
        live=front.live,
        golden=GoldenRunner(
            front,
            front.live,
            audit_within,
            default_account,
            g.golden_command,
            GoldenLimits(g.golden_max_running, g.golden_max_s),
        ),
        directory=DirectoryService(settings, storage.directory, audit),
        metrics=metrics,
        metrics_token_required=metrics_token_required,
    )
