"""The ``gpuhop`` command against a real gateway subprocess and real OpenSSH hosts.

Each test drives the installed CLI as a subprocess (``python -m client.cli``)
with its own HOME, XDG dirs and a file keyring backend (keyrings.alt), exactly
as a developer or CI runner would. Tokens come from ``gpuhop-gateway token
create``. Host-side checks look at the real process table: the simulated hosts
are sshd processes on this machine, so ``pgrep`` sees what a job left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from gpuhop_sim.delayproxy import ThreadedDelayProxy
from tests.integration.conftest import ROLES, need_openssh
from tests.integration.gwstack import GatewayStack, read_until

pytestmark = pytest.mark.openssh

FILE_KEYRING = "keyrings.alt.file.PlaintextKeyring"
NO_KEYRING = "keyring.backends.fail.Keyring"
HOST_FIELDS = {
    "name",
    "region",
    "status",
    "gpu_model",
    "gpus_total",
    "gpus_free",
    "price_per_gpu_hour",
    "rtt_ms",
}


@dataclass
class Client:
    """One machine's worth of gpuhop state: HOME, XDG dirs, keyring backend."""

    root: Path
    keyring: str = FILE_KEYRING
    extra: dict[str, str] | None = None

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def data_dir(self) -> Path:
        return self.root / "xdg" / "data" / "gpuhop"

    def env(self) -> dict[str, str]:
        keep = ("PATH", "LANG", "LC_ALL", "TERM", "SYSTEMROOT")
        env = {k: v for k, v in os.environ.items() if k in keep}
        env.update(
            HOME=str(self.home),
            PYTHON_KEYRING_BACKEND=self.keyring,
            PYTHONDONTWRITEBYTECODE="1",
        )
        for kind in ("DATA", "CONFIG", "STATE", "CACHE"):
            env[f"XDG_{kind}_HOME"] = str(self.root / "xdg" / kind.lower())
        env.update(self.extra or {})
        return env

    def setup(self) -> Client:
        self.home.mkdir(parents=True, exist_ok=True)
        for kind in ("data", "config", "state", "cache"):
            (self.root / "xdg" / kind).mkdir(parents=True, exist_ok=True)
        return self

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "client.cli", *args]

    def gpuhop(
        self, *args: str, stdin: str | None = None, timeout: float = 60.0, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args),
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
            cwd=cwd or self.home,
        )

    def popen(self, *args: str, cwd: Path | None = None) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.argv(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=self.env(),
            cwd=cwd or self.home,
        )


@dataclass
class Env:
    stack: GatewayStack
    proxy: ThreadedDelayProxy

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.stack.api_port}"

    def token(self, user: str, scope: str = "user") -> str:
        result = subprocess.run(
            [
                *(sys.executable, "-m", "gateway.cli", "token", "create"),
                *("--config", str(self.stack.config), "--user", user, "--scope", scope),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        secret = result.stdout.strip().splitlines()[-1]
        assert secret.startswith("gph_"), result.stdout
        return secret

    def login(self, client: Client, user: str, scope: str = "user") -> str:
        secret = self.token(user, scope)
        result = client.setup().gpuhop("login", self.url, "--token-stdin", stdin=secret + "\n")
        assert result.returncode == 0, result.stderr
        return secret


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    need_openssh()
    root = tmp_path_factory.mktemp("clientstack")
    stack = GatewayStack(root)
    stack.ca()
    stack.add_host("sg-1")
    stack.add_host("my-1")
    far = stack.add_host("ae-1")
    proxy = ThreadedDelayProxy("127.0.0.1", far.port, 0.0).start()
    stack.host_addresses["ae-1"] = ("127.0.0.1", proxy.port)  # the gateway reaches ae-1 via it
    stack.add_user("rita")  # recorded sessions
    stack.add_user("alice")  # passthrough only: `gpuhop run` (recorded) is denied
    stack.write_config(ROLES, {"rita": ["rec"], "alice": ["dev"]})
    try:
        stack.start_gateway()
        yield Env(stack, proxy)
    finally:
        stack.close()
        proxy.stop()


@pytest.fixture(scope="module")
def rita(env: Env, tmp_path_factory: pytest.TempPathFactory) -> Client:
    client = Client(tmp_path_factory.mktemp("rita"))
    env.login(client, "rita")
    return client


def _pids(pattern: str) -> list[int]:
    result = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return [int(p) for p in result.stdout.split() if int(p) != os.getpid()]


def _wait_no_pids(pattern: str, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    pids = _pids(pattern)
    while pids and time.monotonic() < deadline:
        time.sleep(0.05)
        pids = _pids(pattern)
    return pids


def _kill_pids(pids: Sequence[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    assert proc.stdout is not None
    return read_until(proc.stdout.fileno(), b"\n", timeout)


# -- login and hosts -----------------------------------------------------------


def test_login_keeps_the_token_in_the_keyring_and_lists_hosts(env: Env, tmp_path: Path) -> None:
    client = Client(tmp_path)
    secret = env.login(client, "rita")
    stored = subprocess.run(
        [sys.executable, "-c", "import keyring; print(keyring.get_password('gpuhop', 'token'))"],
        capture_output=True,
        text=True,
        env=client.env(),
        timeout=30,
        check=True,
    )
    assert stored.stdout.strip() == secret
    key = client.data_dir / "id_ed25519"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert (
        (client.data_dir / "id_ed25519-cert.pub")
        .read_text()
        .startswith("ssh-ed25519-cert-v01@openssh.com ")
    )
    known = (client.data_dir / "known_hosts").read_text()
    assert f"[127.0.0.1]:{env.stack.port} ssh-ed25519 " in known
    assert "@cert-authority ae-1,my-1,sg-1 ssh-ed25519 " in known

    listed = client.gpuhop("hosts", "--json")
    assert listed.returncode == 0, listed.stderr
    hosts = json.loads(listed.stdout)
    assert {h["name"] for h in hosts} == {"sg-1", "my-1", "ae-1"}
    for h in hosts:
        assert set(h) >= HOST_FIELDS
    names = client.gpuhop("hosts", "--quiet")
    assert sorted(names.stdout.split()) == ["ae-1", "my-1", "sg-1"]
    table = client.gpuhop("hosts")
    assert table.returncode == 0 and "sg-1" in table.stdout and "\x1b[" not in table.stdout


def test_logout_forgets_token_and_certificate(env: Env, tmp_path: Path) -> None:
    client = Client(tmp_path)
    env.login(client, "rita")
    out = client.gpuhop("logout")
    assert out.returncode == 0, out.stderr
    assert not (client.data_dir / "id_ed25519-cert.pub").exists()
    again = client.gpuhop("hosts")
    assert again.returncode == 78
    assert again.stderr.count("\n") == 1 and "gpuhop login" in again.stderr


def test_no_keyring_backend_is_one_line(env: Env, tmp_path: Path) -> None:
    client = Client(tmp_path, keyring=NO_KEYRING).setup()
    secret = env.token("rita")
    for args, stdin in ((("login", env.url, "--token-stdin"), secret + "\n"), (("hosts",), None)):
        result = client.gpuhop(*args, stdin=stdin)
        assert result.returncode == 78, result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
        assert "GPUHOP_GATEWAY" in result.stderr and "GPUHOP_TOKEN" in result.stderr
        assert "Traceback" not in result.stderr


def test_environment_credentials_need_no_keyring(env: Env, tmp_path: Path) -> None:
    secret = env.token("rita", "ci")
    client = Client(
        tmp_path, keyring=NO_KEYRING, extra={"GPUHOP_GATEWAY": env.url, "GPUHOP_TOKEN": secret}
    ).setup()
    listed = client.gpuhop("hosts", "--json")
    assert listed.returncode == 0, listed.stderr
    ran = client.gpuhop("run", "--host", "sg-1", "-q", "--", "echo", "from-ci")
    assert (ran.returncode, ran.stdout) == (0, "from-ci\n"), ran.stderr


def test_rejected_token_is_exit_78(env: Env, tmp_path: Path) -> None:
    client = Client(
        tmp_path, extra={"GPUHOP_GATEWAY": env.url, "GPUHOP_TOKEN": "gph_" + "x" * 43}
    ).setup()
    result = client.gpuhop("hosts")
    assert result.returncode == 78 and "token_unknown" in result.stderr


# -- gpuhop run ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "code"),
    [(["true"], 0), (["sh", "-c", "exit 3"], 3), (["sh", "-c", "kill -9 $$"], 137)],
)
def test_run_exit_codes_are_exact(rita: Client, command: list[str], code: int) -> None:
    result = rita.gpuhop("run", "--host", "sg-1", "-q", "--", *command)
    assert result.returncode == code, result.stderr
    assert result.stderr == ""


def test_run_streams_stdout_and_stderr_separately_in_order(rita: Client) -> None:
    script = "for i in 1 2 3 4 5 6; do echo out$i; echo err$i >&2; done; sleep 2; echo last"
    with rita.popen("run", "--host", "sg-1", "-q", "--", "sh", "-c", script) as proc:
        _check_streams(proc)


def _check_streams(proc: subprocess.Popen[bytes]) -> None:
    try:
        started = time.monotonic()
        first = _read_line(proc, 15)
        first_at = time.monotonic() - started
        out, err = proc.communicate(timeout=30)
        total = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
    assert first == b"out1\n" or first.startswith(b"out1\n")
    assert total - first_at > 1.5, "output was not streamed live"
    stdout = first + out
    assert stdout == b"".join(b"out%d\n" % i for i in range(1, 7)) + b"last\n"
    assert err == b"".join(b"err%d\n" % i for i in range(1, 7))
    assert proc.returncode == 0


def test_run_sends_tracked_files_minus_gpuhopignore(rita: Client, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    (repo / "src" / "train.py").write_text("print('hi')\n")
    (repo / "data.bin").write_bytes(os.urandom(300_000))
    (repo / "secret.env").write_text("TOKEN=1\n")
    (repo / ".gpuhopignore").write_text("*.env\n")
    run_sh = repo / "run.sh"
    run_sh.write_text("#!/bin/sh\necho ran\n")
    run_sh.chmod(0o755)
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    (repo / "untracked.txt").write_text("not sent\n")
    listing = "find . -type f | sort; ./run.sh; echo $SEED; md5sum data.bin"
    result = rita.gpuhop(
        "run", "--host", "my-1", "-q", "--workdir", str(repo), "-e", "SEED=42", "--json", "--",
        "sh", "-c", listing,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    summary = json.loads(lines[-1])
    files = [line for line in lines if line.startswith("./")]
    assert files == ["./.gpuhopignore", "./data.bin", "./run.sh", "./src/train.py"]
    assert "ran" in lines and "42" in lines
    import hashlib

    digest = hashlib.md5((repo / "data.bin").read_bytes()).hexdigest()
    assert any(line.startswith(digest) for line in lines)
    assert summary["host"] == "my-1" and summary["region"] == "my"
    assert summary["exit_code"] == 0 and summary["outcome"] == "exited"
    assert summary["bytes_sent"] > 300_000 and summary["bytes_received"] > 0
    assert summary["duration_s"] > 0 and "rtt_ms" in summary and "cost_usd" in summary


def test_run_by_region(rita: Client) -> None:
    result = rita.gpuhop("run", "--region", "my", "--json", "-q", "--", "true")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["host"] == "my-1"
    none = rita.gpuhop("run", "--region", "zz", "-q", "--", "true")
    assert none.returncode == 68, none.stderr


def test_sigint_leaves_no_process_on_the_host(rita: Client) -> None:
    marker = f"sleep 600.{os.getpid() % 1000:03d}1"
    with rita.popen("run", "--host", "sg-1", "--", "sh", "-c", f"echo up; {marker}") as proc:
        _interrupt(proc, marker)


def _interrupt(proc: subprocess.Popen[bytes], marker: str) -> None:
    try:
        assert _read_line(proc, 20) == b"up\n"
        deadline = time.monotonic() + 10
        while not _pids(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _pids(marker), "the job never started on the host"
        proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        proc.wait(10)
        assert proc.returncode == 130
        left = _wait_no_pids(marker, 5.0 - (time.monotonic() - started))
        assert left == [], f"still running on the host: {left}"
    finally:
        if proc.poll() is None:
            proc.kill()
        _kill_pids(_pids(marker))


def test_timeout_kills_the_job(rita: Client) -> None:
    marker = f"sleep 600.{os.getpid() % 1000:03d}2"
    started = time.monotonic()
    result = rita.gpuhop("run", "--host", "sg-1", "-q", "--timeout", "1s", "--", "sh", "-c", marker)
    try:
        assert result.returncode == 124, result.stderr
        assert time.monotonic() - started < 15
        assert "--timeout" in result.stderr
        assert _wait_no_pids(marker, 5.0) == []
    finally:
        _kill_pids(_pids(marker))


def test_policy_denial_has_its_own_code(env: Env, tmp_path: Path) -> None:
    alice = Client(tmp_path)
    env.login(alice, "alice")
    result = alice.gpuhop("run", "--host", "sg-1", "-q", "--", "true")
    assert result.returncode == 77, result.stderr
    assert "recorded" in result.stderr and result.stderr.count("\n") == 1
    as_json = alice.gpuhop("run", "--host", "sg-1", "-q", "--json", "--", "true")
    summary = json.loads(as_json.stdout.splitlines()[-1])
    assert (as_json.returncode, summary["outcome"], summary["exit_code"]) == (77, "denied", 77)


def test_gpus_are_leased_through_the_gateway(rita: Client) -> None:
    script = 'echo "$GPUHOP_GPUS:$CUDA_VISIBLE_DEVICES"'
    result = rita.gpuhop("run", "--host", "sg-1", "--gpus", "2", "-q", "--", "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    gpus, _, devices = result.stdout.strip().partition(":")
    assert gpus == "2" and len(devices.split(",")) == 2, result.stdout
    too_many = rita.gpuhop("run", "--host", "sg-1", "--gpus", "9", "-q", "--", "true")
    assert too_many.returncode == 68, too_many.stderr


def test_unknown_host_is_68(rita: Client) -> None:
    result = rita.gpuhop("run", "--host", "nowhere-9", "-q", "--", "true")
    assert result.returncode == 68, result.stderr


def test_an_unreachable_gateway_is_one_line_and_no_progress(rita: Client, tmp_path: Path) -> None:
    cut_off = Client(tmp_path / "cut-off")
    shutil.copytree(rita.root, cut_off.root)
    profile = cut_off.data_dir / "profile.json"
    data = json.loads(profile.read_text())
    with socket.socket() as closed:  # a port nothing listens on: the gateway's SSH is down
        closed.bind(("127.0.0.1", 0))
        data["ssh_port"] = closed.getsockname()[1]
    profile.write_text(json.dumps(data))
    result = cut_off.gpuhop("run", "--host", "sg-1", "--", "true")
    assert result.returncode == 69, result.stderr
    assert result.stderr.count("\n") == 1 and "sending" not in result.stderr, result.stderr


@pytest.mark.slow
def test_frozen_host_link_is_lost_within_20s(env: Env, rita: Client) -> None:
    marker = f"sleep 600.{os.getpid() % 1000:03d}3"
    with rita.popen("run", "--host", "ae-1", "--", "sh", "-c", f"echo up; {marker}") as proc:
        _freeze(env, proc, marker)


def _freeze(env: Env, proc: subprocess.Popen[bytes], marker: str) -> None:
    try:
        assert _read_line(proc, 20) == b"up\n"
        time.sleep(3)  # past the heartbeat's start
        env.proxy.freeze()
        frozen = time.monotonic()
        proc.wait(25)
        elapsed = time.monotonic() - frozen
        assert proc.returncode == 75, proc.stderr.read() if proc.stderr else b""
        assert elapsed < 20, elapsed
        assert proc.stderr is not None and b"ae-1" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        env.proxy.thaw()
        _kill_pids(_pids(marker))


# -- ssh and ssh-config ----------------------------------------------------------


def test_gpuhop_ssh_runs_openssh_with_its_exit_status(rita: Client) -> None:
    ok = rita.gpuhop("ssh", "sg-1", "echo", "via-ssh")
    assert (ok.returncode, ok.stdout) == (0, "via-ssh\n"), ok.stderr
    code = rita.gpuhop("ssh", "my-1", "exit 7")
    assert code.returncode == 7, code.stderr
    flags = rita.gpuhop("ssh", "sg-1", "ls", "-l", "-a", "/")  # flags after HOST are the command's
    assert flags.returncode == 0 and "root" in flags.stdout, flags.stderr
    config = (rita.data_dir / "ssh_config").read_text()
    assert "ServerAliveInterval 5" in config and "ServerAliveCountMax 3" in config
    assert "ProxyJump gpuhop-gateway" in config


def test_gpuhop_ssh_gpus_and_env_reach_the_host(rita: Client) -> None:
    script = 'echo "$GPUHOP_GPUS|$CUDA_VISIBLE_DEVICES|$LC_NOTE"'  # the hosts AcceptEnv LC_*
    result = rita.gpuhop("ssh", "--gpus", "2", "-e", 'LC_NOTE=a "b" c', "sg-1", script)
    assert result.returncode == 0, result.stderr
    gpus, devices, msg = result.stdout.strip().split("|")
    assert (gpus, len(devices.split(",")), msg) == ("2", 2, 'a "b" c'), result.stdout
    bad = rita.gpuhop("ssh", "--env", "no-equals", "sg-1", "true")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr


def test_ssh_config_install_drives_plain_ssh_and_scp(rita: Client, tmp_path: Path) -> None:
    user_config = rita.home / ".ssh" / "config"
    user_config.parent.mkdir(parents=True, exist_ok=True)
    user_config.write_text("Host *\n  User nobody-else\n")  # overrides, once below the Include
    printed = rita.gpuhop("ssh-config")
    assert printed.returncode == 0, printed.stderr
    assert "Host sg-1" in printed.stdout and "@cert-authority" not in printed.stdout
    assert "warning" in printed.stderr and "user" in printed.stderr
    installed = rita.gpuhop("ssh-config", "--install")
    assert installed.returncode == 0, installed.stderr
    assert "warning" not in installed.stderr  # the Include went above the Host * block
    text = user_config.read_text()
    assert text.index("Include ") < text.index("Host *")
    again = rita.gpuhop("ssh-config", "--install")
    assert user_config.read_text() == text and again.returncode == 0

    # OpenSSH reads ~ from the password database, so point it at this HOME's config.
    ssh = ["ssh", "-F", str(user_config), "-o", "BatchMode=yes"]
    hello = subprocess.run([*ssh, "sg-1", "echo", "plain-ssh"], capture_output=True, timeout=30)
    assert (hello.returncode, hello.stdout) == (0, b"plain-ssh\n"), hello.stderr
    local = tmp_path / "payload.bin"
    local.write_bytes(os.urandom(200_000))
    remote = f"/tmp/gpuhop-client-scp-{os.getpid()}.bin"
    back = tmp_path / "back.bin"
    scp = ["scp", "-q", "-F", str(user_config), "-o", "BatchMode=yes"]
    try:
        up = subprocess.run([*scp, str(local), f"sg-1:{remote}"], capture_output=True, timeout=30)
        assert up.returncode == 0, up.stderr
        down = subprocess.run([*scp, f"sg-1:{remote}", str(back)], capture_output=True, timeout=30)
        assert down.returncode == 0, down.stderr
        assert back.read_bytes() == local.read_bytes()
    finally:
        Path(remote).unlink(missing_ok=True)


def test_pick_ranks_and_explains_and_run_region_any_uses_it(rita: Client) -> None:
    deadline = time.monotonic() + 20  # probes report every host
    while time.monotonic() < deadline:
        hosts = json.loads(rita.gpuhop("hosts", "--json").stdout)
        if all(h["rtt_ms"] is not None for h in hosts):
            break
        time.sleep(0.5)
    # Live RTTs move between calls; ranked on cost alone the state is fixed (ties by name).
    first = rita.gpuhop("pick", "--gpus", "1", "--weights", "1,0,0", "--json")
    assert first.returncode == 0, first.stderr
    ranked = json.loads(first.stdout)
    names = [r["name"] for r in ranked["ranked"]]
    assert names
    assert {e["name"] for e in ranked["excluded"]}.isdisjoint(names)
    assert all(e["reasons"] for e in ranked["excluded"])
    again = json.loads(rita.gpuhop("pick", "--gpus", "1", "--weights", "1,0,0", "--json").stdout)
    assert [r["name"] for r in again["ranked"]] == names
    table = rita.gpuhop("pick", "--gpus", "1")
    assert table.returncode == 0 and names[0] in table.stdout
    run = rita.gpuhop("run", "--region", "any", "--gpus", "1", "--json", "-q", "--", "true")
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["host"] in names  # a qualifying host (live latency decides which)
    assert summary["cost_usd"] is not None and summary["cost_usd"] >= 0


def test_pick_and_run_say_clearly_when_nothing_fits(rita: Client) -> None:
    none_fit = rita.gpuhop("pick", "--gpus", "99")
    assert none_fit.returncode == 68, none_fit.stderr  # not 0: nothing was ranked
    assert "EXCLUDED" in none_fit.stdout and none_fit.stderr.count("\n") == 1
    as_json = rita.gpuhop("pick", "--gpus", "99", "--json")
    assert as_json.returncode == 68 and json.loads(as_json.stdout)["ranked"] == []
    no_data = rita.gpuhop("pick", "--data", "nosuch")
    assert no_data.returncode == 2, no_data.stderr
    assert no_data.stderr == "gpuhop: no data set named 'nosuch'\n"
    region = rita.gpuhop("run", "--region", "xx", "-q", "--", "true")
    assert region.returncode == 68, region.stderr
    assert region.stderr.startswith("gpuhop: unknown region xx (known: ae, my, sg)")


def test_a_spent_budget_shows_in_hosts_and_pick(env: Env, tmp_path: Path) -> None:
    admin, alice = Client(tmp_path / "admin"), Client(tmp_path / "alice")
    env.login(admin, "rita", scope="admin")
    env.login(alice, "alice")
    spent = admin.gpuhop("admin", "budgets", "set", "--user", "alice", "--daily", "0")
    assert spent.returncode == 0, spent.stderr
    try:
        listing = json.loads(alice.gpuhop("hosts", "--json").stdout)
        assert listing and not any(h["allowed"] for h in listing)
        assert all("daily budget" in h["reason"] for h in listing), listing
        table = alice.gpuhop("hosts")
        assert table.returncode == 0 and "not usable: " in table.stdout, table.stdout
        assert "daily budget" in table.stdout
        picked = alice.gpuhop("pick", "--gpus", "1", "--json")
        assert picked.returncode == 68, picked.stderr
        excluded = json.loads(picked.stdout)["excluded"]
        assert excluded and all(any("daily budget" in r for r in e["reasons"]) for e in excluded), (
            excluded
        )
    finally:
        gone = admin.gpuhop("admin", "budgets", "rm", "--user", "alice")
        assert gone.returncode == 0, gone.stderr
    again = json.loads(alice.gpuhop("hosts", "--json").stdout)
    assert all(h["allowed"] and h["reason"] == "" for h in again), again


# ---------------------------------------------------------------- golden test


def test_pick_golden_runs_on_the_best_hosts_and_measures_time_and_cost(
    env: Env, rita: Client
) -> None:
    before = len(env.stack.audit_events("placement.golden"))
    result = rita.gpuhop("pick", "--golden", "--gpus", "1", "--top", "2", "--json")
    assert result.returncode == 0, result.stderr
    golden = json.loads(result.stdout)
    assert "nvidia-smi" in golden["command"]  # the gateway's default
    hosts = golden["hosts"]
    assert [h["rank"] for h in hosts] == [1, 2]
    for h in hosts:
        assert h["status"] == "ok" and h["exit_status"] == 0, h
        assert h["seconds"] > 0 and len(h["gpus"]) == 1
        # 1 GPU at 2.5/h for the seconds measured there (rounded to 6 places).
        assert h["measured_cost"] == pytest.approx(2.5 * h["seconds"] / 3600, abs=2e-5)
        assert any("NVIDIA" in line for line in h["output"]), h["output"]  # the host's nvidia-smi
    events = env.stack.audit_events("placement.golden")[before:]
    assert sorted(e["host"] for e in events) == sorted(h["name"] for h in hosts)
    assert all(e["user"] == "rita" and e["result"] == "ok" for e in events)
    # The GPUs were leased for the run only.
    for h in json.loads(rita.gpuhop("hosts", "--json").stdout):
        assert h["gpus_free"] == h["gpus_total"], h

    table = rita.gpuhop("pick", "--golden", "--top", "1")
    assert table.returncode == 0, table.stderr
    assert "golden test:" in table.stdout and " ok " in f" {table.stdout} "


def test_pick_golden_reports_a_failing_command_and_a_slow_one_per_host(rita: Client) -> None:
    failed = rita.gpuhop("pick", "--golden", "--top", "2", "--json", "--", "sh", "-c", "exit 3")
    assert failed.returncode == 1  # no host ran it successfully
    golden = json.loads(failed.stdout)
    assert golden["command"] == "sh -c 'exit 3'"
    assert {(h["status"], h["exit_status"]) for h in golden["hosts"]} == {("failed", 3)}

    slow = rita.gpuhop(
        "pick", "--golden", "--top", "1", "--timeout", "1", "--json", "--", "sleep", "5"
    )
    assert slow.returncode == 1
    [host] = json.loads(slow.stdout)["hosts"]
    assert host["status"] == "timeout" and "1 s" in host["error"], host


def test_pick_golden_refuses_what_the_role_does_not_allow(
    env: Env, tmp_path_factory: pytest.TempPathFactory
) -> None:
    alice = Client(tmp_path_factory.mktemp("alice-golden"))
    env.login(alice, "alice")  # passthrough only: hosts rank, but nothing runs there
    result = alice.gpuhop("pick", "--golden", "--top", "1", "--json")
    assert result.returncode == 1
    [host] = json.loads(result.stdout)["hosts"]
    assert host["status"] == "denied" and host["error"].startswith("denied: "), host
    assert host["exit_status"] is None and host["gpus"] == []

    usage = alice.gpuhop("pick", "--", "true")
    assert usage.returncode == 2 and "only run with --golden" in usage.stderr
