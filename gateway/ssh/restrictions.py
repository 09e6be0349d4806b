"""The outer login's restrictions, carried onto the inner hop of a recorded jump.

A user certificate can say ``force-command``, ``source-address``, and which of
``permit-pty``, ``permit-port-forwarding``, ``permit-X11-forwarding``,
``permit-agent-forwarding`` it allows. asyncssh enforces them on the connection
that authenticated with the certificate: the direct form (``ssh gw host``).
Inside ``ssh -J`` the channels arrive on the inner hop, which authenticated with
nothing (the outer hop did), so on its own it would enforce nothing. This
module copies the outer connection's key and certificate options onto the inner
connection once its (empty) authentication completes, and asyncssh then
enforces them there by the very same code paths as on the direct form.

``source-address`` was already checked when the outer hop authenticated.

asyncssh keeps these options in private attributes (``_key_options``,
``_cert_options``, reset on each user-auth request); this is the one place the
gateway touches them, and ``tests/unit/test_restrictions.py`` pins the names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import asyncssh


@dataclass(frozen=True, slots=True)
class LoginRestrictions:
    """What the outer login may do, as asyncssh holds it for that connection."""

    key_options: Mapping[str, object] = field(default_factory=dict)
    cert_options: Mapping[str, object] | None = None

    @classmethod
    def of(cls, conn: asyncssh.SSHServerConnection) -> LoginRestrictions:
        """The restrictions asyncssh applies to ``conn`` (after its authentication)."""
        key = getattr(conn, "_key_options", None)
        cert = getattr(conn, "_cert_options", None)
        return cls(
            MappingProxyType(dict(key or {})),
            None if cert is None else MappingProxyType(dict(cert)),
        )

    def apply(self, conn: asyncssh.SSHServerConnection) -> None:
        """Make asyncssh enforce these restrictions on ``conn`` (call from auth_completed)."""
        if not hasattr(conn, "_key_options") or not hasattr(conn, "_cert_options"):
            raise RuntimeError("asyncssh no longer keeps login options where gpuhop expects")
        cert = None if self.cert_options is None else dict(self.cert_options)
        conn._key_options = dict(self.key_options)
        conn._cert_options = cert

    @property
    def forced_command(self) -> str | None:
        """The certificate's ``force-command``, if any."""
        if self.cert_options is None:
            return None
        value = self.cert_options.get("force-command")
        return None if value is None else str(value)
