"""Admin commands over the API and on the gateway machine, against a real gateway and real sshd.

Users, keys and roles added at run time let real OpenSSH ``ssh -J`` in at once;
removing them locks the next login out (audited); config entries are refused;
hosts are added with their scanned host key confirmed (or refused on a
mismatch). Runs on SQLite, and on PostgreSQL under
``GPUHOP_TEST_STORAGE=postgres``; the two-replica test always uses PostgreSQL.

Users added here get recorded roles: the gateway logs in to the host with its
own certificate, so a key registered at the gateway is all they need
(passthrough would also need a certificate the host trusts, from ``gpuhop login``).
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from gateway.adapters.keys import ensure_private_key, public_line
from gpuhop_sim.sshd import SshdHost
from tests.integration.conftest import build_stack
from tests.integration.gwstack import GatewayStack, StackUser
from tests.integration.pg import PgServer

pytestmark = pytest.mark.openssh


def _token(stack: GatewayStack, user: str, scope: str) -> str:
    cmd = [
        sys.executable,
        "-m",
        "gateway.cli",
        "token",
        "create",
        "--config",
        str(stack.config),
        "--user",
        user,
        "--scope",
        scope,
    ]
    done = subprocess.run(cmd, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.decode().strip()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    s = build_stack(tmp_path_factory.mktemp("admin-dir"))
    try:
        s.start_gateway()
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def admin_token(stack: GatewayStack) -> str:
    return _token(stack, "ops", "admin")


def client_env(stack: GatewayStack, token: str, home: Path) -> dict[str, str]:
    keep = ("PATH", "LANG", "LC_ALL", "TERM")
    env = {k: v for k, v in os.environ.items() if k in keep}
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_DATA_HOME=str(home / "data"),
        XDG_STATE_HOME=str(home / "state"),
        XDG_CACHE_HOME=str(home / "cache"),
        PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
        GPUHOP_GATEWAY=f"http://127.0.0.1:{stack.api_port}",
        GPUHOP_TOKEN=token,
    )
    return env


Gpuhop = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def gpuhop(stack: GatewayStack, admin_token: str) -> Gpuhop:
    """``gpuhop admin ARGS`` as a subprocess with the admin token (``token=`` for another)."""

    def run(*args: str, token: str = admin_token) -> subprocess.CompletedProcess[str]:
        env = client_env(stack, token, stack.root / "client-home")
        cmd = [sys.executable, "-m", "client.cli", "admin", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)

    return run


def local(stack: GatewayStack, *args: str) -> subprocess.CompletedProcess[str]:
    """``gpuhop-gateway admin ARGS --config FILE`` on the gateway machine."""
    cmd = [sys.executable, "-m", "gateway.cli", "admin", *args, "--config", str(stack.config)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def new_user(stack: GatewayStack, name: str) -> tuple[StackUser, Path]:
    """A key pair for ``name`` that the gateway does not know yet; the .pub path."""
    user = stack.add_user(name, cert=False)
    ensure_private_key(user.key, f"{name}@test")
    return user, user.key.with_name(user.key.name + ".pub")


def ssh_ok(
    stack: GatewayStack, user: StackUser, host: str = "sg-1"
) -> subprocess.CompletedProcess[bytes]:
    return stack.run(stack.jump_command(user, host, "echo", "hello-from-host"))


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return check()


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


# -- users, keys, roles over the API -------------------------------------------------


def test_added_user_logs_in_and_removed_key_is_refused(stack: GatewayStack, gpuhop: Gpuhop) -> None:
    dave, pub = new_user(stack, "dave")
    assert ssh_ok(stack, dave).returncode != 0  # unknown before
    added = gpuhop("users", "add", "dave", "--role", "rec", "--key", str(pub))
    assert added.returncode == 0, added.stderr
    assert "admin.user.add" in added.stdout
    done = ssh_ok(stack, dave)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == b"hello-from-host"

    listed = gpuhop("users", "ls", "--json")
    users = {u["name"]: u for u in json.loads(listed.stdout)}
    assert users["dave"]["source"] == "admin" and users["alice"]["source"] == "config"
    assert users["dave"]["roles"] == ["rec"] and len(users["dave"]["keys"]) == 1

    fingerprint = users["dave"]["keys"][0]["fingerprint"]
    removed = gpuhop("keys", "rm", "dave", fingerprint)
    assert removed.returncode == 0, removed.stderr
    refused = ssh_ok(stack, dave)
    assert refused.returncode != 0

    assert stack.wait_audit_events(  # audited just after the refusal
        "auth.fail",
        lambda e: e["user"] == "dave" and any("not registered to dave" in r for r in e["reasons"]),
    )
    changes = {e["kind"]: e for e in stack.audit_events() if e["kind"].startswith("admin.")}
    assert changes["admin.user.add"]["actor"] == "ops"
    assert changes["admin.key.remove"]["fingerprint"] == fingerprint
    assert changes["admin.key.remove"]["by_token"]


def test_grant_and_revoke_change_policy(stack: GatewayStack, gpuhop: Gpuhop) -> None:
    erin, pub = new_user(stack, "erin")
    assert gpuhop("users", "add", "erin", "--key", str(pub)).returncode == 0
    denied = ssh_ok(stack, erin)
    assert denied.returncode != 0  # logged in, but no role grants any host
    made = gpuhop(
        "roles",
        "add",
        "sg-rec",
        "--hosts",
        "region:sg",
        "--account",
        "root",
        "--mode",
        "recorded",
    )
    assert made.returncode == 0, made.stderr
    assert gpuhop("roles", "grant", "erin", "sg-rec").returncode == 0
    assert ssh_ok(stack, erin, "sg-1").returncode == 0
    assert ssh_ok(stack, erin, "my-1").returncode != 0  # the role covers region sg only
    assert gpuhop("roles", "revoke", "erin", "sg-rec").returncode == 0
    assert ssh_ok(stack, erin, "sg-1").returncode != 0
    # Refusals are audited just after the refusal itself goes out.
    denies = stack.wait_audit_events("channel.deny", lambda e: e["user"] == "erin", count=3)
    assert len(denies) >= 3
    roles = json.loads(gpuhop("roles", "ls", "--json").stdout)
    assert {r["name"]: r["source"] for r in roles}["sg-rec"] == "admin"


def test_config_entries_are_refused(gpuhop: Gpuhop, stack: GatewayStack) -> None:
    for args in (
        ("users", "rm", "alice"),
        ("roles", "rm", "dev"),
        ("roles", "grant", "alice", "rec"),
        ("users", "add", "bob"),
    ):
        done = gpuhop(*args)
        assert done.returncode == 65, (args, done.stderr)
        assert "config file" in one_line(done.stderr)
    local_done = local(stack, "users", "rm", "alice")
    assert local_done.returncode == 65  # as gpuhop admin's refusal above
    assert "declared in the config file" in one_line(local_done.stderr)


def test_non_admin_token_is_forbidden(stack: GatewayStack, gpuhop: Gpuhop) -> None:
    user_token = _token(stack, "alice", "user")
    done = gpuhop("users", "ls", token=user_token)
    assert done.returncode == 77
    assert "needs a admin token" in one_line(done.stderr)
    url = f"http://127.0.0.1:{stack.api_port}/v1/admin/users"
    body = {"name": "zed"}
    response = httpx.post(url, json=body, headers={"Authorization": f"Bearer {user_token}"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (("users", "add", "gina", "--key", "ssh-ed25519 AAAAnotakey"), 65, "keys.0"),
        (("users", "add", "gina", "--role", "nope"), 65, "unknown role 'nope'"),
        (("users", "add", "gina", "--team", "nope"), 65, "unknown team 'nope'"),
        (("users", "add", "bad name"), 65, "is not a name"),
        (("users", "rm", "nobody"), 66, "no user nobody"),
        (("keys", "rm", "nobody", "SHA256:abc"), 66, "no user nobody"),
        (("roles", "add", "r", "--hosts", "name:nohost"), 65, "unknown host 'nohost'"),
        (("budgets", "set", "--daily", "3"), 2, "exactly one of --user or --team"),
        (("datasets", "add", "d1", "--region", "xx"), 65, "unknown region 'xx'"),
    ],
)
def test_bad_inputs_are_one_line_with_exit_codes(
    gpuhop: Gpuhop, args: tuple[str, ...], code: int, words: str
) -> None:
    done = gpuhop(*args)
    assert done.returncode == code, done.stderr
    assert words in one_line(done.stderr)


def test_duplicate_user_is_refused(gpuhop: Gpuhop, stack: GatewayStack) -> None:
    _, pub = new_user(stack, "hank")
    assert gpuhop("users", "add", "hank", "--key", str(pub)).returncode == 0
    again = gpuhop("users", "add", "hank")
    assert again.returncode == 65 and "user hank already exists" in one_line(again.stderr)
    other = gpuhop("users", "add", "hank2", "--key", str(pub))
    assert other.returncode == 65 and "already registered to user hank" in one_line(other.stderr)


def test_teams_datasets_budgets(gpuhop: Gpuhop, stack: GatewayStack) -> None:
    assert gpuhop("teams", "add", "ml").returncode == 0
    _, pub = new_user(stack, "ivy")
    assert gpuhop("users", "add", "ivy", "--team", "ml", "--key", str(pub)).returncode == 0
    busy = gpuhop("teams", "rm", "ml")
    assert busy.returncode == 65 and "has members (ivy)" in busy.stderr
    assert (
        gpuhop("budgets", "set", "--team", "ml", "--daily", "5", "--monthly", "50").returncode == 0
    )
    budgets = json.loads(gpuhop("budgets", "ls", "--json").stdout)
    assert {k: budgets[0][k] for k in ("user", "team", "daily", "monthly")} == {
        "user": "",
        "team": "ml",
        "daily": 5.0,
        "monthly": 50.0,
    }
    assert gpuhop("datasets", "add", "genomes", "--country", "SG").returncode == 0
    url = f"http://127.0.0.1:{stack.api_port}/v1/placement"
    token = _token(stack, "alice", "user")
    placed = httpx.get(
        url,
        params={"data": "genomes", "gpus": 1},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert placed.status_code == 200, placed.text
    excluded = {e["name"]: e["reasons"] for e in placed.json()["excluded"]}
    assert "my-1" in excluded and any("genomes" in r for r in excluded["my-1"])
    assert gpuhop("budgets", "rm", "--team", "ml").returncode == 0
    assert gpuhop("users", "rm", "ivy").returncode == 0
    assert gpuhop("teams", "rm", "ml").returncode == 0


# -- hosts ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def new_host(stack: GatewayStack) -> Iterator[SshdHost]:
    """A third sshd the gateway's config does not name."""
    host = SshdHost(
        name="sg-2",
        directory=stack.root / "hosts" / "sg-2",
        gpus=2,
        gpu_model="NVIDIA A100-SXM4-80GB",
        user_ca_pub=stack.host_ca_lines(),
        authorized_keys=[],
    )
    host.start()
    try:
        yield host
    finally:
        host.stop()


def keygen_fingerprint(host: SshdHost) -> str:
    pub = Path(str(host.files.host_key) + ".pub")
    out = subprocess.run(
        ["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True, check=True
    )
    return out.stdout.split()[1]


def test_hosts_add_checks_the_scanned_key(
    stack: GatewayStack, gpuhop: Gpuhop, new_host: SshdHost
) -> None:
    port = str(new_host.port)
    real = keygen_fingerprint(new_host)
    base = ("hosts", "add", "sg-2", "--region", "sg", "--address", "127.0.0.1", "--port", port)
    wrong = gpuhop(*base, "--fingerprint", "SHA256:" + "A" * 43)
    assert wrong.returncode == 65
    assert f"presents {real}" in one_line(wrong.stderr)
    unconfirmed = gpuhop(*base)  # not a terminal, nothing pinned
    assert unconfirmed.returncode == 2
    assert f"--fingerprint {real}" in one_line(unconfirmed.stderr)
    assert "sg-2" not in gpuhop("hosts", "ls").stdout

    added = gpuhop(*base, "--fingerprint", real)
    assert added.returncode == 0, added.stderr
    with stack.known_hosts.open("a") as fh:
        fh.write(f"sg-2 {new_host.host_key_line}\n")
    alice = stack.users["alice"]
    # Certificates name the hosts they open (root@sg-2): alice gets a new one, as her
    # next `gpuhop login` would, before she can use the host just added.
    assert alice.cert is not None
    resign = [sys.executable, "-m", "gateway.cli", "ca", "sign", "--config", str(stack.config)]
    pub = str(alice.key) + ".pub"
    signed = subprocess.run(
        [*resign, "--user", "alice", "--pubkey", pub, "--out", str(alice.cert)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert signed.returncode == 0 and "root@sg-2" in signed.stdout, signed.stderr
    done = ssh_ok(stack, alice, "sg-2")
    assert done.returncode == 0, done.stderr
    url = f"http://127.0.0.1:{stack.api_port}/v1/hosts"
    headers = {"Authorization": f"Bearer {_token(stack, 'alice', 'user')}"}

    def probed_up() -> bool:
        hosts = {h["name"]: h for h in httpx.get(url, headers=headers, timeout=10).json()}
        return hosts.get("sg-2", {}).get("status") == "up"

    assert eventually(probed_up, 20), "the added host is never probed"
    event = [e for e in stack.audit_events("admin.host.add") if e["host"] == "sg-2"][-1]
    assert event["spec"]["host_key"] == new_host.host_key_line
    assert gpuhop("hosts", "rm", "sg-2").returncode == 0
    assert ssh_ok(stack, alice, "sg-2").returncode != 0


def test_hosts_add_confirms_on_a_terminal(
    stack: GatewayStack, admin_token: str, new_host: SshdHost
) -> None:
    """On a TTY the scanned fingerprint is shown and y/N asked; N adds nothing, y pins it."""
    real = keygen_fingerprint(new_host)
    env = client_env(stack, admin_token, stack.root / "client-home")
    cmd = [
        sys.executable,
        "-m",
        "client.cli",
        "admin",
        "hosts",
        "add",
        "sg-3",
        "--region",
        "sg",
        "--address",
        "127.0.0.1",
        "--port",
        str(new_host.port),
    ]
    for answer, code in ((b"n\n", 2), (b"y\n", 0)):
        main, side = pty.openpty()
        proc = subprocess.Popen(cmd, stdin=side, stdout=side, stderr=side, env=env)
        os.close(side)
        seen = b""
        deadline = time.monotonic() + 30
        while b"Pin this key?" not in seen and time.monotonic() < deadline:
            if select.select([main], [], [], 0.5)[0]:
                try:
                    seen += os.read(main, 4096)
                except OSError:
                    break
        assert real.encode() in seen, seen
        os.write(main, answer)
        assert proc.wait(30) == code
        os.close(main)
    hosts = gpuhop_ls(stack, admin_token)
    assert "sg-3" in hosts
    assert local(stack, "hosts", "rm", "sg-3").returncode == 0


def gpuhop_ls(stack: GatewayStack, token: str) -> str:
    env = client_env(stack, token, stack.root / "client-home")
    cmd = [sys.executable, "-m", "client.cli", "admin", "hosts", "ls"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env).stdout


# -- the local CLI --------------------------------------------------------------------


def test_local_cli_change_reaches_the_running_gateway(stack: GatewayStack) -> None:
    frank, pub = new_user(stack, "frank")
    done = local(stack, "users", "add", "frank", "--role", "rec", "--key", str(pub))
    assert done.returncode == 0, done.stderr
    assert eventually(lambda: ssh_ok(stack, frank).returncode == 0, 10)
    event = [e for e in stack.audit_events("admin.user.add") if e["user"] == "frank"][-1]
    assert event["actor"].startswith("local:")
    listed = local(stack, "users", "ls")
    assert any(line.split()[0] == "frank" for line in listed.stdout.splitlines()[1:])
    assert local(stack, "users", "rm", "frank").returncode == 0
    assert eventually(lambda: ssh_ok(stack, frank).returncode != 0, 10)
    token = local(stack, "users", "rm", "frank")
    assert token.returncode == 66 and "no user frank" in one_line(token.stderr)


# -- replicas -------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.slow
def test_user_added_on_one_replica_logs_in_through_the_other(
    tmp_path: Path, pg_server: PgServer
) -> None:
    from tests.integration.test_replicas import (
        admin_token as replica_admin_token,
    )
    from tests.integration.test_replicas import (
        make_stack,
        ssh_configs,
        start_replica,
        stop_replica,
        write_known_hosts,
    )

    replicas = []
    stack = None
    try:
        stack = make_stack(tmp_path, pg_server.create_database())
        replicas = [start_replica(stack, "a"), start_replica(stack, "b")]
        write_known_hosts(stack, replicas)
        token = replica_admin_token(stack)
        kate, _ = new_user(stack, "kate")
        cfg = ssh_configs(stack, replicas)["kate", "b"]
        body = {
            "name": "kate",
            "roles": ["rec"],
            "keys": [public_line(ensure_private_key(kate.key, ""))],
        }
        response = httpx.post(
            f"http://127.0.0.1:{replicas[0].api_port}/v1/admin/users",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert response.status_code == 201, response.text
        added = time.monotonic()
        cmd = ["ssh", "-F", str(cfg), "-J", "gw", "-T", "root@sg-1", "echo", "via-b"]
        assert eventually(lambda: stack.run(cmd).returncode == 0, 10)
        assert time.monotonic() - added < 10
        assert stack.run(cmd).stdout.strip() == b"via-b"
    finally:
        for r in replicas:
            stop_replica(r)
        if stack is not None:
            stack.close()
