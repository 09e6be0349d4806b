"""Attacks on "one authority": revocation and kill must reach connections already open.

A user holds an OpenSSH ``ssh -J`` open (a multiplexing master, so new shells go
through the very same jump) while an admin removes them, revokes a role, or
kills the jump; and a user whose certificate says ``force-command``/``no-pty``
tries to shed those restrictions by going through ``ssh -J`` instead of the
direct form. Everything is real: the gateway subprocess, OpenSSH ``ssh`` and
``sshd``, ``ssh-keygen`` for the certificate, httpx for the admin API.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from gateway.adapters.keys import ensure_private_key, public_line
from tests.integration.conftest import build_stack
from tests.integration.gwstack import GatewayStack, StackUser
from tests.integration.pg import PgServer

pytestmark = pytest.mark.openssh

REVOKE_WITHIN_S = 5.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    s = build_stack(tmp_path_factory.mktemp("revocation"))
    try:
        s.start_gateway()
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def admin(stack: GatewayStack) -> Iterator[httpx.Client]:
    cmd = [sys.executable, "-m", "gateway.cli", "token", "create", "--config", str(stack.config)]
    done = subprocess.run(
        [*cmd, "--user", "ops", "--scope", "admin"], capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    token = done.stdout.decode().strip()
    with httpx.Client(
        base_url=f"http://127.0.0.1:{stack.api_port}/v1",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    ) as client:
        yield client


def _ok(response: httpx.Response) -> httpx.Response:
    assert response.is_success, response.text
    return response


def _new_user(stack: GatewayStack, admin: httpx.Client, name: str, roles: list[str]) -> StackUser:
    """A user added through the admin API, logging in with a registered key."""
    user = stack.add_user(name, cert=False)
    key = ensure_private_key(user.key, f"{name}@test")
    _ok(admin.post("/admin/users", json={"name": name, "roles": roles, "keys": [public_line(key)]}))
    return user


def _role(admin: httpx.Client, name: str, accounts: list[str]) -> None:
    body = {"name": name, "hosts": ["*"], "accounts": accounts, "modes": ["recorded"]}
    _ok(admin.post("/admin/roles", json=body))


class Jump:
    """One real OpenSSH ``ssh -J gw root@sg-1`` held open as a multiplexing master.

    Every :meth:`run` opens a new session channel inside that same jump (the
    inner hop the gateway answers), never a new connection: the fallback
    ``ProxyCommand=false`` fails if the master is gone.
    """

    def __init__(self, stack: GatewayStack, user: StackUser, tmp: Path) -> None:
        self.stack = stack
        self.cfg = stack.ssh_config(user)
        self.ctl = tmp / "ctl"
        cmd = ["ssh", "-F", str(self.cfg), "-J", "gw", "-M", "-S", str(self.ctl), "-N"]
        self.master = subprocess.Popen(
            [*cmd, "root@sg-1"], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        assert _eventually(lambda: self.check() == 0, 20), self._master_err()

    def _master_err(self) -> str:
        if self.master.poll() is None:
            return "master still starting"
        return self.master.stderr.read().decode() if self.master.stderr else ""

    def _mux(self, *args: str) -> list[str]:
        return [
            "ssh",
            "-F",
            str(self.cfg),
            "-S",
            str(self.ctl),
            "-o",
            "ControlMaster=no",
            "-o",
            "ProxyCommand=false",
            *args,
        ]

    def check(self) -> int:
        return subprocess.run(self._mux("-O", "check", "root@sg-1"), capture_output=True).returncode

    def run(self, *command: str, tty: bool = False) -> subprocess.CompletedProcess[bytes]:
        return self.stack.run(self._mux("-tt" if tty else "-T", "root@sg-1", *command))

    def start(self, *command: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            self._mux("-T", "root@sg-1", *command),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        return proc

    def close(self) -> None:
        if self.master.poll() is None:
            self.master.terminate()
            self.master.wait(10)
        if self.master.stderr is not None:
            self.master.stderr.close()


@pytest.fixture
def jump_for(stack: GatewayStack, tmp_path: Path) -> Iterator[Callable[[StackUser], Jump]]:
    opened: list[Jump] = []

    def open_jump(user: StackUser) -> Jump:
        jump = Jump(stack, user, tmp_path)
        opened.append(jump)
        return jump

    yield open_jump
    for jump in opened:
        jump.close()


def _eventually(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def _exits_within(proc: subprocess.Popen[bytes], timeout: float) -> float:
    """Seconds until ``proc`` exits; fails the test past ``timeout``."""
    start = time.monotonic()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        pytest.fail(f"still running {timeout:g}s later")
    return time.monotonic() - start


# -- revocation ----------------------------------------------------------------------


def test_removed_users_open_jump_and_shell_end_within_5s(
    stack: GatewayStack, admin: httpx.Client, tmp_path: Path
) -> None:
    """Remove a user while their real ``ssh -J`` shell is open: it ends, saying why."""
    user = _new_user(stack, admin, "remo", ["rec"])
    shell = _shell(stack.jump_command(user, "sg-1"))

    removed_at = time.monotonic()
    _ok(admin.delete("/admin/users/remo"))
    _exits_within(shell, REVOKE_WITHIN_S)
    print(f"\nremoved user's ssh -J shell exited {time.monotonic() - removed_at:.3f}s after DELETE")
    assert shell.returncode != 0
    err = _stderr(shell)
    assert "access revoked: user remo was removed" in err, err

    revoked = stack.wait_audit_events("connection.revoked", lambda e: e["user"] == "remo")
    assert revoked and revoked[0]["reason"] == "user remo was removed"
    sessions = stack.wait_audit_events("session.revoked", lambda e: e["user"] == "remo", count=2)
    assert {e["kind"] for e in sessions} == {"session", "jump"}


def test_removed_users_direct_form_shell_ends(stack: GatewayStack, admin: httpx.Client) -> None:
    user = _new_user(stack, admin, "dora", ["rec"])
    shell = _shell(["ssh", "-F", str(stack.ssh_config(user)), "-T", "dora+sg-1@gw"])
    _ok(admin.delete("/admin/users/dora"))
    _exits_within(shell, REVOKE_WITHIN_S)
    assert "access revoked: user dora was removed" in _stderr(shell)


def test_removed_users_passthrough_jump_ends(stack: GatewayStack, admin: httpx.Client) -> None:
    """Passthrough (end-to-end encrypted to the host's sshd): the gateway cannot write
    into the stream; the outer connection's disconnect carries the reason (OpenSSH's
    ProxyJump does not print it) and the audit log has it."""
    user = stack.add_user("paz")  # a certificate from the gateway CA, which hosts trust
    _ok(admin.post("/admin/users", json={"name": "paz", "roles": ["dev"]}))
    shell = _shell(stack.jump_command(user, "sg-1"))
    started = stack.wait_audit_events("session.start", lambda e: e["user"] == "paz")
    assert started and started[0]["mode"] == "passthrough"
    _ok(admin.delete("/admin/users/paz"))
    _exits_within(shell, REVOKE_WITHIN_S)
    err = _stderr(shell)
    # The outer disconnect's reason shows where OpenSSH prints it; otherwise the bare close,
    # which the inner ssh reports as "closed by remote host" when it reads the proxy's end
    # first, or as "send disconnect: Broken pipe" when it writes first (a race in OpenSSH).
    bare_close = ("closed by remote host", "client_loop: send disconnect: Broken pipe")
    assert "access revoked: user paz was removed" in err or any(b in err for b in bare_close)
    revoked = stack.wait_audit_events(
        "session.revoked", lambda e: e["user"] == "paz" and e["mode"] == "passthrough"
    )
    assert revoked and revoked[0]["reason"] == "user paz was removed"
    assert stack.wait_audit_events("session.end", lambda e: e["user"] == "paz")


def test_removed_key_ends_only_the_connections_that_logged_in_with_it(
    stack: GatewayStack, admin: httpx.Client, tmp_path: Path
) -> None:
    user = _new_user(stack, admin, "kay", ["rec"])
    spare = StackUser("kay", tmp_path / "kay-spare")
    spare_key = ensure_private_key(spare.key, "kay-spare@test")
    _ok(admin.post("/admin/users/kay/keys", json={"key": public_line(spare_key)}))
    doomed = _shell(stack.jump_command(user, "sg-1"))
    spare_cfg = tmp_path / "ssh_config.spare"
    spare_cfg.write_text(stack.ssh_config(user).read_text().replace(str(user.key), str(spare.key)))
    kept = _shell(["ssh", "-F", str(spare_cfg), "-J", "gw", "-T", "root@sg-1"])

    old = public_line(ensure_private_key(user.key, ""))
    _ok(admin.delete("/admin/users/kay/keys", params={"key": old}))
    _exits_within(doomed, REVOKE_WITHIN_S)
    assert "is no longer registered to kay" in _stderr(doomed)
    assert kept.stdin is not None and kept.stdout is not None
    kept.stdin.write(b"echo still-here\n")
    kept.stdin.flush()
    assert kept.stdout.readline() == b"still-here\n"
    kept.stdin.close()
    _exits_within(kept, 10)
    _stderr(kept)


def test_role_revoked_mid_connection_refuses_new_shell_in_the_same_jump(
    stack: GatewayStack, admin: httpx.Client, jump_for: Callable[[StackUser], Jump]
) -> None:
    """Revoke the role that grants ``root``: the live root shell ends, a new one inside
    the same jump is refused, and the jump itself (still allowed by another role) stays."""
    _role(admin, "root-rec", ["root"])
    _role(admin, "daemon-rec", ["daemon"])
    user = _new_user(stack, admin, "ruth", ["root-rec", "daemon-rec"])
    jump = jump_for(user)
    before = jump.run("echo", "in-jump")
    assert (before.returncode, before.stdout) == (0, b"in-jump\n"), before.stderr
    live = jump.start("echo ready; sleep 60")

    _ok(admin.delete("/admin/users/ruth/roles/root-rec"))
    _exits_within(live, REVOKE_WITHIN_S)
    assert live.stderr is not None
    err = live.stderr.read().decode()
    assert "access revoked: role daemon-rec does not allow account 'root'" in err, err
    for pipe in (live.stdout, live.stderr):
        if pipe is not None:
            pipe.close()

    after = jump.run("echo", "in-jump")
    assert after.returncode != 0 and after.stdout == b""
    assert b"denied: role daemon-rec does not allow account 'root'" in after.stderr
    assert jump.check() == 0  # the narrowing closed only what it no longer allows

    revoked = stack.wait_audit_events("session.revoked", lambda e: e["user"] == "ruth")
    assert [e["kind"] for e in revoked] == ["session"]
    assert revoked[0]["account"] == "root" and revoked[0]["jump_id"].startswith("j")


def test_kill_api_ends_a_jump_and_everything_inside(
    stack: GatewayStack, admin: httpx.Client, jump_for: Callable[[StackUser], Jump]
) -> None:
    user = _new_user(stack, admin, "kip", ["rec"])
    jump = jump_for(user)
    live = jump.start("echo ready; sleep 60")
    opened = stack.wait_audit_events("jump.open", lambda e: e["user"] == "kip")
    assert opened, "the jump is not registered"
    jump_id = opened[0]["jump_id"]
    starts = stack.wait_audit_events("session.start", lambda e: e["user"] == "kip")
    assert starts and starts[0]["jump_id"] == jump_id

    killed = _ok(admin.post(f"/sessions/{jump_id}/kill"))
    assert killed.json() == {"session_id": jump_id, "killed": True}
    _exits_within(live, REVOKE_WITHIN_S)
    _exits_within(jump.master, REVOKE_WITHIN_S)
    for pipe in (live.stdout, live.stderr):
        if pipe is not None:
            pipe.close()
    again = admin.post(f"/sessions/{jump_id}/kill")
    assert again.status_code == 404, again.text
    assert stack.wait_audit_events("session.kill", lambda e: e["session_id"] == jump_id)
    ends = stack.wait_audit_events("jump.close", lambda e: e["jump_id"] == jump_id)
    assert ends and ends[0]["reason"] == "this jump was ended by the gateway"


def _shell(cmd: list[str]) -> subprocess.Popen[bytes]:
    """A real ``ssh -J`` shell (no terminal, fed on stdin) that has answered once."""
    shell = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert shell.stdin is not None and shell.stdout is not None
    shell.stdin.write(b"echo ready\n")
    shell.stdin.flush()
    assert shell.stdout.readline() == b"ready\n"
    return shell


def _stderr(shell: subprocess.Popen[bytes]) -> str:
    err = shell.stderr.read().decode() if shell.stderr is not None else ""
    for pipe in (shell.stdin, shell.stdout, shell.stderr):
        if pipe is not None:
            pipe.close()
    return err


def test_user_removed_by_the_local_cli_ends_the_open_jump(
    stack: GatewayStack, admin: httpx.Client
) -> None:
    """A change made outside the gateway process (the directory version poll) reaches
    live connections too."""
    user = _new_user(stack, admin, "lola", ["rec"])
    shell = _shell(stack.jump_command(user, "sg-1"))
    cmd = [sys.executable, "-m", "gateway.cli", "admin", "users", "rm", "lola"]
    done = subprocess.run([*cmd, "--config", str(stack.config)], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    _exits_within(shell, REVOKE_WITHIN_S)
    assert "access revoked: user lola was removed" in _stderr(shell)


@pytest.mark.postgres
@pytest.mark.slow
def test_user_removed_on_replica_a_loses_the_jump_held_on_replica_b(
    tmp_path: Path, pg_server: PgServer
) -> None:
    from tests.integration.test_replicas import (
        admin_token,
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
        with httpx.Client(
            base_url=f"http://127.0.0.1:{replicas[0].api_port}/v1",
            headers={"Authorization": f"Bearer {admin_token(stack)}"},
            timeout=30,
        ) as on_a:
            _new_user(stack, on_a, "rhea", ["rec"])
            cfg = ssh_configs(stack, replicas)["rhea", "b"]
            cmd = ["ssh", "-F", str(cfg), "-J", "gw", "-T", "root@sg-1"]
            deadline = time.monotonic() + 10  # B learns of the new user within one poll
            while stack.run([*cmd, "true"]).returncode != 0 and time.monotonic() < deadline:
                time.sleep(0.2)
            shell = _shell(cmd)
            removed_at = time.monotonic()
            _ok(on_a.delete("/admin/users/rhea"))
            _exits_within(shell, REVOKE_WITHIN_S)
            print(
                f"\nreplica B's ssh -J shell exited {time.monotonic() - removed_at:.3f}s "
                "after the user was removed on replica A"
            )
            assert "access revoked: user rhea was removed" in _stderr(shell)
    finally:
        for r in replicas:
            stop_replica(r)
        if stack is not None:
            stack.close()


# -- certificate restrictions through ssh -J ------------------------------------------


def _restricted_cert(stack: GatewayStack, name: str, tmp: Path, *options: str) -> StackUser:
    """A certificate from the gateway's user CA, signed by real ``ssh-keygen`` with
    ``options`` (``-O`` values); key id and principals as the gateway issues them."""
    tmp.mkdir(parents=True, exist_ok=True)
    key = tmp / f"{name}-restricted"
    ensure_private_key(key, f"{name}@test")
    pub = key.with_name(key.name + ".pub")
    ca = stack.root / "keys" / "user_ca"
    cmd = ["ssh-keygen", "-q", "-s", str(ca), "-I", f"gpuhop:{name}:4242", "-n", f"{name},root"]
    cmd += ["-V", "-5m:+1h"]
    for option in options:
        cmd += ["-O", option]
    done = subprocess.run([*cmd, str(pub)], capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    cert = key.with_name(key.name + "-cert.pub")
    assert cert.exists()
    os.chmod(key, 0o600)
    return StackUser(name, key, cert)


def _through(cfg: Path, form: str, tty: str, command: str) -> list[str]:
    """``ssh -J gw root@sg-1 COMMAND`` or its direct form ``ssh rita+sg-1@gw COMMAND``."""
    where = ["-J", "gw", "root@sg-1"] if form == "jump" else ["rita+sg-1@gw"]
    return ["ssh", "-F", str(cfg), tty, *where, command]


@pytest.mark.parametrize("form", ["direct", "jump"])
def test_force_command_holds_through_jump(stack: GatewayStack, tmp_path: Path, form: str) -> None:
    user = _restricted_cert(stack, "rita", tmp_path, "force-command=tty; echo forced")
    done = stack.run(_through(stack.ssh_config(user), form, "-T", "echo asked"))
    assert (done.returncode, done.stdout) == (0, b"not a tty\nforced\n"), done.stderr
    ends = stack.wait_audit_events(
        "session.end",
        lambda e: e["user"] == "rita" and e["via"] == form and e["command"] == "tty; echo forced",
    )
    assert ends and ends[-1]["exit_status"] == 0


@pytest.mark.parametrize("form", ["direct", "jump"])
def test_no_pty_holds_through_jump(stack: GatewayStack, tmp_path: Path, form: str) -> None:
    """``ssh -tt`` treats a refused terminal as fatal (exit 255), on both forms alike;
    without the restriction the same command line gets a terminal on the host."""
    user = _restricted_cert(stack, "rita", tmp_path, "no-pty")
    done = stack.run(_through(stack.ssh_config(user), form, "-tt", "tty"))
    assert b"/dev/pts" not in done.stdout, (done.stdout, done.stderr)
    assert done.returncode == 255
    assert b"PTY allocation request failed" in done.stderr
    free = _restricted_cert(stack, "rita", tmp_path / "free", "permit-pty")
    control = stack.run(_through(stack.ssh_config(free), form, "-tt", "tty"))
    assert control.returncode == 0 and control.stdout.startswith(b"/dev/pts/"), control.stderr
