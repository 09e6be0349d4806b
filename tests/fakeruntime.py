"""A runtime snapshot for tests that build a context without a gateway: real types,
throwaway keys, the directory of ``settings`` alone; and a front context over one."""

from __future__ import annotations

import asyncssh

from gateway.adapters.hosts.upstream import UpstreamPool
from gateway.adapters.keys import KeyRing, UserCA
from gateway.adapters.storage import SessionStore
from gateway.config.loader import Settings
from gateway.domain.ratelimit import FailureLimiter
from gateway.ports import AuditStore
from gateway.services.directoryview import DirectoryView
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
