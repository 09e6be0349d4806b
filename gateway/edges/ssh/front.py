"""The SSH front: authentication, rate limiting, and channel requests.

Every connection gets one :class:`FrontServer`. It authenticates registered
public keys and certificates from the gateway's user CA, refuses and audits
everything else, and turns channel requests into policy checks before anything
reaches a host. ``direct-tcpip`` is answered only for an inventory host's SSH
port (passthrough); the gateway is never an open proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import socket
import time
import uuid
import weakref
from collections.abc import Awaitable
from typing import Any

import asyncssh
import structlog

from gateway.adapters.keys import key_id_user, public_line
from gateway.adapters.sshcompat import ServerConnection, certificate_key_id, check_user_certificate
from gateway.domain.models import AccessRequest, Host, Mode, Principal
from gateway.domain.policy.passthrough import passthrough_request
from gateway.domain.policy.rules import evaluate
from gateway.domain.sessionevents import SessionEnd, SessionStart
from gateway.edges.ssh.inner import Jump, resolver_for, run_inner
from gateway.edges.ssh.passthrough import PassthroughSession, RelayStats
from gateway.edges.ssh.recorded import NO_AGENT_HERE, RecordedSession
from gateway.edges.ssh.restrictions import LoginRestrictions
from gateway.errors import UpstreamError
from gateway.services.sessions.authority import DISCONNECT_GRACE_S
from gateway.services.sessions.context import JUMP_PREFIX, ActiveSession, FrontContext
from gateway.services.sessions.limits import (
    Refused,
    Startup,
    channel_refusal,
    limit_env,
    turn_away_bytes,
)
from gateway.services.sessions.passadmit import PassthroughAdmission, admit_passthrough

log = structlog.get_logger("gpuhop.ssh")


_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)  # Linux only
LINGER_S = 2.0  # how long a refused connection may stay open for its reason to be read


class FrontConnection(ServerConnection):
    """Checks user certificates itself so each refusal carries its real reason.

    asyncssh would reject an expired certificate or a wrong principal silently;
    the gateway must audit why. It also insists that the certificate's key id
    names the same gpuhop user as the login, since principals also list the
    remote accounts a user may use on hosts. The gateway never negotiates CBC
    (see algorithms.py), so it drops asyncssh's empty ``SSH_MSG_IGNORE`` packets.
    """

    drop_empty_ignore = True

    _sock: socket.socket | None = None
    _quickacks = 0  # the handshake's first reads only (the setsockopt is not free)
    ctx: FrontContext | None = None  # set by the listener's factory
    _startup: Startup | None = None  # a place among unauthenticated connections
    _turned_away = False  # refused before the SSH handshake: asyncssh never ran
    _linger: asyncio.TimerHandle | None = None  # closes a refused connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.ctx is not None:
            peer = transport.get_extra_info("peername") or ("", 0)
            place = self.ctx.startups.admit(str(peer[0]))
            if isinstance(place, Refused):
                self._turn_away(transport, f"{peer[0]}:{peer[1]}", place)
                return
            self._startup = place
        super().connection_made(transport)
        self._sock = transport.get_extra_info("socket")
        self._quickacks = 32 if self._sock is not None else 0

    def _turn_away(self, transport: asyncio.BaseTransport, source: str, why: Refused) -> None:
        # Refused before asyncssh runs: no key exchange, no FrontServer. Audited
        # once per limit per 10 s, however many are refused.
        self._turned_away = True
        assert self.ctx is not None
        self.ctx.audit_soon(
            "connection.refused",
            "gateway",
            {"source": source, "reason": why.reason, "limit": why.limit},
            scope="startups",
            key=why.limit,
            window_s=10.0,
        )
        with contextlib.suppress(OSError):
            transport.write(turn_away_bytes(self.server_version, why.reason))  # type: ignore[attr-defined]
        # Closing at once would answer the client's KEXINIT with a reset, which
        # discards the reason unread: linger (bounded in number and time) instead.
        if self.ctx.startups.begin_linger():
            self._linger = asyncio.get_running_loop().call_later(LINGER_S, transport.close)
        else:
            transport.close()

    def authenticated(self) -> None:
        """Leave the unauthenticated count (auth succeeded)."""
        if self._startup is not None:
            self._startup.done()

    def connection_lost(self, exc: Exception | None = None) -> None:
        if self._turned_away:
            if self._linger is not None and self.ctx is not None:
                self._linger.cancel()
                self.ctx.startups.end_linger()
            return
        self.authenticated()
        super().connection_lost(exc)

    def eof_received(self) -> None:
        if not self._turned_away:
            super().eof_received()

    def data_received(self, data: bytes, datatype: asyncssh.DataType = None) -> None:
        if self._turned_away:
            return
        # During the handshake, acknowledge small packets at once: OpenSSH sends
        # NEWKEYS and the service request as two small writes with Nagle on, and a
        # delayed ACK here would stall the handshake by 40 ms.
        if self._quickacks and _QUICKACK is not None and len(data) < 4096:
            self._quickacks -= 1
            with contextlib.suppress(OSError):
                self._sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)  # type: ignore[union-attr]
        super().data_received(data, datatype)

    def key_user(self, username: str) -> str:
        return split_login(username)[0]

    def certificate_refused(self, username: str, cert: asyncssh.SSHCertificate) -> bool:
        owner = self.owner
        if not isinstance(owner, FrontServer):
            return False
        reason = owner.check_certificate(username, cert)
        if reason:
            owner.note_failure(reason)
        return bool(reason)


class FrontServer(asyncssh.SSHServer):
    """One user connection to the gateway."""

    def __init__(self, ctx: FrontContext) -> None:
        self._ctx = ctx
        self._conn: asyncssh.SSHServerConnection | None = None
        self._source = ""
        self._address = ""
        self._username = ""
        self._failures: list[str] = []
        self._cert_id = ""
        self._fingerprint = ""
        self._method = ""
        self._key_line = ""
        self.principal: Principal | None = None
        self._fixed: tuple[str, str] | None = None
        self._revoked = ""
        self._sessions: weakref.WeakKeyDictionary[
            asyncssh.SSHServerChannel[bytes], RecordedSession
        ] = weakref.WeakKeyDictionary()  # by channel, for ssh -A

    # -- connection lifecycle --

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        peer = conn.get_extra_info("peername") or ("", 0)
        self._address = str(peer[0])
        self._source = f"{peer[0]}:{peer[1]}"
        self._ctx.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._ctx.connections.discard(self)
        self._ctx.audit_scope_closed(self._source)
        if self.principal is None and self._username:
            # Under a ban failures are counted, not audited one by one; see ratelimit.py.
            limiter = self._ctx.limiter
            if not limiter.banned(self._address, self._username):
                reasons = self._failures or ["no acceptable key or certificate offered"]
                self._ctx.audit_soon(
                    "auth.fail",
                    self._username,
                    {"user": self._username, "source": self._source, "reasons": reasons},
                )
            if limiter.record_failure(self._address, self._username):
                self._ctx.audit_soon(
                    "auth.ratelimited",
                    self._username,
                    {"source": self._address, "user": self._username},
                )

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    # -- authentication --

    def begin_auth(self, username: str) -> bool:
        self._username, self._fixed = split_login(username)
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def note_failure(self, reason: str) -> None:
        if reason not in self._failures:
            self._failures.append(reason)

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        user = self._ctx.inventory.user(username)
        line = public_line(key)
        if user is None:
            self.note_failure(f"unknown user {username!r}")
            return False
        if line not in {_strip_comment(k) for k in user.keys}:
            self.note_failure(f"key {key.get_fingerprint()} is not registered to {username}")
            return False
        self._method = "publickey"
        self._fingerprint = key.get_fingerprint()
        self._key_line = line
        return True

    def validate_ca_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        # check_certificate already ran (FrontConnection); this is asyncssh's own gate.
        return self._ctx.user_ca.trusts(key)

    def check_certificate(self, username: str, cert: asyncssh.SSHCertificate) -> str:
        """Return why ``cert`` may not log in as ``username``, or "" when it may."""
        signing_key = getattr(cert, "signing_key", None)
        if signing_key is None or not self._ctx.user_ca.trusts(signing_key):
            return "certificate not signed by the gateway user CA"
        principals = tuple(getattr(cert, "principals", ()))
        if not principals:
            return "certificate has no principals"
        try:
            check_user_certificate(cert, username)
        except ValueError as exc:
            return f"certificate rejected: {str(exc).lower()} for {username}"
        allowed = getattr(cert, "options", {}).get("source-address")
        if allowed and not _allowed_from(self._address, allowed):
            shown = ",".join(str(n) for n in allowed)
            return f"certificate not valid from {self._address} (source-address {shown})"
        key_id = certificate_key_id(cert)
        if key_id_user(key_id) != username:
            return f"certificate key id {key_id!r} does not name user {username}"
        if self._ctx.inventory.user(username) is None:
            return f"unknown user {username!r}"
        self._method = "certificate"
        self._cert_id = key_id
        self._fingerprint = cert.key.get_fingerprint()
        return ""

    def auth_completed(self) -> None:
        user = self._ctx.inventory.user(self._username)
        assert user is not None  # auth succeeded only for inventory users
        self.principal = Principal(
            user=user.name,
            roles=self._ctx.inventory.roles_of(user),
            team=user.team,
            key_fingerprint=self._fingerprint,
            cert_id=self._cert_id,
            source=self._source,
        )
        self._ctx.limiter.record_success(self._address, self._username)
        if isinstance(self._conn, FrontConnection):
            self._conn.authenticated()
        self._ctx.audit_soon(
            "auth.ok",
            user.name,
            {
                "user": user.name,
                "source": self._source,
                "method": self._method,
                "fingerprint": self._fingerprint,
                "cert_id": self._cert_id,
            },
        )

    # -- channels --

    def current_principal(self) -> tuple[Principal | None, str]:
        """The principal as the directory says now, or None and why it may not go on.

        The one authority every channel, inner hop and forward of this connection
        asks (:class:`gateway.services.sessions.context.Authority`). The directory may have
        changed since this connection logged in: a user or key removed since then
        opens nothing more (and :mod:`gateway.services.sessions.authority` closes what is open);
        roles granted or revoked apply at once.
        """
        assert self.principal is not None
        if self._revoked:
            return None, self._revoked
        user = self._ctx.inventory.user(self.principal.user)
        if user is None:
            return None, f"user {self.principal.user} was removed"
        if self._method == "publickey" and self._key_line not in {
            _strip_comment(k) for k in user.keys
        }:
            return None, f"key {self._fingerprint} is no longer registered to {user.name}"
        roles = self._ctx.inventory.roles_of(user)
        if roles != self.principal.roles or user.team != self.principal.team:
            self.principal = dataclasses.replace(self.principal, roles=roles, team=user.team)
        return self.principal, ""

    def revoke(self, why: str) -> None:
        """The directory no longer knows this login: end the connection, saying why.

        Its sessions and jumps were ended by the same sweep (each with a notice);
        the disconnect waits a moment so those notices reach the user first.
        """
        if self._revoked or self._conn is None:
            return
        self._revoked = why
        user = self.principal.user if self.principal else self._username
        self._ctx.audit_soon(
            "connection.revoked", user, {"user": user, "source": self._source, "reason": why}
        )
        log.info("connection revoked", user=user, source=self._source, reason=why)
        conn = self._conn

        def disconnect() -> None:
            with contextlib.suppress(Exception):
                conn.disconnect(asyncssh.DISC_BY_APPLICATION, f"gpuhop: access revoked: {why}")

        asyncio.get_running_loop().call_later(DISCONNECT_GRACE_S, disconnect)

    def session_requested(
        self,
    ) -> tuple[asyncssh.SSHServerChannel[bytes], RecordedSession]:
        assert self.principal is not None
        principal, why = self.current_principal()
        too_many = channel_refusal(self._conn, self._ctx.max_channels)
        if too_many:
            self._refuse_channel("session", "", too_many)
        if principal is None:
            self._ctx.audit_soon(
                "channel.deny",
                self.principal.user,
                {
                    "user": self.principal.user,
                    "source": self._source,
                    "request": "session",
                    "dest": "",
                    "reason": why,
                },
                scope=self._source,
            )
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, why)
        self._ctx.audit_soon(
            "channel.request",
            self.principal.user,
            {"user": self.principal.user, "source": self._source, "request": "session"},
            scope=self._source,  # open/close loops: bounded rows (sessions audit their start)
            key="session",
        )
        assert self._conn is not None
        chan: asyncssh.SSHServerChannel[bytes] = self._conn.create_server_channel()
        limit_env(chan, self._ctx.max_env, lambda r: self._audit_refusal("env", "", r))
        session = RecordedSession(self._ctx, None, resolver_for(self._ctx, self, self._fixed))
        self._sessions[chan] = session
        return chan, session

    def _refuse_channel(self, request: str, dest: str, reason: str) -> None:
        self._audit_refusal(request, dest, reason)
        raise asyncssh.ChannelOpenError(asyncssh.OPEN_RESOURCE_SHORTAGE, reason)

    def _audit_refusal(
        self,
        request: str,
        dest: str,
        reason: str,
        host: Host | None = None,
        kind: str = "channel.deny",
    ) -> None:
        """Audit a refusal, coalesced per connection (a flood costs bounded rows)."""
        user = self.principal.user if self.principal else self._username
        data: dict[str, object] = {
            "user": user,
            "source": self._source,
            "request": request,
            "dest": dest,
            "reason": reason,
        }
        if host is not None:
            data["host"] = host.name
        self._ctx.audit_soon(kind, user, data, scope=self._source)
        log.info("denied", user=user, request=request, dest=dest, reason=reason)

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> tuple[asyncssh.SSHTCPChannel[bytes], Awaitable[PassthroughSession]]:
        # asyncssh would give the channel its default 2 MiB window; open it with ours.
        assert self._conn is not None
        too_many = channel_refusal(self._conn, self._ctx.max_channels)
        if too_many:
            self._refuse_channel("direct-tcpip", f"{dest_host}:{dest_port}", too_many)
        chan = self._conn.create_tcp_channel(
            window=self._ctx.window, max_pktsize=self._ctx.max_packet
        )
        return chan, self._forward(dest_host, dest_port)

    async def _forward(self, dest_host: str, dest_port: int) -> PassthroughSession:
        dest = f"{dest_host}:{dest_port}"
        generation = self._ctx.generation
        principal, why = self.current_principal()
        if principal is None:
            await self._deny("direct-tcpip", dest, why)
        assert principal is not None
        host = self._ctx.inventory.resolve_forward(dest_host, dest_port)
        if host is None:
            await self._deny("direct-tcpip", dest, f"{dest} is not an inventory host's SSH port")
        assert host is not None
        recorded = evaluate(principal, AccessRequest(host, Mode.RECORDED))
        if recorded.allowed:
            return await self._open_recorded_jump(principal, host, dest, generation)
        # Passthrough asks for the whole host (see gateway.domain.policy.passthrough).
        decision = evaluate(principal, passthrough_request(host))
        if not decision.allowed:
            await self._deny("direct-tcpip", dest, decision.reason, host)
        session_id = uuid.uuid4().hex[:16]
        admitted = await admit_passthrough(self._ctx, principal, host, session_id)
        if isinstance(admitted, str):
            await self._deny("direct-tcpip", dest, admitted, host)
        assert isinstance(admitted, PassthroughAdmission)
        relay, start = self._open_passthrough(
            principal, host, dest, decision.role, admitted, generation
        )
        try:
            await relay.connect(host.address, host.port, self._ctx.connect_timeout_s)
        except UpstreamError as exc:
            self._ctx.sessions.pop(session_id, None)
            admitted.end(self._ctx, 0)
            await self._audit_deny("direct-tcpip", dest, str(exc), host, kind="session.fail")
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, str(exc)) from exc
        # The start event is durable before any byte reaches the user: fail closed.
        try:
            await self._ctx.start_session(start)
        except Exception as exc:
            self._ctx.sessions.pop(session_id, None)
            admitted.end(self._ctx, 0)
            relay.abandon()
            log.error("audit write failed; refusing session", error=str(exc))
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_RESOURCE_SHORTAGE, "audit log unavailable; session refused"
            ) from exc
        return relay

    async def _open_recorded_jump(
        self, principal: Principal, host: Host, dest: str, generation: int
    ) -> PassthroughSession:
        """Answer the jump with the gateway's own SSH server for ``host`` (recorded mode).

        The jump is registered (``ctx.jumps``) so the kill API and revocation reach
        it; ending it ends every session inside.
        """
        assert self._conn is not None
        ctx = self._ctx
        ours, theirs = socket.socketpair()
        task: asyncio.Task[None] | None = None
        jump = Jump(
            JUMP_PREFIX + uuid.uuid4().hex[:15],
            self,
            principal,
            LoginRestrictions.of(self._conn),
        )
        audit: dict[str, object] = {
            "jump_id": jump.id,
            "user": principal.user,
            "source": self._source,
            "host": host.name,
            "dest": dest,
        }

        def on_close(stats: RelayStats) -> None:
            if task is not None and not task.done():
                task.cancel()
            ctx.jumps.pop(jump.id, None)
            ctx.audit_soon(
                "jump.close",
                principal.user,
                audit | {"duration_s": round(stats.duration_s, 6), "reason": jump.reason},
            )

        relay = PassthroughSession(on_close)

        def close_channel() -> None:
            if relay.chan is not None:
                relay.chan.close()

        jump.channel_close = close_channel
        await relay.connect_socket(ours)
        theirs.setblocking(False)
        ctx.audit_soon("jump.open", principal.user, audit)
        ctx.register(
            ActiveSession(
                jump.id,
                principal.user,
                host.name,
                Mode.RECORDED,
                self._source,
                time.time(),
                jump.close,
                authority=self,
                revoke=jump.close,
            ),
            generation,
        )
        task = asyncio.get_running_loop().create_task(
            run_inner(ctx, theirs, jump, host, ctx.inner_options)
        )
        log.debug("recorded jump", user=principal.user, host=host.name, dest=dest, jump=jump.id)
        return relay

    # Forwards that would make the gateway itself listen or reach local sockets are
    # never allowed; on a host they are the inner hop's to decide (gateway.edges.ssh.inner).
    def server_requested(self, listen_host: str, listen_port: int) -> Awaitable[bool]:
        return self._refuse_async(
            "tcpip-forward",
            f"{listen_host}:{listen_port}",
            "remote port forwarding on the gateway itself is not allowed",
        )

    def unix_server_requested(self, listen_path: str) -> Awaitable[bool]:
        return self._refuse_async(
            "streamlocal", listen_path, "UNIX socket forwarding is never allowed"
        )

    def unix_connection_requested(self, dest_path: str) -> bool:
        reason = "UNIX socket forwarding is never allowed"
        self._ctx.spawn(self._audit_deny("streamlocal", dest_path, reason))
        raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, reason)

    def agent_requested(self, chan: asyncssh.SSHServerChannel[bytes] | None) -> None:
        """``ssh -A`` on ``chan``: its recorded session decides once it knows its host."""
        session = self._sessions.get(chan) if chan is not None else None
        if session is not None:
            session.agent_requested()
            return
        self._ctx.spawn(self._refuse_async("auth-agent", "", NO_AGENT_HERE))

    async def _refuse_async(self, request: str, dest: str, reason: str) -> bool:
        await self._audit_deny(request, dest, reason)
        return False

    async def _audit_deny(
        self,
        request: str,
        dest: str,
        reason: str,
        host: Host | None = None,
        kind: str = "channel.deny",
    ) -> None:
        self._audit_refusal(request, dest, reason, host, kind)

    async def _deny(self, request: str, dest: str, reason: str, host: Host | None = None) -> None:
        await self._audit_deny(request, dest, reason, host)
        raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, reason)

    def _open_passthrough(
        self,
        principal: Principal,
        host: Host,
        dest: str,
        role: str,
        admitted: PassthroughAdmission,
        generation: int,
    ) -> tuple[PassthroughSession, SessionStart]:
        session_id = admitted.session_id
        details: dict[str, object] = {
            "fingerprint": principal.key_fingerprint,
            "cert_id": principal.cert_id,
            "role": role,
            "dest": dest,
            # The host holds the login to these: the certificate's ACCOUNT@HOST principals.
            "accounts": list(admitted.accounts),
            "gpu_indices": list(admitted.gpus),
        }
        if admitted.budget_warning:  # passthrough has no channel to tell the user itself
            details["budget_warning"] = admitted.budget_warning
        start = SessionStart(
            session_id,
            principal.user,
            host.name,
            host.region,
            Mode.PASSTHROUGH,
            source=self._source,
            gpus=len(admitted.gpus),
            details=details,
        )
        ctx = self._ctx

        def on_close(stats: RelayStats) -> None:
            ctx.sessions.pop(session_id, None)
            cost = admitted.end(ctx, stats.bytes_down)
            end = SessionEnd(
                start,
                bytes_up=stats.bytes_up,
                bytes_down=stats.bytes_down,
                duration_s=stats.duration_s,
                error=stats.error,
                cost_usd=cost,
            )
            ctx.end_session(end)

        relay = PassthroughSession(on_close)

        def close() -> None:
            if relay.chan is not None:
                relay.chan.close()

        ctx.register(
            ActiveSession(
                session_id,
                principal.user,
                host.name,
                Mode.PASSTHROUGH,
                self._source,
                time.time(),
                close,
                gpus=host.gpu_count,  # as policy saw it (passthrough_request)
                authority=self,
            ),
            generation,
        )
        return relay, start


def split_login(login: str) -> tuple[str, tuple[str, str] | None]:
    """``alice`` -> (alice, None); ``alice+sg-1`` -> (alice, (sg-1, "")); with an account,
    ``alice+sg-1+root`` -> (alice, (sg-1, root)). The user part is what authenticates."""
    parts = login.split("+")
    if len(parts) == 2 and all(parts):
        return parts[0], (parts[1], "")
    if len(parts) == 3 and all(parts):
        return parts[0], (parts[1], parts[2])
    return login, None


def _allowed_from(address: str, networks: Any) -> bool:
    """Whether ``address`` is in one of a certificate's ``source-address`` networks."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def _strip_comment(line: str) -> str:
    return " ".join(line.split()[:2])
