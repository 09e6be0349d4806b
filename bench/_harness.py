"""Shared set-up for the side-by-side benches: the gateway next to an OpenSSH jump host.

Every bench runs both jump hosts in one process tree, against the same target:

* **target** — a real OpenSSH ``sshd`` (``SshdHost``) trusting the gateway's user CA;
* **gateway** — ``gpuhop-gateway serve`` as a real subprocess (``GatewayStack``);
* **openssh** — a second ``SshdHost`` as the reference jump host
  (``AllowTcpForwarding yes``; it trusts the same user CA and also lists the
  user's plain key in ``authorized_keys``), so one key and certificate log in
  to either jump host.

The key exchange and the cipher are pinned on every leg: in the client's
ssh_config and at the top of both sshd configs (sshd keeps the first value it
reads). The gateway offers its usual modern list; since each client offers only
``curve25519-sha256`` and ``aes128-gcm@openssh.com``, those are what it
negotiates (``check_algorithms`` proves it with ``ssh -v``).

Recorded mode (issue 4) uses a second user, ``rita``, whose only role has
``modes = ["recorded"]``: ``ssh -J gwr root@sg-1`` makes the gateway answer the
inner hop itself (a host certificate for ``sg-1`` from its host CA, trusted via
``@cert-authority sg-1`` in known_hosts) and re-originate the session on its
own connection to the host, while ``ssh -J ojump root@sg-1`` is the plain
OpenSSH relay to the same sshd (ssh_config's ``Host sg-1`` names the dialled
port and ``HostKeyAlias sg-1``). ``bench_env(target_via=…)`` puts something
(a delay proxy) between both jump hosts and the target.

Scripts run from the repository root: ``python bench/jump_throughput.py``.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # tests.integration.gwstack is not an installed package
    sys.path.insert(0, str(REPO))

from gateway.adapters.keys import ensure_private_key, public_line  # noqa: E402
from gpuhop_sim import procs  # noqa: E402
from gpuhop_sim.sshd import SshdHost  # noqa: E402
from tests.integration.gwstack import GatewayStack, StackUser  # noqa: E402

KEX = "curve25519-sha256"
CIPHER = "aes128-gcm@openssh.com"
VIAS = ("gateway", "openssh")
ALIAS = {"gateway": "gw", "openssh": "ojump"}
CLK_TCK = os.sysconf("SC_CLK_TCK")
GIB = 1024**3
MIB = 1024**2

ROLES = """
[[roles]]
name = "bench"
hosts = ["*"]
accounts = ["root"]
modes = ["passthrough"]

[[roles]]
name = "bench-recorded"
hosts = ["*"]
accounts = ["root"]
modes = ["recorded"]
"""
# The target's inventory name: recorded-mode benches reach it as ``root@sg-1``
# (ssh_config maps it to the dialled port and checks its key under this name).
TARGET_NAME = "sg-1"
# ``alice`` is granted passthrough, ``rita`` recorded mode; same CA, own keys.
REC_USER = "rita"
REC_ALIAS = {"gateway": "gwr", "openssh": "ojump"}


class PinnedSshd(SshdHost):
    """An ``SshdHost`` that accepts only the pinned key exchange and cipher."""

    def _config(self, port: int, optional: Sequence[str]) -> str:
        pins = f"KexAlgorithms {KEX}\nCiphers {CIPHER}\n"
        return pins + super()._config(port, optional)


# -- /proc readers --------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text.rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """utime + stime + cutime + cstime of ``pid`` (reaped children included)."""
    f = _stat_fields(pid)
    return sum(int(x) for x in f[11:15]) / CLK_TCK


def tree_cpu_seconds(pid: int) -> float:
    """CPU of ``pid``, its reaped children, and its live descendants."""
    total = cpu_seconds(pid)
    for child in procs.descendants(pid):
        with contextlib.suppress(OSError):
            total += cpu_seconds(child)
    return total


def memory_kib(pid: int) -> dict[str, int]:
    """``Rss``, ``Pss`` … of one process from ``smaps_rollup``, in KiB."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key] = int(parts[0])
    return out


def tree_memory_kib(pid: int, *, include_root: bool = True) -> tuple[int, int, int]:
    """(Rss, Pss, process count) summed over ``pid``'s tree."""
    pids = procs.descendants(pid) | ({pid} if include_root else set())
    rss = pss = n = 0
    for p in pids:
        with contextlib.suppress(OSError):
            m = memory_kib(p)
            rss, pss, n = rss + m.get("Rss", 0), pss + m.get("Pss", 0), n + 1
    return rss, pss, n


def cpu_busy_fraction(interval: float = 1.0) -> float:
    """Share of all CPUs that was busy over ``interval`` seconds (anything running)."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields[:8]), idle

    t0, i0 = sample()
    time.sleep(interval)
    t1, i1 = sample()
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


def wait_quiet(limit_s: float, busy_below: float = 0.15) -> float:
    """Wait (at most ``limit_s``) until other work leaves the CPUs mostly idle; the share busy."""
    deadline = time.monotonic() + limit_s
    busy = cpu_busy_fraction(1.0)
    while busy >= busy_below and time.monotonic() < deadline:
        busy = cpu_busy_fraction(2.0)
    return busy


def machine_note() -> str:
    load = os.getloadavg()[0]
    return f"load1 {load:.2f}, CPUs busy {cpu_busy_fraction(0.5) * 100:.0f}% before start"


def wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


# -- the environment ------------------------------------------------------------


@dataclass
class BenchEnv:
    root: Path
    stack: GatewayStack
    target: SshdHost
    jump: SshdHost
    user: StackUser
    ssh_config: Path
    known_hosts: Path
    workers: int
    rec_user: StackUser | None = None
    dial_port: int = 0  # where both jump hosts reach the target (a delay proxy, or sshd)

    @property
    def gateway_pid(self) -> int:
        assert self.stack.proc is not None
        return self.stack.proc.pid

    @property
    def jump_pid(self) -> int:
        return int((self.jump.directory / "sshd.pid").read_text().split()[0])

    def server_pid(self, via: str) -> int:
        return self.gateway_pid if via == "gateway" else self.jump_pid

    def jump_port(self, via: str) -> int:
        return self.stack.port if via == "gateway" else self.jump.port

    def jump_login(self, via: str) -> str:
        return self.user.name if via == "gateway" else "root"

    def jump_cmd(self, via: str, *remote: str, opts: Sequence[str] = ()) -> list[str]:
        """``ssh -J <jump> -p PORT root@127.0.0.1 remote…``: the same target leg either way."""
        return [
            "ssh",
            "-F",
            str(self.ssh_config),
            *opts,
            "-J",
            ALIAS[via],
            "-T",
            "-p",
            str(self.dial_port or self.target.port),
            "root@127.0.0.1",
            *remote,
        ]

    # -- recorded mode (user ``rita``; the gateway terminates and re-originates) --

    def rec_jump_cmd(self, via: str, *remote: str, opts: Sequence[str] = ()) -> list[str]:
        """``ssh -J gwr|ojump root@sg-1 remote…``: recorded on the gateway, plain OpenSSH jump
        otherwise. The target leg is the same either way (``Host sg-1`` in ssh_config)."""
        return [
            "ssh",
            "-F",
            str(self.ssh_config),
            *opts,
            "-J",
            REC_ALIAS[via],
            "-T",
            f"root@{TARGET_NAME}",
            *remote,
        ]

    def rec_direct_cmd(self, *remote: str, opts: Sequence[str] = ()) -> list[str]:
        """``ssh rita+sg-1@gw remote…``: the direct form, one SSH connection from the client."""
        return [
            "ssh",
            "-F",
            str(self.ssh_config),
            *opts,
            "-T",
            f"{REC_USER}+{TARGET_NAME}@{REC_ALIAS['gateway']}",
            *remote,
        ]

    def scp_cmd(self, via: str, src: str, dst: str) -> list[str]:
        """``scp -J gwr|ojump SRC DST`` (OpenSSH 9 scp speaks SFTP); remote paths as
        ``:PATH`` name the target. ``via="direct"``: ``scp SRC rita+sg-1@gwr:DST``."""
        if via == "direct":
            remote, jump = f"{REC_USER}+{TARGET_NAME}@{REC_ALIAS['gateway']}", []
        else:
            remote, jump = f"root@{TARGET_NAME}", ["-J", REC_ALIAS[via]]

        def side(p: str) -> str:
            return remote + p if p.startswith(":") else p

        return ["scp", "-F", str(self.ssh_config), "-q", *jump, side(src), side(dst)]

    def direct_cmd(self, via: str, *remote: str, opts: Sequence[str] = ()) -> list[str]:
        """``ssh`` to the jump host itself (no target)."""
        return ["ssh", "-F", str(self.ssh_config), *opts, "-T", ALIAS[via], *remote]

    def asyncssh_client_args(self) -> dict[str, object]:
        """What an asyncssh client needs to log in to either jump host (same key, cert)."""
        assert self.user.cert is not None
        return {
            "key": str(self.user.key),
            "cert": str(self.user.cert),
            "known_hosts": str(self.known_hosts),
            "ports": {v: self.jump_port(v) for v in VIAS},
            "logins": {v: self.jump_login(v) for v in VIAS},
            "kex": KEX,
            "cipher": CIPHER,
        }

    def connections_idle(self, via: str) -> bool:
        """No per-connection process or relay is left on this jump host."""
        if via == "openssh":
            return not procs.descendants(self.jump_pid)
        return True


def _write_ssh_config(
    env_root: Path,
    stack: GatewayStack,
    jump: SshdHost,
    user: StackUser,
    rec: StackUser,
    dial_port: int,
) -> Path:
    assert user.cert is not None and rec.cert is not None
    path = env_root / "ssh_config"
    # IdentityFile and CertificateFile accumulate over matching blocks, so rita's
    # block is kept out of the default one: each login offers exactly one certificate.
    lines = [
        "Host gw",
        "  HostName 127.0.0.1",
        f"  Port {stack.port}",
        f"  User {user.name}",
        "Host gwr",
        "  HostName 127.0.0.1",
        f"  Port {stack.port}",
        f"  User {rec.name}",
        f"  IdentityFile {rec.key}",
        f"  CertificateFile {rec.cert}",
        "Host ojump",
        "  HostName 127.0.0.1",
        f"  Port {jump.port}",
        "  User root",
        f"Host {TARGET_NAME}",
        "  HostName 127.0.0.1",
        f"  Port {dial_port}",
        f"  HostKeyAlias {TARGET_NAME}",
        "Host * !gwr",
        f"  IdentityFile {user.key}",
        f"  CertificateFile {user.cert}",
        "Host *",
        "  BatchMode yes",
        "  IdentitiesOnly yes",
        f"  UserKnownHostsFile {env_root / 'known_hosts'}",
        "  StrictHostKeyChecking yes",
        "  UpdateHostKeys no",
        f"  KexAlgorithms {KEX}",
        f"  Ciphers {CIPHER}",
        "  ControlMaster no",
        "  ControlPath none",
        "  ConnectTimeout 10",
        "  LogLevel ERROR",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@contextlib.contextmanager
def bench_env(
    workers: int = 1,
    root: Path | None = None,
    extra_gateway: str = "",
    target_via: Callable[[int], int] | None = None,
) -> Iterator[BenchEnv]:
    """Start target, gateway and reference jump host; stop them all on exit.

    ``extra_gateway`` is appended to the gateway's ``[gateway]`` table (e.g.
    ``"window = 33554432"``) to compare settings. ``target_via``, given the
    target sshd's port, returns the port both jump hosts should dial instead
    (a delay proxy in front of the target, started by the caller): the
    gateway's inventory and the reference jump's command lines then name it.
    """
    with contextlib.ExitStack() as cleanup:
        if root is None:
            root = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="gpuhop-bench-")))
        stack = GatewayStack(root / "stack", extra_gateway=extra_gateway)
        stack.root.mkdir(parents=True, exist_ok=True)
        ca = stack.ca()
        cleanup.callback(stack.close)
        target = PinnedSshd(
            TARGET_NAME,
            stack.root / "hosts" / TARGET_NAME,
            gpus=4,
            user_ca_pub=stack.host_ca_lines(),
        )
        stack.hosts[TARGET_NAME] = target.start()
        dial_port = target_via(target.port) if target_via is not None else target.port
        stack.host_addresses[TARGET_NAME] = ("127.0.0.1", dial_port)
        user = stack.add_user("alice")
        rec = stack.add_user(REC_USER)
        stack.write_config(ROLES, {"alice": ["bench"], REC_USER: ["bench-recorded"]})
        extra = ("--workers", str(workers)) if workers > 1 else ()
        stack.start_gateway(*extra)
        plain = public_line(ensure_private_key(user.key, ""))
        jump = PinnedSshd(
            "ojump",
            root / "ojump",
            gpus=0,
            user_ca_pub=ca.public_line,
            authorized_keys=[plain],
        )
        jump.start()
        cleanup.callback(jump.stop)
        known = root / "known_hosts"
        extra_known = f"[127.0.0.1]:{jump.port} {jump.host_key_line}\n"
        if dial_port != target.port:
            extra_known += f"[127.0.0.1]:{dial_port} {target.host_key_line}\n"
        known.write_text(stack.known_hosts.read_text() + extra_known)
        cfg = _write_ssh_config(root, stack, jump, user, rec, dial_port)
        yield BenchEnv(root, stack, target, jump, user, cfg, known, workers, rec, dial_port)


def check_algorithms(env: BenchEnv) -> dict[str, str]:
    """Run ``ssh -v`` once each way; return what the outer (jump) leg negotiated."""
    seen: dict[str, str] = {}
    for via in VIAS:
        res = subprocess.run(
            env.jump_cmd(via, "true", opts=("-v",)), capture_output=True, timeout=30
        )
        if res.returncode != 0:
            raise RuntimeError(f"{via}: ssh failed: {res.stderr.decode(errors='replace')[-800:]}")
        text = res.stderr.decode(errors="replace")
        kex = [ln.split("algorithm: ")[1] for ln in text.splitlines() if "kex: algorithm:" in ln]
        ciphers = [
            ln.split("cipher: ")[1].split()[0]
            for ln in text.splitlines()
            if "kex: client->server cipher:" in ln
        ]
        seen[via] = f"kex {sorted(set(kex))} cipher {sorted(set(ciphers))}"
        if set(kex) != {KEX} or set(ciphers) != {CIPHER}:
            raise RuntimeError(f"{via}: unexpected algorithms: {seen[via]}")
    return seen


# -- running and reporting ------------------------------------------------------


def interleaved(
    rounds: int, runs: Mapping[str, Callable[[], float]], *, warmup: int = 1
) -> dict[str, list[float]]:
    """Alternate the runs (a, b, a, b, …) ``rounds`` times after ``warmup`` unrecorded rounds."""
    out: dict[str, list[float]] = {k: [] for k in runs}
    for i in range(warmup + rounds):
        for name, fn in runs.items():
            value = fn()
            if i >= warmup:
                out[name].append(value)
    return out


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


@dataclass(frozen=True)
class Target:
    """``ratio`` targets compare gateway/openssh; ``absolute`` ones the gateway figure."""

    kind: str  # "ratio" | "absolute"
    op: str  # ">=" | "<="
    value: float
    unit: str = ""

    def met(self, x: float) -> bool:
        return x >= self.value if self.op == ">=" else x <= self.value

    def __str__(self) -> str:
        what = "x" if self.kind == "ratio" else f" {self.unit}"
        return f"{self.op} {self.value:g}{what}"


@dataclass(frozen=True)
class Figure:
    name: str
    unit: str
    gateway: float
    openssh: float | None
    target: Target | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.openssh is None or self.openssh == 0:
            return None
        return self.gateway / self.openssh

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        x = self.ratio if self.target.kind == "ratio" else self.gateway
        return None if x is None else self.target.met(x)

    def line(self) -> str:
        ossh = "—" if self.openssh is None else fmt_num(self.openssh)
        ratio = "—" if self.ratio is None else f"{self.ratio:.2f}x"
        verdict = {True: "MET", False: "MISSED", None: ""}[self.met]
        tgt = f"target {self.target} {verdict}" if self.target else ""
        note = f"  ({self.note})" if self.note else ""
        return (
            f"{self.name:<40} gateway {fmt_num(self.gateway):>9} {self.unit:<9} "
            f"openssh {ossh:>9} {self.unit:<9} ratio {ratio:>6}  {tgt}{note}"
        )


def fmt_num(x: float) -> str:
    if x != x:  # NaN
        return "n/a"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3f}" if abs(x) < 1 else f"{x:.2f}"


def emit(figures: Sequence[Figure]) -> None:
    for f in figures:
        print(f.line(), flush=True)


def header(title: str, env: BenchEnv) -> None:
    print(
        f"# {title} — gateway pid {env.gateway_pid} (workers={env.workers}) "
        f"vs OpenSSH jump sshd pid {env.jump_pid}; target sshd :{env.target.port}; "
        f"{KEX}, {CIPHER}; {os.cpu_count()} CPUs; {machine_note()}",
        flush=True,
    )
