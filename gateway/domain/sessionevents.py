"""A session's start and end, as plain values.

Each value names its audit event (``session.start``, ``session.end``) and the
data that event carries, and holds the fields of the session record written
beside it, so the audit log and the records the API serves are derived from
one value instead of a dict re-parsed into a record (the pattern of
:mod:`gateway.config.changes`). ``details`` carries what only the audit log
keeps, per mode (role, fingerprint, command, recording, jump id, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.domain.models import Mode


@dataclass(frozen=True, slots=True)
class SessionStart:
    session_id: str
    user: str
    host: str
    region: str
    mode: Mode
    source: str = ""
    account: str = ""
    gpus: int = 0
    details: Mapping[str, object] = field(default_factory=dict)
    event = "session.start"

    def audit_data(self) -> dict[str, object]:
        return {
            **self.details,
            "session_id": self.session_id,
            "user": self.user,
            "source": self.source,
            "host": self.host,
            "region": self.region,
            "mode": self.mode.value,
            "account": self.account,
            "gpus": self.gpus,
        }


@dataclass(frozen=True, slots=True)
class SessionEnd:
    """The end of ``start``'s session; ``ended_at`` only when it is not now (reconciled)."""

    start: SessionStart
    bytes_up: int = 0  # user -> host
    bytes_down: int = 0  # host -> user
    duration_s: float = 0.0
    exit_status: int | None = None
    error: str | None = None
    cost_usd: float | None = None
    ended_at: float | None = None
    details: Mapping[str, object] = field(default_factory=dict)
    event = "session.end"

    @property
    def session_id(self) -> str:
        return self.start.session_id

    @property
    def user(self) -> str:
        return self.start.user

    def audit_data(self) -> dict[str, object]:
        data: dict[str, object] = {
            **self.start.audit_data(),
            **self.details,
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
            "duration_s": round(self.duration_s, 6),
            "exit_status": self.exit_status,
            "error": self.error,
        }
        if self.cost_usd is not None:
            data["cost_usd"] = self.cost_usd
        if self.ended_at is not None:
            data["ended_at"] = self.ended_at
        return data
