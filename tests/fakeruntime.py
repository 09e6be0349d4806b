"""A runtime snapshot for tests that build a context without a gateway: real types,
throwaway keys, the directory of ``settings`` alone."""

from __future__ import annotations

import asyncssh

from gateway.adapters.keys import KeyRing, UserCA
from gateway.config.loader import Settings
from gateway.services.directoryview import DirectoryView
from gateway.services.runtime import Runtime, RuntimeRef


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
