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

asyncssh keeps these options in private attributes, read and written through
:mod:`gateway.adapters.sshcompat` (``login_options``, ``set_login_options``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import asyncssh

from gateway.adapters.sshcompat import login_options, set_login_options


@dataclass(frozen=True, slots=True)
class LoginRestrictions:
    """What the outer login may do, as asyncssh holds it for that connection."""

    key_options: Mapping[str, object] = field(default_factory=dict)
    cert_options: Mapping[str, object] | None = None

    @classmethod
    def of(cls, conn: asyncssh.SSHServerConnection) -> LoginRestrictions:
        """The restrictions asyncssh applies to ``conn`` (after its authentication)."""
        key, cert = login_options(conn)
        return cls(
            MappingProxyType(dict(key)),
            None if cert is None else MappingProxyType(dict(cert)),
        )

    def apply(self, conn: asyncssh.SSHServerConnection) -> None:
        """Make asyncssh enforce these restrictions on ``conn`` (call from auth_completed)."""
        set_login_options(conn, self.key_options, self.cert_options)

    @property
    def forced_command(self) -> str | None:
        """The certificate's ``force-command``, if any."""
        if self.cert_options is None:
            return None
        value = self.cert_options.get("force-command")
        return None if value is None else str(value)
