"""Audited agent-forwarding requests: the one asyncssh hook the gateway needs for ``ssh -A``.

asyncssh answers ``auth-agent-req@openssh.com`` inside the connection
(``create_agent_listener``) and tells the application nothing, so a refused
``ssh -A`` would leave no audit event. Connections built on
:class:`AgentRequestHook` never create an agent listener; they tell their
server object (``agent_requested()``) so it can audit the refusal with its
reason. ``tests/unit/test_forward_policy.py`` pins the asyncssh method this overrides.
"""

from __future__ import annotations

import asyncssh


class AgentRequestHook(asyncssh.SSHServerConnection):
    """An asyncssh server connection that refuses agent forwarding and says so to its owner."""

    async def create_agent_listener(self) -> bool:
        hook = getattr(self._owner, "agent_requested", None)
        if callable(hook):
            hook()
        return False
