"""Agent-forwarding requests: the one asyncssh hook the gateway needs for ``ssh -A``.

asyncssh answers ``auth-agent-req@openssh.com`` inside the connection
(``create_agent_listener``, one listener per connection in the system temporary
directory) and tells the application nothing. Connections built on
:class:`AgentRequestHook` never create that listener; they tell their server
object which session channel asked (``agent_requested(chan)``), and the
session decides by policy once it knows its host, audits the answer, and relays
the agent through a socket of its own (:mod:`gateway.ssh.agentrelay`).

asyncssh runs the request as a task of the channel's
``_finish_agent_req_request``; the channel is that coroutine's ``self``
(:func:`requesting_channel`). When it cannot be found the request is refused.
The reply is always "failure": OpenSSH asks without wanting one.
``tests/unit/test_forward_policy.py`` and ``tests/unit/test_agent_relay.py`` pin
the asyncssh names this relies on.
"""

from __future__ import annotations

import asyncio

import asyncssh


def requesting_channel() -> asyncssh.SSHServerChannel[bytes] | None:
    """The session channel whose agent request asyncssh is answering in this task."""
    task = asyncio.current_task()
    frame = getattr(task.get_coro(), "cr_frame", None) if task is not None else None
    chan = frame.f_locals.get("self") if frame is not None else None
    return chan if isinstance(chan, asyncssh.SSHServerChannel) else None


class AgentRequestHook(asyncssh.SSHServerConnection):
    """An asyncssh server connection that hands agent requests to its owner, per channel."""

    async def create_agent_listener(self) -> bool:
        hook = getattr(self._owner, "agent_requested", None)
        if callable(hook):
            hook(requesting_channel())
        return False
