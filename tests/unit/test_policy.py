"""Table tests for the pure policy rules."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gateway.domain.models import AccessRequest, Decision, Host, Mode, Principal, Role
from gateway.domain.policy.rules import allowed_accounts, default_account, evaluate, host_matches

P, R = Mode.PASSTHROUGH, Mode.RECORDED

SG1 = Host("sg-1", "sg", "127.0.0.1", 2201, labels={"tier": "prod", "gpu": "a100"})
MY1 = Host("my-1", "my", "127.0.0.1", 2202, labels={"tier": "dev"})
AE1 = Host("ae-1", "ae", "127.0.0.1", 2203)

DEV = Role("dev", ("region:sg", "region:my"), ("gpu",), (P, R), max_gpus=4)
VIEW = Role("view", ("sg-1",), ("gpu",), (P,))
OPS = Role("ops", ("label:tier=prod",), ("root", "gpu"), (R,))
ADMIN = Role("admin", ("*",), ("*",), (P, R))
NOTHING = Role("nothing", ("name:ae-1",), (), ())


def alice(*roles: Role) -> Principal:
    return Principal("alice", roles)


@pytest.mark.parametrize(
    ("selector", "host", "expected"),
    [
        ("*", SG1, True),
        ("*", AE1, True),
        ("name:sg-1", SG1, True),
        ("name:sg-1", MY1, False),
        ("name:sg", SG1, False),
        ("sg-1", SG1, True),
        ("sg-1", MY1, False),
        ("SG-1", SG1, False),
        ("region:sg", SG1, True),
        ("region:sg", MY1, False),
        ("region:sg-1", SG1, False),
        ("label:tier=prod", SG1, True),
        ("label:tier=prod", MY1, False),
        ("label:tier=prod", AE1, False),
        ("label:gpu=a100", SG1, True),
        ("label:tier=", SG1, False),
        ("label:tier", SG1, False),
        ("label:=prod", SG1, False),
        ("label:", SG1, False),
        ("name:", SG1, False),
        ("region:", SG1, False),
        ("host:sg-1", SG1, False),
        ("", SG1, False),
        ("**", SG1, False),
    ],
)
def test_host_matches(selector: str, host: Host, expected: bool) -> None:
    assert host_matches(selector, host) is expected


@pytest.mark.parametrize(
    ("roles", "request_", "expected"),
    [
        pytest.param(
            (DEV,),
            AccessRequest(SG1, R, "gpu", 2),
            Decision(True, "role dev grants recorded access to sg-1 as gpu", "dev"),
            id="allow-recorded-account",
        ),
        pytest.param(
            (DEV,),
            AccessRequest(MY1, P),
            Decision(True, "role dev grants passthrough access to my-1", "dev"),
            id="allow-passthrough-no-account",
        ),
        pytest.param(
            (DEV,),
            AccessRequest(SG1, R, "gpu", 4),
            Decision(True, "role dev grants recorded access to sg-1 as gpu", "dev"),
            id="allow-gpus-at-limit",
        ),
        pytest.param(
            (ADMIN,),
            AccessRequest(AE1, R, "root", 64),
            Decision(True, "role admin grants recorded access to ae-1 as root", "admin"),
            id="allow-wildcards-no-gpu-limit",
        ),
        pytest.param(
            (VIEW, DEV),
            AccessRequest(SG1, R, "gpu"),
            Decision(True, "role dev grants recorded access to sg-1 as gpu", "dev"),
            id="allow-second-role",
        ),
        pytest.param(
            (OPS,),
            AccessRequest(SG1, R, "root"),
            Decision(True, "role ops grants recorded access to sg-1 as root", "ops"),
            id="allow-label-selector",
        ),
        pytest.param(
            (),
            AccessRequest(SG1, P),
            Decision(False, "user alice has no roles"),
            id="deny-no-roles",
        ),
        pytest.param(
            (DEV, VIEW),
            AccessRequest(AE1, P),
            Decision(False, "user alice has no role that grants host ae-1"),
            id="deny-no-host-match",
        ),
        pytest.param(
            (VIEW,),
            AccessRequest(SG1, R, "gpu"),
            Decision(False, "role view does not allow recorded mode on sg-1"),
            id="deny-mode",
        ),
        pytest.param(
            (NOTHING,),
            AccessRequest(AE1, P),
            Decision(False, "role nothing does not allow passthrough mode on ae-1"),
            id="deny-mode-empty-modes",
        ),
        pytest.param(
            (DEV,),
            AccessRequest(SG1, R, "admin"),
            Decision(False, "role dev does not allow account 'admin' on sg-1"),
            id="deny-account",
        ),
        pytest.param(
            (DEV,),
            AccessRequest(SG1, R, "gpu", 8),
            Decision(False, "8 GPUs requested, role dev allows at most 4"),
            id="deny-gpus",
        ),
        pytest.param(
            (ADMIN,),
            AccessRequest(SG1, P, "", -1),
            Decision(False, "-1 GPUs requested; the count cannot be negative"),
            id="deny-negative-gpus",
        ),
        # Most informative reason: the role that got furthest wins.
        pytest.param(
            (VIEW, DEV),
            AccessRequest(SG1, R, "root"),
            Decision(False, "role dev does not allow account 'root' on sg-1"),
            id="deny-account-beats-mode",
        ),
        pytest.param(
            (DEV, OPS),
            AccessRequest(SG1, R, "gpu", 8),
            Decision(True, "role ops grants recorded access to sg-1 as gpu", "ops"),
            id="allow-other-role-without-gpu-limit",
        ),
        pytest.param(
            (OPS, DEV),
            AccessRequest(SG1, P, "gpu", 8),
            Decision(False, "8 GPUs requested, role dev allows at most 4"),
            id="deny-gpus-beats-mode",
        ),
        pytest.param(
            (NOTHING, VIEW),
            AccessRequest(SG1, R),
            Decision(False, "role view does not allow recorded mode on sg-1"),
            id="deny-mode-beats-no-host",
        ),
        pytest.param(
            (VIEW, Role("view2", ("sg-1",), (), (P,))),
            AccessRequest(SG1, R),
            Decision(False, "role view does not allow recorded mode on sg-1"),
            id="deny-tie-first-role",
        ),
    ],
)
def test_evaluate(roles: tuple[Role, ...], request_: AccessRequest, expected: Decision) -> None:
    assert evaluate(alice(*roles), request_) == expected


def test_evaluate_is_deterministic() -> None:
    principal, request = alice(VIEW, DEV), AccessRequest(SG1, R, "root", 2)
    assert len({evaluate(principal, request) for _ in range(5)}) == 1


@pytest.mark.parametrize(
    ("roles", "expected"),
    [
        ((), ()),
        ((DEV,), ("gpu",)),
        ((DEV, OPS, VIEW), ("gpu", "root")),
        ((OPS, ADMIN), ("*", "gpu", "root")),
        ((NOTHING,), ()),
    ],
)
def test_allowed_accounts(roles: tuple[Role, ...], expected: tuple[str, ...]) -> None:
    assert allowed_accounts(alice(*roles)) == expected


def test_rules_import_no_edges() -> None:
    code = (
        "import sys, gateway.domain.policy.rules; "
        "bad = {'asyncssh', 'docker', 'textual', 'httpx', 'pydantic'} & set(sys.modules); "
        "sys.exit(sorted(bad) or 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("roles", "host", "expected"),
    [
        ((DEV,), SG1, "gpu"),
        ((OPS, DEV), SG1, "root"),  # the first granting role's first account
        ((VIEW, DEV), SG1, "gpu"),  # view grants passthrough only: not asked
        ((ADMIN,), SG1, "alice"),  # "*" names no concrete account
        ((DEV,), AE1, "alice"),  # no granting role
        ((), SG1, "alice"),
    ],
)
def test_default_account(roles: tuple[Role, ...], host: Host, expected: str) -> None:
    assert default_account(alice(*roles), host) == expected
