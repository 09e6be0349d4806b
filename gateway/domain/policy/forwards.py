"""Forward decisions: which forwards a role may open inside a recorded session.

Pure, like :mod:`gateway.domain.policy.rules`: no I/O, no clock, no globals. The SSH
edges ask here for every forward-like request (``direct-tcpip`` inside a
recorded jump, ``tcpip-forward``, agent forwarding, UNIX sockets) and audit the
reason verbatim.

The promise is "no unrecorded path to a host's shell". It holds by structure:

* a local forward goes only to the host's own loopback (an allow-list of
  spellings; anything else, ``0.0.0.0``, ``127.1`` or a decimal address
  included, is refused), and only to a port the role lists;
* the host's SSH ports are refused even when the role's list covers them:
  22, the inventory port, and the SSH port of every inventory host on the same
  address (the same machine). A forward to one would carry an end-to-end
  encrypted session the gateway cannot record;
* UNIX socket forwards (streamlocal) are refused in every mode: a path can name
  any local service, the host's sshd control sockets included;
* agent and remote forwarding are per-role options, off by default; a remote
  listener, like a local forward, only on the host's loopback and a listed port.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum

from gateway.domain.models import AccessRequest, Decision, Host, Mode, Principal, Role
from gateway.domain.policy.rules import evaluate

SSH_PORT = 22
MAX_PORT = 65535
LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost", "ip6-loopback"})


class ForwardKind(StrEnum):
    """What the client asked for, as the SSH protocol names it."""

    LOCAL = "direct-tcpip"  # ssh -L, -W, -D: a connection to the host's loopback
    REMOTE = "tcpip-forward"  # ssh -R: a listener on the host
    AGENT = "auth-agent"  # ssh -A
    STREAMLOCAL = "streamlocal"  # ssh -L/-R with a UNIX socket path


@dataclass(frozen=True, slots=True)
class ForwardRequest:
    """One forward-like request inside a session on ``host``.

    ``ssh_ports`` are the ports on the host's machine known to carry SSH
    (:func:`ssh_ports_of`); ``dest_host``/``dest_port`` are what the client sent
    (the listen address for a remote forward, a path for streamlocal).
    """

    kind: ForwardKind
    host: Host
    dest_host: str = ""
    dest_port: int = 0
    ssh_ports: frozenset[int] = frozenset({SSH_PORT})


def parse_port_spec(value: object) -> tuple[int, int]:
    """``8888`` -> (8888, 8888); ``"6006-6010"`` -> (6006, 6010); anything else raises.

    >>> parse_port_spec("6006-6010")
    (6006, 6010)
    """
    if isinstance(value, bool):
        raise ValueError(f"port {value!r} is not a number")
    if isinstance(value, int):
        low = high = value
    elif isinstance(value, str):
        first, sep, last = value.strip().partition("-")
        if not (first.strip().isdigit() and (not sep or last.strip().isdigit())):
            raise ValueError(f"port {value!r} is not a port or a range such as '6006-6010'")
        low = int(first)
        high = int(last) if sep else low
    else:
        raise ValueError(f"port {value!r} is not a port or a range such as '6006-6010'")
    if not (1 <= low <= MAX_PORT and 1 <= high <= MAX_PORT):
        raise ValueError(f"port {value!r} is outside 1-{MAX_PORT}")
    if low > high:
        raise ValueError(f"port range {value!r} runs backwards")
    if low == high == SSH_PORT:
        raise ValueError("port 22 is SSH: a forward to it would carry an unrecorded session")
    return low, high


def ssh_ports_of(host: Host, hosts: tuple[Host, ...] | list[Host]) -> frozenset[int]:
    """Ports on ``host``'s machine known to carry SSH: 22, its own, and those of
    other inventory hosts at the same address (the same machine)."""
    return frozenset({SSH_PORT, host.port} | {h.port for h in hosts if h.address == host.address})


def is_loopback(dest_host: str) -> bool:
    """Whether ``dest_host`` is one of the accepted spellings of "this machine"."""
    name = dest_host.lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def in_ports(port: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    return any(low <= port <= high for low, high in ranges)


def describe_ports(ranges: tuple[tuple[int, int], ...]) -> str:
    """``((8888, 8888), (6006, 6010))`` -> ``"8888, 6006-6010"``."""
    return ", ".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges) or "none"


def evaluate_forward(role: Role | None, request: ForwardRequest) -> Decision:
    """Decide a forward-like request by the role that granted the session.

    ``role`` is None when no role grants the session itself; the caller passes
    the session's own refusal reason in that case instead of calling here.
    """
    host = request.host
    if request.kind is ForwardKind.STREAMLOCAL:
        return Decision(
            False, f"UNIX socket forwarding ({request.dest_host or 'a path'}) is never allowed"
        )
    if role is None:
        return Decision(False, f"no role grants a session on {host.name}")
    if request.kind is ForwardKind.AGENT:
        if not role.agent_forwarding:
            return Decision(False, f"role {role.name} does not allow agent forwarding")
        return Decision(True, f"role {role.name} allows agent forwarding", role.name)
    if request.kind is ForwardKind.REMOTE:
        if not role.remote_forwarding:
            return Decision(False, f"role {role.name} does not allow remote forwarding")
        if not is_loopback(request.dest_host):
            return Decision(
                False,
                f"remote forwards listen only on {host.name}'s loopback, "
                f"not {request.dest_host or 'every address'}",
            )
        return _port_check(role, request, "listen on")
    if not role.forwarding or not role.forward_ports:
        return Decision(False, f"role {role.name} does not allow port forwarding on {host.name}")
    if not is_loopback(request.dest_host):
        return Decision(
            False, f"forwards go only to {host.name}'s own loopback, not {request.dest_host}"
        )
    return _port_check(role, request, "forward to")


def decide_forward(principal: Principal, account: str, request: ForwardRequest) -> Decision:
    """Decide ``request`` inside a recorded session as ``account``: allowed when a role
    that grants the session itself allows the forward; else the first such role's reason
    (or the session's own refusal)."""
    if request.kind is ForwardKind.STREAMLOCAL:
        return evaluate_forward(None, request)
    session = evaluate(principal, AccessRequest(request.host, Mode.RECORDED, account=account))
    if not session.allowed:
        return session
    first: Decision | None = None
    for role in principal.roles:
        alone = Principal(principal.user, (role,))
        if not evaluate(alone, AccessRequest(request.host, Mode.RECORDED, account=account)).allowed:
            continue
        decision = evaluate_forward(role, request)
        if decision.allowed:
            return decision
        first = first or decision
    assert first is not None  # the session was granted by some role
    return first


def _port_check(role: Role, request: ForwardRequest, verb: str) -> Decision:
    port, host = request.dest_port, request.host
    if port in request.ssh_ports:
        return Decision(
            False,
            f"port {port} is SSH on {host.name}: a forward to it would bypass recording",
        )
    if not in_ports(port, role.forward_ports):
        return Decision(
            False,
            f"role {role.name} may {verb} ports {describe_ports(role.forward_ports)} "
            f"on {host.name}, not {port}",
        )
    return Decision(True, f"role {role.name} allows port {port} on {host.name}", role.name)
