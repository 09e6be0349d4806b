"""``ssh -J gateway host`` in recorded mode: an in-process SSH server per forward.

OpenSSH's jump opens ``direct-tcpip`` to the host and runs a second SSH session
inside it. In recorded mode the gateway answers that inner session itself: an
asyncssh server on one end of a socket pair (the other end is bridged to the
channel) presents a host certificate for the host's name from the gateway's
host CA, which users trust with one ``@cert-authority`` line. The user was
authenticated on the outer hop, so the inner hop needs no second login; the
inner user name is the remote account, checked by policy like everything else.

Local forwards inside the session (editors forward to the host's own loopback)
are re-originated over the gateway's connection to the host when the role
allows them (:func:`gateway.domain.policy.forwards.decide_forward`: listed ports only,
never the host's SSH port), and audited as open/close with bytes each way. A
forward opens only once its ``forward.open`` event is durable (fail closed).
Remote forwards (``-R``) the role allows are opened on the host over the same
connection (``forward.listen``/``forward.unlisten``, each accepted connection a
forward like ``-L``). ``ssh -A`` is decided by the session it was asked on
(:class:`gateway.edges.ssh.recorded.RecordedSession`: relayed when the role allows it).
UNIX socket forwards are refused here with their reason, and audited.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncssh
import structlog

from gateway.adapters.sshcompat import ServerConnection, serve_on_socket
from gateway.domain.models import AccessRequest, Decision, Host, Mode, Principal
from gateway.domain.policy.forwards import (
    ForwardKind,
    ForwardRequest,
    decide_forward,
    ssh_ports_of,
)
from gateway.domain.policy.rules import default_account, evaluate
from gateway.edges.ssh.recorded import RecordedSession, Resolution, Target
from gateway.edges.ssh.restrictions import LoginRestrictions
from gateway.errors import GatewayError
from gateway.ports import append_within
from gateway.services.envprotocol import ENV_COMMAND
from gateway.services.envpush import EnvSession
from gateway.services.sessions.authority import DISCONNECT_GRACE_S
from gateway.services.sessions.context import Authority, FrontContext
from gateway.services.sessions.limits import channel_refusal, limit_env

log = structlog.get_logger("gpuhop.inner")


class _Pipe(asyncssh.SSHTCPSession[bytes]):
    """One side of a channel-to-channel TCP forward."""

    def __init__(self, forward: _Forward, side: str) -> None:
        self._fwd = forward
        self._side = side
        self.chan: asyncssh.SSHTCPChannel[bytes] | None = None

    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        self.chan = chan
        self._fwd.opened(self._side)

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self._fwd.relay(self._side, data)

    def eof_received(self) -> bool:
        self._fwd.eof(self._side)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._fwd.closed(self._side)

    def pause_writing(self) -> None:
        self._fwd.pause(self._side)

    def resume_writing(self) -> None:
        self._fwd.resume(self._side)


class _Forward:
    """A user channel and a host channel joined, counting bytes each way."""

    def __init__(self, ctx: FrontContext, principal: Principal, host: Host, dest: str) -> None:
        self.ctx = ctx
        self.principal = principal
        self.host = host
        self.dest = dest
        self.id = uuid.uuid4().hex[:16]
        self.user = _Pipe(self, "user")
        self.up = _Pipe(self, "host")
        self.bytes = {"user": 0, "host": 0}
        self.started = time.monotonic()
        self._done = False
        self._held = False
        self._entry: Any = None
        self.on_done: Any = None  # frees the session's forward slot

    def opened(self, side: str) -> None:
        # The side that opens first may speak first (an SSH banner, a server
        # greeting) before the other side's channel is confirmed: hold its data
        # in its own SSH window (bounded) rather than dropping it.
        mine = self.user if side == "user" else self.up
        if self._other(side).chan is None and mine.chan is not None:
            mine.chan.pause_reading()
            self._held = True
        elif self._held:
            self._held = False
            held = self._other(side).chan
            if held is not None:
                held.resume_reading()

    def _other(self, side: str) -> _Pipe:
        return self.up if side == "user" else self.user

    def relay(self, side: str, data: bytes) -> None:
        self.bytes[side] += len(data)
        chan = self._other(side).chan
        if chan is not None:
            with contextlib.suppress(BrokenPipeError):
                chan.write(data)

    def eof(self, side: str) -> None:
        chan = self._other(side).chan
        if chan is not None:
            with contextlib.suppress(BrokenPipeError):
                chan.write_eof()

    def pause(self, side: str) -> None:
        chan = self._other(side).chan
        if chan is not None:
            chan.pause_reading()

    def resume(self, side: str) -> None:
        chan = self._other(side).chan
        if chan is not None:
            chan.resume_reading()

    def closed(self, side: str) -> None:
        chan = self._other(side).chan
        if chan is not None:
            chan.close()
        self.finish()

    def abandon(self) -> None:
        """Never opened (its ``forward.open`` was not written): free its slot, audit nothing."""
        if not self._done:
            self._done = True
            if self.on_done is not None:
                self.on_done()

    def finish(self, error: str = "") -> None:
        """Release the host connection and audit the close, once (every durable
        ``forward.open`` gets its ``forward.close``, a failed connect included)."""
        if self._done:
            return
        self._done = True
        if self.on_done is not None:
            self.on_done()
        if self._entry is not None:
            self.ctx.pool.release(self._entry)
        data: dict[str, object] = {
            "forward_id": self.id,
            "user": self.principal.user,
            "host": self.host.name,
            "dest": self.dest,
            "bytes_up": self.bytes["user"],
            "bytes_down": self.bytes["host"],
            "duration_s": round(time.monotonic() - self.started, 6),
        }
        if error:
            data["error"] = error
        self.ctx.audit_soon("forward.close", self.principal.user, data)


class _Notice(asyncssh.SSHServerSession[bytes]):
    """A session that only says why it cannot run, then exits non-zero."""

    def __init__(self, message: str, status: int = 1) -> None:
        self._message = message
        self._status = status
        self._chan: asyncssh.SSHServerChannel[bytes] | None = None

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self._chan = chan

    def pty_requested(self, *args: object) -> bool:
        return True

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        return True

    def session_started(self) -> None:
        assert self._chan is not None
        self._chan.write(f"gpuhop: {self._message}\r\n".encode(), asyncssh.EXTENDED_DATA_STDERR)
        self._chan.exit(self._status)


class InnerServer(asyncssh.SSHServer):
    """The inner hop of a recorded ``ssh -J``: user already known, account = login name."""

    def __init__(self, ctx: FrontContext, jump: Jump, host: Host) -> None:
        self._ctx = ctx
        self._conn: asyncssh.SSHServerConnection | None = None
        self._jump = jump
        self._principal = jump.principal  # the latest answer of jump.authority, for audit
        self._host = host
        self._account = ""
        self._sessions: weakref.WeakKeyDictionary[
            asyncssh.SSHServerChannel[bytes], RecordedSession
        ] = weakref.WeakKeyDictionary()  # by channel, for ssh -A

    def begin_auth(self, username: str) -> bool:
        self._account = username
        return False  # authenticated on the outer hop

    def auth_completed(self) -> None:
        # The outer login's certificate restrictions hold here as on the direct form.
        assert self._conn is not None
        self._jump.restrictions.apply(self._conn)

    def _decide(self) -> tuple[bool, str, str]:
        """Ask the one authority now: the outer connection, against the current directory."""
        principal, why = self._jump.authority.current_principal()
        if principal is None:
            return False, why, ""
        self._principal = principal
        host = self._ctx.inventory.host(self._host.name)
        if host is None:
            return False, f"host {self._host.name} was removed from the inventory", ""
        self._host = host
        decision = evaluate(principal, AccessRequest(host, Mode.RECORDED, account=self._account))
        return decision.allowed, decision.reason, decision.role

    def session_requested(self) -> Any:
        generation = self._ctx.generation
        allowed, reason, role = self._decide()
        too_many = channel_refusal(self._conn, self._ctx.max_channels)
        if too_many:
            allowed, reason = False, too_many
        if not allowed:
            self._ctx.audit_soon(
                "channel.deny",
                self._principal.user,
                {
                    "user": self._principal.user,
                    "source": self._principal.source,
                    "request": "session",
                    "host": self._host.name,
                    "account": self._account,
                    "dest": f"{self._account}@{self._host.name}",
                    "reason": reason,
                },
                scope=self._principal.source,
            )
            if too_many:
                raise asyncssh.ChannelOpenError(asyncssh.OPEN_RESOURCE_SHORTAGE, too_many)
            return _Notice(f"denied: {reason}", 255)
        target = Target(
            self._principal,
            self._host,
            self._account,
            role,
            "jump",
            authority=self._jump.authority,
            generation=generation,
            jump=self._jump.id,
        )
        assert self._conn is not None
        chan: asyncssh.SSHServerChannel[bytes] = self._conn.create_server_channel()
        limit_env(chan, self._ctx.max_env, self._env_refused)
        session = self._sessions[chan] = RecordedSession(self._ctx, target)
        return chan, session

    def _env_refused(self, reason: str) -> None:
        p = self._principal
        data = {
            "user": p.user,
            "source": p.source,
            "request": "env",
            "host": self._host.name,
            "dest": f"{self._account}@{self._host.name}",
            "reason": reason,
        }
        self._ctx.audit_soon("channel.deny", p.user, data, scope=p.source)

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> tuple[asyncssh.SSHTCPChannel[bytes], Any]:
        decision = self._forward_decision(ForwardKind.LOCAL, dest_host, dest_port)
        dest = f"{dest_host}:{dest_port}"
        reason = channel_refusal(self._conn, self._ctx.max_channels)
        reason = reason or (decision.reason if not decision.allowed else self._no_slot())
        if reason:
            self._audit_refusal(ForwardKind.LOCAL, dest, reason)
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, reason)
        fwd = self._slotted(_Forward(self._ctx, self._principal, self._host, dest))
        conn = self._conn
        assert conn is not None
        chan = conn.create_tcp_channel(window=self._ctx.window, max_pktsize=self._ctx.max_packet)
        return chan, self._open_forward(fwd, decision, dest_host, dest_port)

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn

    def _no_slot(self) -> str:
        """Why one more forward may not open in this session, or "" (the bound)."""
        limit = self._ctx.max_forwards_per_session
        if getattr(self, "_forwards", 0) >= limit:
            return f"at most {limit} forwards may be open at once in one session"
        return ""

    def _take_slot(self) -> Any:
        """Count one more open forward; returns the function that frees it (once)."""
        self._forwards = getattr(self, "_forwards", 0) + 1
        taken = [True]

        def free() -> None:
            if taken.pop() if taken else False:
                self._forwards -= 1

        return free

    def _slotted(self, fwd: _Forward) -> _Forward:
        fwd.on_done = self._take_slot()
        return fwd

    def _forward_decision(self, kind: ForwardKind, dest_host: str, dest_port: int) -> Decision:
        ssh_ports = ssh_ports_of(self._host, tuple(self._ctx.inventory.hosts))
        request = ForwardRequest(kind, self._host, dest_host, dest_port, ssh_ports)
        return decide_forward(self._principal, self._account, request)

    def _audit_refusal(self, kind: ForwardKind, dest: str, reason: str) -> None:
        self._ctx.audit_soon(
            "channel.deny",
            self._principal.user,
            {
                "user": self._principal.user,
                "source": self._principal.source,
                "request": kind.value,
                "host": self._host.name,
                "account": self._account,
                "dest": dest,
                "reason": reason,
            },
            scope=self._principal.source,
        )
        log.info("forward refused", user=self._principal.user, dest=dest, reason=reason)

    async def _open_forward(
        self, fwd: _Forward, decision: Decision, dest_host: str, dest_port: int
    ) -> _Pipe:
        try:  # durable before anything reaches the host or the user: fail closed
            await append_within(
                self._ctx.audit,
                "forward.open",
                self._principal.user,
                {
                    "forward_id": fwd.id,
                    "user": self._principal.user,
                    "source": self._principal.source,
                    "host": self._host.name,
                    "account": self._account,
                    "dest": fwd.dest,
                    "role": decision.role,
                },
                self._ctx.audit_start_timeout_s,
            )
        except Exception as exc:
            fwd.abandon()
            log.error("audit write failed; refusing forward", dest=fwd.dest, error=str(exc))
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_RESOURCE_SHORTAGE, "audit log unavailable; forward refused"
            ) from exc
        pool = self._ctx.pool
        try:
            entry = await pool.acquire(self._principal.user, self._host, self._account)
        except GatewayError as exc:
            fwd.finish(str(exc))
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, str(exc)) from exc
        fwd._entry = entry
        try:
            await entry.conn.create_connection(lambda: fwd.up, dest_host, dest_port)
        except (asyncssh.Error, OSError) as exc:
            reason = getattr(exc, "reason", "") or str(exc)
            fwd.finish(reason)
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, reason) from exc
        return fwd.user

    def server_requested(
        self, listen_host: str, listen_port: int
    ) -> bool | Awaitable[asyncssh.SSHListener | bool]:
        decision = self._forward_decision(ForwardKind.REMOTE, listen_host, listen_port)
        reason = decision.reason if not decision.allowed else self._no_slot()
        if reason:
            self._audit_refusal(ForwardKind.REMOTE, f"{listen_host}:{listen_port}", reason)
            return False
        return self._listen_remote(decision, listen_host, listen_port, self._take_slot())

    async def _listen_remote(
        self, decision: Decision, listen_host: str, listen_port: int, free: Any
    ) -> asyncssh.SSHListener | bool:
        try:
            listener = await self._open_listener(decision, listen_host, listen_port, free)
        except BaseException:
            free()
            raise
        if listener is None:
            free()
            return False
        return listener

    async def _open_listener(
        self, decision: Decision, listen_host: str, listen_port: int, free: Any
    ) -> asyncssh.SSHListener | None:
        """``ssh -R``: the same listener on the host, over the gateway's connection to it;
        each connection it accepts is a forward to the user, audited like ``-L``."""
        dest = f"{listen_host}:{listen_port}"
        data: dict[str, object] = {
            "user": self._principal.user,
            "source": self._principal.source,
            "host": self._host.name,
            "account": self._account,
            "dest": dest,
            "role": decision.role,
        }
        try:  # fail closed, as for -L
            await append_within(
                self._ctx.audit,
                "forward.listen",
                self._principal.user,
                data,
                self._ctx.audit_start_timeout_s,
            )
        except Exception as exc:
            log.error("audit write failed; refusing remote forward", dest=dest, error=str(exc))
            return None
        pool = self._ctx.pool
        try:
            entry = await pool.acquire(self._principal.user, self._host, self._account)
        except GatewayError as exc:
            self._ctx.audit_soon(
                "forward.unlisten", self._principal.user, {**data, "error": str(exc)}
            )
            return None
        try:
            upstream = await entry.conn.create_server(
                lambda orig_host, orig_port: self._accept_remote(
                    listen_host, listen_port, orig_host, orig_port
                ),
                listen_host,
                listen_port,
            )
        except (asyncssh.Error, OSError) as exc:
            pool.release(entry)
            reason = getattr(exc, "reason", "") or str(exc) or "the host refused to listen"
            self._ctx.audit_soon(
                "forward.unlisten", self._principal.user, {**data, "error": reason}
            )
            return None

        def closed() -> None:
            free()
            pool.release(entry)
            self._ctx.audit_soon("forward.unlisten", self._principal.user, data)

        return _RemoteListener(upstream, closed)

    def _accept_remote(
        self, listen_host: str, listen_port: int, orig_host: str, orig_port: int
    ) -> Awaitable[_Pipe]:
        dest = f"{listen_host}:{listen_port}"
        reason = self._no_slot()
        if reason:
            self._audit_refusal(ForwardKind.REMOTE, dest, reason)
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, reason)
        fwd = self._slotted(_Forward(self._ctx, self._principal, self._host, dest))
        return self._open_remote_forward(fwd, listen_host, listen_port, orig_host, orig_port)

    async def _open_remote_forward(
        self, fwd: _Forward, listen_host: str, listen_port: int, orig_host: str, orig_port: int
    ) -> _Pipe:
        try:
            await append_within(
                self._ctx.audit,
                "forward.open",
                self._principal.user,
                {
                    "forward_id": fwd.id,
                    "user": self._principal.user,
                    "source": self._principal.source,
                    "host": self._host.name,
                    "account": self._account,
                    "dest": fwd.dest,
                    "remote": True,
                    "orig": f"{orig_host}:{orig_port}",
                },
                self._ctx.audit_start_timeout_s,
            )
        except Exception as exc:
            fwd.abandon()
            log.error("audit write failed; refusing forward", dest=fwd.dest, error=str(exc))
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_RESOURCE_SHORTAGE, "audit log unavailable; forward refused"
            ) from exc
        conn = self._conn
        assert conn is not None
        try:
            await conn.create_connection(
                lambda: fwd.user,
                listen_host,
                listen_port,
                orig_host,
                orig_port,
                window=self._ctx.window,
                max_pktsize=self._ctx.max_packet,
            )
        except (asyncssh.Error, OSError) as exc:
            reason = getattr(exc, "reason", "") or str(exc)
            fwd.finish(reason)
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, reason) from exc
        return fwd.up

    def agent_requested(self, chan: asyncssh.SSHServerChannel[bytes] | None) -> None:
        """``ssh -A`` on ``chan``: its recorded session decides; on any other channel refused."""
        session = self._sessions.get(chan) if chan is not None else None
        if session is not None:
            session.agent_requested()
            return
        decision = self._forward_decision(ForwardKind.AGENT, "", 0)
        reason = decision.reason if not decision.allowed else "no recorded session asked for it"
        self._audit_refusal(ForwardKind.AGENT, "", reason)

    def unix_connection_requested(self, dest_path: str) -> bool:
        reason = self._forward_decision(ForwardKind.STREAMLOCAL, dest_path, 0).reason
        self._audit_refusal(ForwardKind.STREAMLOCAL, dest_path, reason)
        raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, reason)

    def unix_server_requested(self, listen_path: str) -> bool:
        reason = self._forward_decision(ForwardKind.STREAMLOCAL, listen_path, 0).reason
        self._audit_refusal(ForwardKind.STREAMLOCAL, listen_path, reason)
        return False


@dataclass(eq=False)
class Jump:
    """One recorded ``ssh -J`` hop: registered so the kill API and revocation reach it.

    ``authority`` is the outer connection; ``close`` ends the inner hop and the
    channel it runs in, and with them every session inside.
    """

    id: str
    authority: Authority
    principal: Principal
    restrictions: LoginRestrictions
    conn: asyncssh.SSHServerConnection | None = None
    channel_close: Callable[[], None] = lambda: None
    reason: str = ""

    def close(self, message: str = "this jump was ended by the gateway") -> None:
        """Disconnect the inner hop with one line why, then close its channel."""
        self.reason = self.reason or message
        conn = self.conn
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.disconnect(asyncssh.DISC_BY_APPLICATION, f"gpuhop: {self.reason}")
        loop = asyncio.get_running_loop()
        loop.call_later(DISCONNECT_GRACE_S, self.channel_close)


class _RemoteListener(asyncssh.SSHListener):
    """The user's view of a ``-R`` listener: closing it closes the host's, once."""

    def __init__(self, upstream: asyncssh.SSHListener, on_close: Any) -> None:
        super().__init__()
        self._upstream = upstream
        self._on_close = on_close

    def get_port(self) -> int:
        return self._upstream.get_port()

    def close(self) -> None:
        self._upstream.close()
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close()

    async def wait_closed(self) -> None:
        await self._upstream.wait_closed()


class InnerConnection(ServerConnection):
    """The inner hop's connection: asyncssh's server connection with audited agent requests."""


async def run_inner(
    ctx: FrontContext,
    sock: Any,
    jump: Jump,
    host: Host,
    options: asyncssh.SSHServerConnectionOptions,
) -> None:
    """Serve the inner hop on ``sock`` until the user's session ends."""
    key, cert = ctx.host_certificate(host.name)
    try:
        inner = await asyncssh.SSHServerConnectionOptions.construct(
            options,
            server_factory=lambda: InnerServer(ctx, jump, host),
            server_host_keys=[(key, cert)],
        )
        # The connection class that audits ``ssh -A``.
        conn = await serve_on_socket(lambda: InnerConnection.for_listener(inner), sock)
        jump.conn = conn
        if jump.reason:  # ended while the inner hop was starting
            jump.close()
        await conn.wait_closed()
    except (asyncssh.Error, OSError) as exc:
        log.info("inner session ended", host=host.name, error=str(exc))
    except asyncio.CancelledError:
        if jump.conn is not None:
            jump.conn.abort()
        raise


def resolver_for(ctx: FrontContext, authority: Authority, fixed: tuple[str, str] | None) -> Any:
    """Decide what a session on the gateway itself is: a host, a menu, or a refusal.

    ``fixed`` is (host, account) from a ``user+host[+account]`` login; otherwise
    the first word of the command names the host (``ssh gw sg-1 nvidia-smi``),
    or is ``gpuhop-env`` (:mod:`gateway.services.envpush`). The principal is asked
    of ``authority`` when the command is known, against the directory of then.
    """

    async def resolve(command: str | None) -> Resolution:
        generation = ctx.generation
        principal, why = authority.current_principal()
        if principal is None:
            return Resolution(message=f"gpuhop: denied: {why}\n", exit_status=255)
        if fixed is not None:
            host_name, account = fixed
            rest = command
        else:
            words = (command or "").split(maxsplit=1)
            if words and words[0] == ENV_COMMAND:  # image pushes, fanned out here
                args = words[1] if len(words) > 1 else ""
                service = EnvSession(ctx, principal, args, default_account)
                return Resolution(service=service, principal=principal)
            if not words or ctx.inventory.host(words[0]) is None:
                menu = menu_text(ctx, principal, words[0] if words else "")
                return Resolution(message=menu, principal=principal)
            host_name, account = words[0], ""
            rest = words[1] if len(words) > 1 else None
        host = ctx.inventory.host(host_name)
        if host is None:
            return Resolution(
                message=f"gpuhop: denied: unknown host {host_name}\n",
                exit_status=255,
                principal=principal,
            )
        if not account:
            account = default_account(principal, host)
        decision = evaluate(principal, AccessRequest(host, Mode.RECORDED, account=account))
        if not decision.allowed:
            ctx.audit_soon(
                "channel.deny",
                principal.user,
                {
                    "user": principal.user,
                    "source": principal.source,
                    "request": "session",
                    "host": host.name,
                    "account": account,
                    "dest": f"{account}@{host.name}",
                    "reason": decision.reason,
                },
                scope=principal.source,
            )
            return Resolution(
                message=f"gpuhop: denied: {decision.reason}\n", exit_status=255, principal=principal
            )
        target = Target(
            principal,
            host,
            account,
            decision.role,
            "direct",
            authority=authority,
            generation=generation,
        )
        return Resolution(target, rest)

    return resolve


def menu_text(ctx: FrontContext, principal: Principal, asked: str) -> str:
    allowed = [
        h
        for h in ctx.inventory.hosts
        if evaluate(principal, AccessRequest(h, Mode.RECORDED)).allowed
        or evaluate(principal, AccessRequest(h, Mode.PASSTHROUGH)).allowed
    ]
    lines = [f"gpuhop gateway: hello {principal.user}."]
    if asked:
        lines.append(f"{asked!r} is not a host here.")
    lines += [
        "Reach a host with:",
        "  ssh -J USER@GATEWAY ACCOUNT@HOST      (jump; recorded where policy says so)",
        "  ssh -t USER@GATEWAY HOST [COMMAND]    (recorded)",
        "  ssh USER+HOST@GATEWAY [COMMAND]       (recorded)",
    ]
    if allowed:
        lines.append("Hosts you may use:")
        lines += [f"  {h.name:<16} {h.region:<6} {h.gpu_count}x {h.gpu_model}" for h in allowed]
    else:
        lines.append("No host is granted to you; ask an admin.")
    return "\n".join(lines) + "\n"
