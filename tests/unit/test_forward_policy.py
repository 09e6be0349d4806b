"""Table tests for the pure forward decisions (gateway.domain.policy.forwards)."""

from __future__ import annotations

import inspect

import asyncssh
import pytest
from pydantic import ValidationError

from gateway.adapters.sshcompat import ServerConnection
from gateway.config.directory import RoleConfig
from gateway.domain.models import Host, Mode, Principal, Role
from gateway.domain.policy.forwards import (
    ForwardKind,
    ForwardRequest,
    decide_forward,
    evaluate_forward,
    is_loopback,
    parse_port_spec,
    ssh_ports_of,
)

R = Mode.RECORDED
SG1 = Host("sg-1", "sg", "10.0.0.5", 2201)
TWIN = Host("sg-2", "sg", "10.0.0.5", 2202)  # same machine, another sshd
OTHER = Host("my-1", "my", "10.0.0.9", 2203)
HOSTS = (SG1, TWIN, OTHER)
PORTS = ((8888, 8888), (6006, 6010))
EDITOR = Role("editor", ("*",), ("root",), (R,), forwarding=True, forward_ports=PORTS)
WIDE = Role("wide", ("*",), ("root",), (R,), forwarding=True, forward_ports=((1, 65535),))
PLAIN = Role("plain", ("*",), ("root",), (R,))
EXTRAS = Role(
    "extras",
    ("*",),
    ("root",),
    (R,),
    forward_ports=PORTS,
    agent_forwarding=True,
    remote_forwarding=True,
)


def local(dest_host: str, dest_port: int, host: Host = SG1) -> ForwardRequest:
    return ForwardRequest(ForwardKind.LOCAL, host, dest_host, dest_port, ssh_ports_of(host, HOSTS))


@pytest.mark.parametrize(
    ("role", "dest_host", "dest_port", "allowed", "reason"),
    [
        (EDITOR, "localhost", 8888, True, "allows port 8888"),
        (EDITOR, "127.0.0.1", 6006, True, "allows port 6006"),
        (EDITOR, "::1", 6010, True, "allows port 6010"),
        (EDITOR, "LOCALHOST", 8888, True, "allows port 8888"),
        (EDITOR, "127.0.0.2", 8888, True, "allows port 8888"),  # all of 127/8 is loopback
        (EDITOR, "localhost", 6011, False, "ports 8888, 6006-6010 on sg-1, not 6011"),
        (EDITOR, "localhost", 0, False, "not 0"),
        (EDITOR, "localhost", 65536 + 8888, False, "not 74424"),  # no 16-bit wrap
        (EDITOR, "localhost", 22, False, "port 22 is SSH on sg-1"),
        (WIDE, "localhost", 22, False, "port 22 is SSH on sg-1"),
        (WIDE, "127.0.0.1", 2201, False, "port 2201 is SSH on sg-1"),  # inventory port
        (WIDE, "::1", 2202, False, "port 2202 is SSH on sg-1"),  # same machine's other sshd
        (WIDE, "127.0.0.1", 2203, True, "allows port 2203"),  # another machine's port
        (WIDE, "10.0.0.5", 8888, False, "own loopback, not 10.0.0.5"),
        (WIDE, "sg-1", 22, False, "own loopback, not sg-1"),
        (WIDE, "0.0.0.0", 22, False, "own loopback, not 0.0.0.0"),
        (WIDE, "2130706433", 22, False, "own loopback"),  # decimal 127.0.0.1
        (WIDE, "127.1", 22, False, "own loopback"),
        (WIDE, "::ffff:127.0.0.1", 22, False, "own loopback"),
        (WIDE, "localhost.", 22, False, "own loopback"),
        (WIDE, "", 8888, False, "own loopback"),
        (PLAIN, "localhost", 8888, False, "role plain does not allow port forwarding"),
        (EXTRAS, "localhost", 8888, False, "role extras does not allow port forwarding"),
    ],
)
def test_local_forwards(
    role: Role, dest_host: str, dest_port: int, allowed: bool, reason: str
) -> None:
    decision = evaluate_forward(role, local(dest_host, dest_port))
    assert decision.allowed is allowed
    assert reason in decision.reason


@pytest.mark.parametrize(
    ("role", "kind", "dest_host", "dest_port", "allowed", "reason"),
    [
        (EDITOR, ForwardKind.AGENT, "", 0, False, "role editor does not allow agent forwarding"),
        (EXTRAS, ForwardKind.AGENT, "", 0, True, "role extras allows agent forwarding"),
        (EDITOR, ForwardKind.REMOTE, "localhost", 8888, False, "does not allow remote"),
        (EXTRAS, ForwardKind.REMOTE, "localhost", 8888, True, "allows port 8888"),
        (EXTRAS, ForwardKind.REMOTE, "localhost", 22, False, "port 22 is SSH"),
        (EXTRAS, ForwardKind.REMOTE, "", 8888, False, "not every address"),
        (EXTRAS, ForwardKind.REMOTE, "0.0.0.0", 8888, False, "not 0.0.0.0"),
        (EXTRAS, ForwardKind.REMOTE, "localhost", 9999, False, "not 9999"),
        (WIDE, ForwardKind.STREAMLOCAL, "/run/x.sock", 0, False, "never allowed"),
        (None, ForwardKind.STREAMLOCAL, "/run/x.sock", 0, False, "never allowed"),
        (None, ForwardKind.LOCAL, "localhost", 8888, False, "no role grants"),
    ],
)
def test_other_kinds(
    role: Role | None,
    kind: ForwardKind,
    dest_host: str,
    dest_port: int,
    allowed: bool,
    reason: str,
) -> None:
    request = ForwardRequest(kind, SG1, dest_host, dest_port, ssh_ports_of(SG1, HOSTS))
    decision = evaluate_forward(role, request)
    assert decision.allowed is allowed
    assert reason in decision.reason


def test_decide_uses_any_role_that_grants_the_session() -> None:
    both = Principal("rita", (PLAIN, EDITOR))
    assert decide_forward(both, "root", local("localhost", 8888)).role == "editor"
    refused = decide_forward(Principal("rita", (PLAIN,)), "root", local("localhost", 8888))
    assert not refused.allowed and "role plain" in refused.reason
    # a role that does not grant the session (wrong account) grants no forward either
    other_account = decide_forward(Principal("rita", (EDITOR,)), "gpu", local("localhost", 8888))
    assert not other_account.allowed and "account 'gpu'" in other_account.reason
    unix = decide_forward(both, "root", ForwardRequest(ForwardKind.STREAMLOCAL, SG1, "/x"))
    assert not unix.allowed


@pytest.mark.parametrize(
    ("value", "expected"),
    [(8888, (8888, 8888)), ("6006-6010", (6006, 6010)), (" 7000 ", (7000, 7000)), (1, (1, 1))],
)
def test_port_specs(value: object, expected: tuple[int, int]) -> None:
    assert parse_port_spec(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, "not a number"),
        (0, "outside 1-65535"),
        (65536, "outside 1-65535"),
        ("10-5", "runs backwards"),
        ("abc", "not a port or a range"),
        ("1-", "not a port or a range"),
        ("-5", "not a port or a range"),
        (22, "port 22 is SSH"),
        ("22", "port 22 is SSH"),
        (8.5, "not a port or a range"),
    ],
)
def test_bad_port_specs(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_port_spec(value)


def test_role_config_needs_ports_with_forwarding() -> None:
    with pytest.raises(ValidationError, match="forwarding = true needs forward_ports"):
        RoleConfig(name="r", hosts=("*",), forwarding=True)
    with pytest.raises(ValidationError, match="forward_ports is set but"):
        RoleConfig(name="r", hosts=("*",), forward_ports=(8888,))
    with pytest.raises(ValidationError, match="runs backwards"):
        RoleConfig(name="r", hosts=("*",), forwarding=True, forward_ports=("9-1",))
    role = RoleConfig(
        name="r", hosts=("*",), forwarding=True, forward_ports=(8888, "6006-6010")
    ).to_role()
    assert role.forward_ports == PORTS
    assert not role.agent_forwarding and not role.remote_forwarding  # off by default


@pytest.mark.parametrize(
    ("name", "expected"),
    [("localhost", True), ("::1", True), ("127.9.9.9", True), ("0.0.0.0", False), ("x", False)],
)
def test_loopback_spellings(name: str, expected: bool) -> None:
    assert is_loopback(name) is expected


def test_agent_hook_overrides_the_asyncssh_method() -> None:
    """asyncssh still decides agent requests in create_agent_listener (async, no args)."""
    original = asyncssh.SSHServerConnection.create_agent_listener
    assert inspect.iscoroutinefunction(original)
    assert list(inspect.signature(original).parameters) == ["self"]
    assert ServerConnection.create_agent_listener is not original
