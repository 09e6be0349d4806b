"""Passthrough policy and revocation lists: pure functions, table-tested."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.domain.krl import IssuedCert, build_krl, revoked_fingerprints, sha256_of
from gateway.domain.models import Host, Mode, Principal, Role
from gateway.domain.policy.passthrough import (
    host_principals,
    passthrough_accounts,
    passthrough_agent_forwarding,
    passthrough_request,
    passthrough_residency,
)
from gateway.domain.policy.residency import DataSet

SG = Host("sg-1", "sg", "10.0.0.1", gpu_count=4, residency=("SG",))
MY = Host("my-1", "my", "10.0.0.2", gpu_count=2, residency=("MY",))
CPU = Host("cpu-1", "sg", "10.0.0.3", gpu_count=0, residency=("SG",))
PT, REC = (Mode.PASSTHROUGH,), (Mode.RECORDED,)


def _p(*roles: Role) -> Principal:
    return Principal("dora", roles)


@pytest.mark.parametrize(
    ("roles", "host", "accounts"),
    [
        ((Role("a", ("name:sg-1",), ("daemon",), PT),), SG, ("daemon",)),
        ((Role("a", ("name:sg-1",), ("daemon",), PT),), MY, ()),
        # Recorded grants are the gateway's to use, never the certificate's.
        ((Role("a", ("*",), ("root",), REC),), SG, ()),
        # "*" cannot be written as principals: no passthrough account at all.
        ((Role("a", ("*",), ("*",), PT),), SG, ()),
        # A GPU cap below the host's count cannot be held inside passthrough.
        ((Role("a", ("*",), ("root",), PT, max_gpus=2),), SG, ()),
        ((Role("a", ("*",), ("root",), PT, max_gpus=2),), MY, ("root",)),
        ((Role("a", ("*",), ("root",), PT, max_gpus=2),), CPU, ("root",)),
        (
            (Role("a", ("name:sg-1",), ("daemon",), PT), Role("b", ("*",), ("ubuntu",), PT)),
            SG,
            ("daemon", "ubuntu"),
        ),
    ],
)
def test_passthrough_accounts(
    roles: tuple[Role, ...], host: Host, accounts: tuple[str, ...]
) -> None:
    assert passthrough_accounts(_p(*roles), host) == accounts


def test_host_principals_are_one_per_granted_pair() -> None:
    p = _p(Role("a", ("name:sg-1",), ("daemon",), PT), Role("b", ("region:my",), ("root",), PT))
    assert host_principals(p, [SG, MY, CPU]) == ("daemon@sg-1", "root@my-1")


def test_passthrough_asks_for_the_whole_host() -> None:
    assert passthrough_request(SG).gpus == 4 and passthrough_request(SG).account == ""


@pytest.mark.parametrize(
    ("datasets", "host", "allowed"),
    [
        ({}, MY, True),
        ({"scans": DataSet("scans", countries=("SG",))}, SG, True),
        ({"scans": DataSet("scans", countries=("SG",))}, MY, False),
        ({"open": DataSet("open", countries=("SG", "MY"))}, MY, True),
    ],
)
def test_passthrough_residency(datasets: dict[str, DataSet], host: Host, allowed: bool) -> None:
    decision = passthrough_residency(host, datasets)
    assert decision.allowed is allowed
    if not allowed:
        assert "cannot see which data" in decision.reason and "scans" in decision.reason


def test_revoked_are_removed_users_unexpired_certificates() -> None:
    issued = [
        IssuedCert("erin", "SHA256:" + "A" * 43, 2000.0),
        IssuedCert("erin", "SHA256:" + "B" * 43, 500.0),  # expired
        IssuedCert("dora", "SHA256:" + "C" * 43, 2000.0),  # still a user
    ]
    assert revoked_fingerprints(issued, {"dora"}, now=1000.0) == ("SHA256:" + "A" * 43,)


@pytest.mark.parametrize("bad", ["MD5:abc", "SHA256:", "SHA256:!!!", "SHA256:" + "A" * 10])
def test_bad_fingerprints_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not a SHA256 fingerprint"):
        sha256_of(bad)


def test_krl_is_read_by_ssh_keygen(tmp_path: Path) -> None:
    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        pytest.skip("ssh-keygen is not installed")
    for name in ("gone", "kept"):
        subprocess.run(
            [keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)], check=True
        )
    fp = subprocess.run(
        [keygen, "-l", "-f", str(tmp_path / "gone.pub")], capture_output=True, text=True
    ).stdout.split()[1]
    (tmp_path / "krl").write_bytes(build_krl([fp], version=7, generated=1))
    check = subprocess.run(
        [
            keygen,
            "-Q",
            "-f",
            str(tmp_path / "krl"),
            str(tmp_path / "gone.pub"),
            str(tmp_path / "kept.pub"),
        ],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 1
    assert (
        "gone.pub" in check.stdout
        and "REVOKED" in check.stdout.split("gone.pub")[1].splitlines()[0]
    )
    assert (
        "kept.pub" in check.stdout and ": ok" in check.stdout.split("kept.pub")[1].splitlines()[0]
    )


def test_revocation_list_is_bounded_keeping_the_longest_lived(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("gateway.domain.krl.MAX_ENTRIES", 2)
    fps = [f"SHA256:{c * 43}" for c in "ABC"]
    issued = [IssuedCert("erin", fp, 2000.0 + i) for i, fp in enumerate(fps)]
    assert revoked_fingerprints(issued, set(), now=1000.0) == (fps[1], fps[2])


AGENT_PT = Role("agent-pt", ("name:sg-1",), ("root",), PT, agent_forwarding=True)
PLAIN_PT = Role("plain-pt", ("name:my-1",), ("root",), PT)
AGENT_REC = Role("agent-rec", ("*",), ("root",), REC, agent_forwarding=True)


@pytest.mark.parametrize(
    ("roles", "permitted"),
    [
        ((AGENT_PT,), True),
        ((PLAIN_PT,), False),
        # One granting role without it: the one certificate carries both, so no.
        ((AGENT_PT, PLAIN_PT), False),
        # Recorded roles grant no principal: they neither permit nor forbid.
        ((AGENT_PT, Role("r", ("*",), ("root",), REC)), True),
        ((AGENT_REC,), False),  # no passthrough at all: nothing to permit
        ((Role("any", ("*",), ("*",), PT, agent_forwarding=False), AGENT_PT), True),
        ((), False),
    ],
)
def test_certificate_permits_agent_forwarding_only_if_every_granting_role_does(
    roles: tuple[Role, ...], permitted: bool
) -> None:
    assert passthrough_agent_forwarding(_p(*roles), (SG, MY, CPU)) is permitted
