"""Every asyncssh internal the gateway relies on, fenced in one module.

asyncssh's public API covers what an SSH server and client do, not everything a
gateway in the middle needs: audited agent requests, certificate refusals with
their reason, a single global request, carrying login options onto the inner
hop of ``ssh -J``, swapping host keys under live connections, per-channel limits
on env requests. Each function or method below names what it relies on (private
attributes, undocumented methods, submodules, call order), and
``tests/unit/test_compat.py`` pins each of those against the installed asyncssh,
so an upgrade shows at once what broke. pyproject.toml pins asyncssh to the
minor versions this was tested with; nothing outside this module touches an
asyncssh name with a leading underscore or imports from an asyncssh submodule.

:class:`ServerConnection` is the one subclass of ``SSHServerConnection``.
Subclasses of it may override the ``asyncio.Protocol`` methods
(``connection_made``, ``data_received``, ``eof_received``, ``connection_lost``),
calling ``super()``, and :meth:`ServerConnection.certificate_refused`.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import asyncssh
from asyncssh.channel import SSHAgentChannel
from asyncssh.connection import SSHConnection
from asyncssh.public_key import CERT_TYPE_USER, decode_ssh_certificate

MSG_IGNORE = 2  # RFC 4253
_EMPTY_STRING = b"\x00\x00\x00\x00"  # an SSH string of length 0

AgentChannel = SSHAgentChannel
"""An agent channel to the user (``asyncssh.channel.SSHAgentChannel``, not exported)."""

Connection = SSHConnection
"""What ``channel.get_connection()`` is typed as (``asyncssh.connection.SSHConnection``)."""

_Conn = TypeVar("_Conn", bound="ServerConnection")


def requesting_channel() -> asyncssh.SSHServerChannel[bytes] | None:
    """The session channel whose agent request asyncssh is answering in this task.

    Relies on: asyncssh answers ``auth-agent-req@openssh.com`` in a task running
    the channel's ``_finish_agent_req_request`` coroutine, which calls the
    connection's ``create_agent_listener``; the channel is that coroutine's
    ``self`` (read from its frame). None when it cannot be found.
    """
    task = asyncio.current_task()
    frame = getattr(task.get_coro(), "cr_frame", None) if task is not None else None
    chan = frame.f_locals.get("self") if frame is not None else None
    return chan if isinstance(chan, asyncssh.SSHServerChannel) else None


class ServerConnection(asyncssh.SSHServerConnection):
    """asyncssh's server connection with the hooks the gateway needs.

    - Agent requests: asyncssh would answer ``auth-agent-req`` itself
      (``create_agent_listener``, one listener per connection in the temporary
      directory) and tell the application nothing. Here no listener is made;
      the server object's ``agent_requested(chan)`` is told which session
      channel asked (:func:`requesting_channel`), and the session decides by
      policy. The reply is always "failure": OpenSSH asks without wanting one.
      Relies on: the undocumented async ``create_agent_listener(self)``.
    - Certificates: ``validate_public_key(username, key_data, msg, signature)``,
      the connection-level method asyncssh calls for each offered key, asks
      :meth:`certificate_refused` about OpenSSH certificates first, so a
      refusal can carry its real reason (asyncssh rejects silently), and checks
      the key for :meth:`key_user` of the login name. Relies on: that method's
      name and signature, and ``decode_ssh_certificate`` from
      ``asyncssh.public_key``.
    - ``drop_empty_ignore``: asyncssh puts an empty ``SSH_MSG_IGNORE`` before
      every encrypted packet, a countermeasure for CBC modes; where CBC is never
      negotiated they only double the per-packet work. Relies on:
      ``send_packet(pkttype, *args, handler=None)``.
    """

    drop_empty_ignore = False

    @classmethod
    def for_listener(cls: type[_Conn], options: asyncssh.SSHServerConnectionOptions) -> _Conn:
        """A connection to hand to ``loop.create_server``/``create_connection``.

        Relies on: the constructor ``(loop, options, acceptor, error_handler)``,
        which ``asyncssh.listen``/``run_server`` call the same way.
        """
        return cls(asyncio.get_running_loop(), options, None, None)

    @property
    def owner(self) -> object:
        """The server object of this connection (asyncssh's ``_owner``)."""
        return self._owner

    @property
    def server_version(self) -> bytes:
        """What this side sends after ``SSH-2.0-`` (asyncssh's ``_version``)."""
        version = getattr(self, "_version", b"gpuhop")
        return version if isinstance(version, bytes) else b"gpuhop"

    def key_user(self, username: str) -> str:
        """The user a key offered for login ``username`` is checked for (default: itself)."""
        return username

    def certificate_refused(self, username: str, cert: asyncssh.SSHCertificate) -> bool:
        """Whether to refuse ``cert`` for ``key_user(login)`` before asyncssh checks it (no)."""
        return False

    async def create_agent_listener(self) -> bool:
        hook = getattr(self._owner, "agent_requested", None)
        if callable(hook):
            hook(requesting_channel())
        return False

    def send_packet(self, pkttype: int, *args: bytes, handler: Any = None) -> None:
        if self.drop_empty_ignore and pkttype == MSG_IGNORE and args == (_EMPTY_STRING,):
            return
        super().send_packet(pkttype, *args, handler=handler)

    async def validate_public_key(
        self, username: str, key_data: bytes, msg: bytes, signature: bytes
    ) -> bool:
        username = self.key_user(username)
        try:
            cert = decode_ssh_certificate(key_data)
        except (asyncssh.KeyImportError, ValueError):
            cert = None
        if cert is not None and not cert.is_x509_chain and self.certificate_refused(username, cert):
            return False
        result: bool = await super().validate_public_key(username, key_data, msg, signature)
        return result


async def serve_on_socket(
    factory: Callable[[], ServerConnection], sock: Any
) -> asyncssh.SSHServerConnection:
    """Run an SSH server connection on a connected socket; what ``run_server`` does.

    Relies on: a connection object being the asyncio protocol itself (as
    ``asyncssh.run_server`` builds it), so a subclass can be used.
    """
    _, conn = await asyncio.get_running_loop().create_connection(factory, sock=sock)
    return conn


def check_user_certificate(cert: asyncssh.SSHCertificate, username: str) -> None:
    """Raise ValueError if ``cert`` is not a user certificate valid now for ``username``.

    Relies on: ``SSHOpenSSHCertificate.validate(cert_type, principal)`` and
    ``CERT_TYPE_USER`` from ``asyncssh.public_key``.
    """
    validate = cert.validate  # type: ignore[attr-defined]  # OpenSSH certificates only
    validate(CERT_TYPE_USER, username)


def certificate_key_id(cert: asyncssh.SSHCertificate) -> str:
    """The certificate's key id. Relies on: ``SSHOpenSSHCertificate._key_id``."""
    return str(getattr(cert, "_key_id", ""))


async def global_request(conn: asyncssh.SSHClientConnection, name: bytes) -> None:
    """Send one global request with want-reply and wait for either answer.

    Relies on: ``SSHConnection._make_global_request(request)``, the method
    asyncssh's own keepalive uses; it answers pending requests with a failure
    when the connection drops.
    """
    await conn._make_global_request(name)


def login_options(
    conn: asyncssh.SSHServerConnection,
) -> tuple[Mapping[str, object], Mapping[str, object] | None]:
    """The key options and certificate options asyncssh enforces on ``conn``.

    Relies on: ``SSHServerConnection._key_options`` and ``_cert_options``, set
    by authentication (reset on each user-auth request).
    """
    return getattr(conn, "_key_options", None) or {}, getattr(conn, "_cert_options", None)


def set_login_options(
    conn: asyncssh.SSHServerConnection,
    key_options: Mapping[str, object],
    cert_options: Mapping[str, object] | None,
) -> None:
    """Make asyncssh enforce these options on ``conn`` (call from ``auth_completed``)."""
    if not hasattr(conn, "_key_options") or not hasattr(conn, "_cert_options"):
        raise RuntimeError("asyncssh no longer keeps login options where gpuhop expects")
    conn._key_options = dict(key_options)
    conn._cert_options = None if cert_options is None else dict(cert_options)


def offer_host_keys(
    options: asyncssh.SSHServerConnectionOptions, keys: Sequence[asyncssh.SSHKey]
) -> None:
    """Make new connections use ``keys[0]`` and announce all of ``keys``.

    What ``SSHServerConnectionOptions`` builds from ``server_host_keys`` (with
    ``send_server_host_keys``), rebuilt and swapped in: each connection took
    its own reference to the old tables when it was made, so live connections,
    and their re-keys, keep the key they started with. Relies on: the options'
    ``server_host_keys`` (algorithm → key pair) and ``all_server_host_keys``
    (public data → key pair) tables.
    """
    active: OrderedDict[bytes, asyncssh.SSHKeyPair] = OrderedDict()
    every: OrderedDict[bytes, asyncssh.SSHKeyPair] = OrderedDict()
    for pair in asyncssh.load_keypairs(list(keys)):
        for alg in pair.host_key_algorithms:
            active.setdefault(alg, pair)
        every[pair.public_data] = pair
    options.server_host_keys = active
    options.all_server_host_keys = every


def open_channel_count(conn: asyncssh.SSHServerConnection) -> int:
    """Channels ``conn`` has open. Relies on: ``SSHConnection._channels``."""
    return len(getattr(conn, "_channels", ()))


def gate_session(
    chan: asyncssh.SSHServerChannel[Any],
    admit_env: Callable[[int], bool],
    admit_start: Callable[[], bool],
) -> None:
    """Ask ``admit_env(size)`` before each env request and ``admit_start()`` before the session.

    An env request not admitted is read and answered "failure"; a session not
    admitted is not started. Relies on: asyncssh looking request handlers up
    on the channel instance (``_process_env_request(packet)``,
    ``_start_session(command, subsystem)``), and its ``SSHPacket`` reads.
    """
    process_env = chan._process_env_request
    start_session = chan._start_session

    def env_request(packet: Any) -> bool:
        if admit_env(len(packet.get_remaining_payload())):
            return bool(process_env(packet))
        packet.get_string()
        packet.get_string()
        packet.check_end()
        return False

    def start(command: str | None = None, subsystem: str | None = None) -> bool:
        return admit_start() and bool(start_session(command, subsystem))

    setattr(chan, "_process_env_request", env_request)  # noqa: B010
    setattr(chan, "_start_session", start)  # noqa: B010


def open_agent_channel(conn: Connection) -> AgentChannel:
    """A new agent channel to the user's forwarded agent.

    Relies on: ``SSHConnection.create_agent_channel()`` (undocumented) and its
    ``SSHAgentChannel`` from ``asyncssh.channel``.
    """
    return conn.create_agent_channel()


def hand_over(
    service: asyncssh.SSHServerSession[bytes],
    chan: asyncssh.SSHServerChannel[bytes],
    early: Iterable[tuple[bytes, asyncssh.DataType]],
    eof: bool,
) -> None:
    """Let ``service`` answer a session channel already started for another session object.

    Drives the session callbacks by hand, in the order asyncssh calls them:
    ``connection_made(chan)``, ``session_started()``, then the data (and EOF)
    that arrived before; the session object asyncssh knows passes the later
    callbacks on. Relies on: asyncssh calling a session object only through
    these callbacks, so one can be driven by hand.
    """
    service.connection_made(chan)
    service.session_started()
    for data, datatype in early:
        service.data_received(data, datatype)
    if eof:
        service.eof_received()
