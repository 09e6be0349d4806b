"""Attacks on certificates and passthrough, with real OpenSSH against a real gateway.

A user's certificate must open only the (host, account) pairs policy grants in
passthrough, at the host itself and through the gateway; a removed user's
certificate must stop working at hosts, straight at their sshd, within 30 s; and
passthrough must answer to the same budgets, leases and metering as recorded
sessions. Certificates come from the gateway's own API (``/v1/certificates``),
exactly as ``gpuhop login`` gets them.
"""

from __future__ import annotations

import getpass
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.adapters.keys import ensure_private_key, public_line
from gpuhop_sim.embedded import EmbeddedHost
from tests.integration.conftest import need_openssh
from tests.integration.gwstack import GatewayStack, StackUser
from tests.sshkeys import make_keypair, sign_user_key

pytestmark = pytest.mark.openssh

ROLES = """
[[roles]]
name = "pt-daemon-sg"
hosts = ["name:sg-1"]
accounts = ["daemon"]
modes = ["passthrough"]

[[roles]]
name = "rec-root-my"
hosts = ["name:my-1"]
accounts = ["root"]
modes = ["recorded"]

[[roles]]
name = "pt-root-sg"
hosts = ["name:sg-1"]
accounts = ["root"]
modes = ["passthrough"]

[[roles]]
name = "pt-root-my"
hosts = ["name:my-1"]
accounts = ["root"]
modes = ["passthrough"]

[[roles]]
name = "pt-capped-my"
hosts = ["name:my-1"]
accounts = ["root"]
modes = ["passthrough"]
max_gpus = 1

[[budgets]]
user = "fred"
daily = 0.0005
"""

USERS = {
    "dora": ["pt-daemon-sg", "rec-root-my"],  # passthrough only as daemon, only on sg-1
    "fred": ["pt-root-sg"],  # a tiny daily budget
    "gina": ["pt-capped-my"],  # at most 1 GPU; my-1 has 4
    "hank": ["pt-root-my"],
    "ivan": ["pt-root-my"],
    "ops": [],
}


def _cli(stack: GatewayStack, *args: str) -> str:
    cmd = [sys.executable, "-m", "gateway.cli", *args, "--config", str(stack.config)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _token(stack: GatewayStack, user: str, scope: str = "user") -> str:
    return _cli(stack, "token", "create", "--user", user, "--scope", scope)


def _api(stack: GatewayStack) -> str:
    return f"http://127.0.0.1:{stack.api_port}"


def _issue(stack: GatewayStack, user: StackUser) -> dict[str, object]:
    """A certificate from the gateway's API for the user's own key, installed for ssh."""
    key = ensure_private_key(user.key, f"{user.name}@test")
    response = httpx.post(
        f"{_api(stack)}/v1/certificates",
        json={"public_key": public_line(key)},
        headers={"Authorization": f"Bearer {_token(stack, user.name)}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    cert = response.json()
    user.cert = user.key.with_name(user.key.name + "-cert.pub")
    user.cert.write_text(str(cert["certificate"]) + "\n")
    return dict(cert)


def _direct(
    stack: GatewayStack, user: StackUser, host: str, account: str, *command: str
) -> subprocess.CompletedProcess[bytes]:
    """Real ``ssh`` straight to the host's sshd, around the gateway."""
    assert user.cert is not None
    argv = ["ssh", "-F", "/dev/null", "-i", str(user.key), "-p", str(stack.hosts[host].port)]
    for option in (
        "IdentitiesOnly=yes",
        "IdentityAgent=none",
        "BatchMode=yes",
        f"UserKnownHostsFile={stack.known_hosts}",
        "StrictHostKeyChecking=yes",
        f"CertificateFile={user.cert}",
        "ConnectTimeout=10",
        "KexAlgorithms=curve25519-sha256",
    ):
        argv += ["-o", option]
    return stack.run([*argv, f"{account}@127.0.0.1", *(command or ("true",))], timeout=30)


def _authenticated(result: subprocess.CompletedProcess[bytes]) -> bool:
    """Whether the host let the login in (daemon's shell then refuses to run anything)."""
    return result.returncode != 255 and b"Permission denied" not in result.stderr


def _sshd_log(stack: GatewayStack, host: str) -> str:
    return stack.hosts[host].log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    need_openssh()
    s = GatewayStack(
        tmp_path_factory.mktemp("attack-certs"), extra_gateway="krl_push_interval_s = 2.0"
    )
    s.ca()
    s.upstream_ca()
    s.add_host("sg-1")
    s.add_host("my-1")
    for name in USERS:
        s.add_user(name, cert=False)
    s.write_config(ROLES, USERS)
    try:
        s.start_gateway()
        for name in ("dora", "fred", "gina", "hank", "ivan"):
            _issue(s, s.users[name])
        yield s
    finally:
        s.close()


# ------------------------------------------------------------- host-scoped principals


def test_certificate_names_only_passthrough_grants(stack: GatewayStack) -> None:
    cert = _issue(stack, stack.users["dora"])
    # dora's recorded grant (root on my-1) is the gateway's to use, never her certificate's.
    assert cert["principals"] == ["dora", "daemon@sg-1"]
    assert int(str(cert["valid_before"])) - int(str(cert["valid_after"])) <= 1800 + 60


def test_daemon_only_passthrough_user_cannot_log_in_as_root(stack: GatewayStack) -> None:
    dora = stack.users["dora"]
    as_root = stack.run(stack.jump_command(dora, "sg-1", "id", "-un", account="root"))
    assert as_root.returncode == 255, as_root.stdout
    assert b"Permission denied" in as_root.stderr
    assert b"root" not in as_root.stdout
    as_daemon = stack.run(stack.jump_command(dora, "sg-1", "id", "-un", account="daemon"))
    assert _authenticated(as_daemon), as_daemon.stderr  # the grant itself works
    starts = stack.wait_audit_events(
        "session.start", lambda e: e["user"] == "dora" and e["mode"] == "passthrough", count=2
    )
    assert starts and all(e["accounts"] == ["daemon"] for e in starts)


def test_certificate_straight_at_host_for_ungranted_account_refused(stack: GatewayStack) -> None:
    dora = stack.users["dora"]
    for host, account in (("sg-1", "root"), ("my-1", "root"), ("my-1", "daemon"), ("sg-1", "dora")):
        result = _direct(stack, dora, host, account, "id", "-un")
        assert result.returncode == 255, (host, account, result.stdout)
        assert b"Permission denied" in result.stderr, (host, account)
    assert _authenticated(_direct(stack, dora, "sg-1", "daemon"))
    assert "Accepted publickey for daemon" in _sshd_log(stack, "sg-1")


def test_gateway_upstream_ca_is_never_handed_to_users(stack: GatewayStack) -> None:
    cert = _issue(stack, stack.users["hank"])
    assert cert["ca_public_key"] == stack.ca().public_line
    assert cert["ca_public_key"] != stack.upstream_ca().public_line
    # And the gateway does not take a certificate from its upstream CA as a login (a key
    # of its own, so that the certificate is all ssh can offer).
    other = stack.root / "keys" / "hank-other"
    key = ensure_private_key(other, "")
    forged = stack.upstream_ca().sign(key, user="hank", accounts=["root@my-1"], validity_s=600)
    path = other.with_name("hank-other-cert.pub")
    path.write_text(forged.openssh_line() + "\n")
    refused = stack.run(stack.gateway_command(StackUser("hank", other, path), "true"))
    assert refused.returncode == 255 and b"Permission denied" in refused.stderr
    [fail] = stack.wait_audit_events("auth.fail", lambda e: e["user"] == "hank")
    assert "not signed by the gateway user CA" in str(fail["reasons"])


# ------------------------------------------------------------- revocation at hosts


def test_removed_users_certificate_refused_at_host_within_30s(stack: GatewayStack) -> None:
    admin = {"Authorization": f"Bearer {_token(stack, 'ops', 'admin')}"}
    erin = stack.add_user("erin", cert=False)
    key = ensure_private_key(erin.key, "erin@test")
    added = httpx.post(
        f"{_api(stack)}/v1/admin/users",
        json={"name": "erin", "roles": ["pt-root-sg"], "keys": [public_line(key)]},
        headers=admin,
        timeout=30,
    )
    assert added.status_code == 201, added.text
    _issue(stack, erin)
    before = _direct(stack, erin, "sg-1", "root", "echo", "in")
    assert before.returncode == 0 and before.stdout.strip() == b"in", before.stderr
    removed = httpx.delete(f"{_api(stack)}/v1/admin/users/erin", headers=admin, timeout=30)
    assert removed.status_code == 200, removed.text
    started = time.monotonic()
    refused_after = None
    while time.monotonic() - started < 30:
        if _direct(stack, erin, "sg-1", "root").returncode == 255:
            refused_after = time.monotonic() - started
            break
        time.sleep(0.25)
    assert refused_after is not None, "a removed user's certificate still opens the host"
    print(f"\nremoved user's certificate refused at the host after {refused_after:.2f} s")
    assert "revoked" in _sshd_log(stack, "sg-1").lower()
    # Other users' certificates are untouched.
    assert _authenticated(_direct(stack, stack.users["dora"], "sg-1", "daemon"))


# ------------------------------------------------------------- budgets, leases, metering


def _end_events(stack: GatewayStack, user: str, count: int = 1) -> list[dict[str, object]]:
    return stack.wait_audit_events(
        "session.end", lambda e: e["user"] == user and e["mode"] == "passthrough", count=count
    )


def test_passthrough_metered(stack: GatewayStack) -> None:
    hank = stack.users["hank"]
    done = stack.run(stack.jump_command(hank, "my-1", "sleep 1; head -c 100000 /dev/zero"))
    assert done.returncode == 0, done.stderr
    [end] = _end_events(stack, "hank")
    assert end["gpus"] == 4 and end["gpu_indices"] == [0, 1, 2, 3]
    # 4 GPUs x $2.50/h for at least a second.
    assert float(str(end["cost_usd"])) >= 4 * 2.5 / 3600


def test_passthrough_leases_the_whole_host(stack: GatewayStack) -> None:
    hank, ivan = stack.users["hank"], stack.users["ivan"]
    seen = max((int(e["id"]) for e in stack.audit_events()), default=0)
    holder = subprocess.Popen(
        stack.jump_command(hank, "my-1", "sleep 6"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        started = stack.wait_audit_events(
            "session.start", lambda e: e["user"] == "hank" and e["id"] > seen, timeout=15
        )
        assert started, holder.stderr
        # hank's second channel to the same host shares his lease ...
        again = stack.run(stack.jump_command(hank, "my-1", "true"))
        assert again.returncode == 0, again.stderr
        # ... but nobody else gets in while he holds its GPUs.
        other = stack.run(stack.jump_command(ivan, "my-1", "true"))
        assert other.returncode == 255 and b"prohibited" in other.stderr
        [deny] = stack.wait_audit_events("channel.deny", lambda e: e["user"] == "ivan")
        assert "leases every GPU of my-1" in str(deny["reason"])
    finally:
        holder.communicate(timeout=30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # released with hank's last session
        if stack.run(stack.jump_command(ivan, "my-1", "true")).returncode == 0:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the lease was not released when its last session ended")


def test_passthrough_refused_when_role_caps_gpus_below_the_host(stack: GatewayStack) -> None:
    result = stack.run(stack.jump_command(stack.users["gina"], "my-1", "true"))
    assert result.returncode == 255 and b"prohibited" in result.stderr
    [deny] = stack.wait_audit_events("channel.deny", lambda e: e["user"] == "gina")
    assert "4 GPUs requested, role pt-capped-my allows at most 1" in str(deny["reason"])
    # Nor does the certificate carry a principal for it.
    assert _issue(stack, stack.users["gina"])["principals"] == ["gina"]


def test_passthrough_over_budget_refused(stack: GatewayStack) -> None:
    fred = stack.users["fred"]
    first = stack.run(stack.jump_command(fred, "sg-1", "sleep", "1"))
    assert first.returncode == 0, first.stderr  # costs 4 x $2.50/h x 1 s > $0.0005
    _end_events(stack, "fred")
    second = stack.run(stack.jump_command(fred, "sg-1", "true"))
    assert second.returncode == 255 and b"prohibited" in second.stderr
    [deny] = stack.wait_audit_events("channel.deny", lambda e: e["user"] == "fred")
    assert "budget" in str(deny["reason"]) and "fred" in str(deny["reason"])


# ------------------------------------------------------------- the embedded simulated host


def test_embedded_host_maps_principals_like_sshd(tmp_path: Path) -> None:
    """Where sshd is missing the demo runs asyncssh hosts; they hold the same line."""
    need_openssh()
    ca, key = make_keypair(tmp_path, "ca"), make_keypair(tmp_path, "dora")
    with EmbeddedHost("emb-1", tmp_path / "emb-1", user_ca_pub=ca.public_line) as host:
        known = tmp_path / "known_hosts"
        known.write_text(host.known_hosts_line + "\n")

        def login(principal: str, account: str) -> subprocess.CompletedProcess[bytes]:
            cert = sign_user_key(ca, key, principals=(principal,), identity="dora")
            argv = ["ssh", "-F", "/dev/null", "-i", str(key.private), "-p", str(host.port)]
            for option in (
                "IdentitiesOnly=yes",
                "BatchMode=yes",
                f"UserKnownHostsFile={known}",
                f"CertificateFile={cert}",
                "ConnectTimeout=10",
            ):
                argv += ["-o", option]
            return subprocess.run(
                [*argv, f"{account}@127.0.0.1", "echo in"], capture_output=True, timeout=30
            )

        me = getpass.getuser()
        assert login(me, me).returncode == 255  # a bare account name opens nothing
        assert login(f"{me}@my-1", me).returncode == 255  # another host's principal
        ok = login(f"{me}@emb-1", me)
        assert ok.returncode == 0 and ok.stdout.strip() == b"in", ok.stderr
