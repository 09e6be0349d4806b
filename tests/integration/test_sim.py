"""The simulated regions: OpenSSH hosts, the embedded fallback, and the delay proxy."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import signal
import socket
import socketserver
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncssh
import pytest

from gpuhop_sim import SimHostError, SshdHost, ThreadedDelayProxy
from gpuhop_sim.delayproxy import DelayProxy
from gpuhop_sim.embedded import EmbeddedHost, make_host
from gpuhop_sim.gpustate import default_gpus, with_load
from tests.sshkeys import KeyPair, sign_user_key

# ---------------------------------------------------------------- helpers


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while data := sock.recv(256 * 1024):
            sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A TCP echo server on loopback (echoes until EOF, then half-closes)."""
    server = _EchoServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(5)


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def echo_round_trip_ms(port: int) -> float:
    """TCP connect plus one byte there and back, in milliseconds."""
    start = time.perf_counter()
    with connect(port) as sock:
        sock.sendall(b"x")
        assert sock.recv(1) == b"x"
    return (time.perf_counter() - start) * 1000


def median_ms(port: int, samples: int = 7) -> float:
    return statistics.median(echo_round_trip_ms(port) for _ in range(samples))


@pytest.fixture
def ssh(require_bin: Callable[[str], str]) -> str:
    return require_bin("ssh")


def ssh_argv(
    ssh: str, key: KeyPair, known_hosts: Path, port: int, cert: Path | None = None
) -> list[str]:
    argv = [ssh, "-F", "/dev/null", "-i", str(key.private), "-p", str(port)]
    for option in (
        "IdentitiesOnly=yes",
        "IdentityAgent=none",
        "BatchMode=yes",
        "StrictHostKeyChecking=yes",
        f"UserKnownHostsFile={known_hosts}",
        "ConnectTimeout=10",
        *([f"CertificateFile={cert}"] if cert else []),
    ):
        argv += ["-o", option]
    return [*argv, "root@127.0.0.1"]


def known_hosts(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "known_hosts"
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def running_with_args(*args: str) -> list[int]:
    """Live (non-zombie) processes whose argv is exactly ``args``."""
    wanted = "\0".join(args).encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "cmdline").read_bytes() == wanted:
                    found.append(int(entry.name))
    return found


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


# ---------------------------------------------------------------- OpenSSH hosts


@pytest.mark.openssh
def test_certificate_login_sees_fake_gpus(
    sim_host: Callable[..., SshdHost], user_ca: KeyPair, user_key: KeyPair, tmp_path: Path, ssh: str
) -> None:
    host = sim_host("sg-1", gpus=2, gpu_model="H100", authorized_keys=[])
    cert = sign_user_key(user_ca, user_key, principals=("root",), validity="+5m")
    argv = ssh_argv(ssh, user_key, known_hosts(tmp_path, host.known_hosts_line), host.port, cert)
    query = "nvidia-smi --query-gpu=index,name --format=csv,noheader"
    r = subprocess.run([*argv, query], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "0, NVIDIA H100 80GB HBM3\n1, NVIDIA H100 80GB HBM3\n"
    assert 'Accepted certificate ID "test-user"' in host.log_path.read_text()


@pytest.mark.openssh
def test_plain_key_session_environment(
    sim_host: Callable[..., SshdHost], user_key: KeyPair, tmp_path: Path, ssh: str
) -> None:
    host = sim_host("my-1", trust_ca=False)
    argv = ssh_argv(ssh, user_key, known_hosts(tmp_path, host.known_hosts_line), host.port)
    r = subprocess.run(
        [*argv, "echo $HOME; command -v nvidia-smi; echo $GPUHOP_FAKE_GPUS"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        str(host.directory / "home"),
        str(host.directory / "bin" / "nvidia-smi"),
        str(host.gpu_state_path),
    ]


@pytest.mark.openssh
def test_unknown_key_and_unsigned_key_are_refused(
    sim_host: Callable[..., SshdHost], user_key: KeyPair, tmp_path: Path, ssh: str
) -> None:
    host = sim_host("ae-1", authorized_keys=[])  # trusts only the CA; the key has no cert
    argv = ssh_argv(ssh, user_key, known_hosts(tmp_path, host.known_hosts_line), host.port)
    r = subprocess.run([*argv, "true"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 255
    assert "Permission denied" in r.stderr
    host.authorize(user_key.public_line)
    assert subprocess.run([*argv, "true"], capture_output=True, timeout=30).returncode == 0


@pytest.mark.openssh
def test_gpu_state_changes_are_seen(
    sim_host: Callable[..., SshdHost], user_key: KeyPair, tmp_path: Path, ssh: str
) -> None:
    host = sim_host("sg-2", gpus=1, gpu_model="L4")
    gpus = default_gpus("sg-2", 1, "L4")
    host.set_gpus([with_load(gpus[0], utilization=93, memory_used_mib=20000)])
    argv = ssh_argv(ssh, user_key, known_hosts(tmp_path, host.known_hosts_line), host.port)
    query = "nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits"
    r = subprocess.run([*argv, query], capture_output=True, text=True, timeout=30)
    assert r.stdout == "93, 20000\n"


@pytest.mark.openssh
def test_stop_leaves_no_session_processes(
    sim_host: Callable[..., SshdHost], user_key: KeyPair, tmp_path: Path, ssh: str
) -> None:
    host = sim_host("sg-3")
    argv = ssh_argv(ssh, user_key, known_hosts(tmp_path, host.known_hosts_line), host.port)
    attached = f"{600 + random.random():.6f}"
    detached = f"{700 + random.random():.6f}"
    client = subprocess.Popen([*argv, f"sleep {attached}"], stdin=subprocess.DEVNULL)
    try:
        subprocess.run([*argv, f"nohup sleep {detached} >/dev/null 2>&1 </dev/null &"], timeout=30)
        assert wait_until(
            lambda: (
                bool(running_with_args("sleep", attached))
                and bool(running_with_args("sleep", detached))
            )
        )
        host.stop()
        assert wait_until(
            lambda: (
                not running_with_args("sleep", attached)
                and not running_with_args("sleep", detached)
            ),
            timeout=5,
        )
        assert client.wait(timeout=10) == 255  # the connection went away with the host
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(5)


@pytest.mark.openssh
def test_restart_keeps_port_host_key_and_gpu_state(
    sim_host: Callable[..., SshdHost], user_key: KeyPair, tmp_path: Path, ssh: str
) -> None:
    host = sim_host("sg-4")
    port, key_line = host.port, host.host_key_line
    host.set_gpus(
        [with_load(g, utilization=55, memory_used_mib=7) for g in default_gpus("sg-4", 1, "H100")]
    )
    host.stop()
    with pytest.raises(OSError):
        connect(port, timeout=1).close()
    host.start()
    assert (host.port, host.host_key_line) == (port, key_line)
    argv = ssh_argv(ssh, user_key, known_hosts(tmp_path, host.known_hosts_line), host.port)
    query = "nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader"
    r = subprocess.run([*argv, query], capture_output=True, text=True, timeout=30)
    assert (r.returncode, r.stdout) == (0, "55 %, 7 MiB\n")


@pytest.mark.openssh
def test_busy_port_is_reported_with_the_log(sim_host: Callable[..., SshdHost]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(SimHostError, match="Address already in use"):
            sim_host("busy", port=busy.getsockname()[1])


@pytest.mark.openssh
def test_ssh_through_the_delay_proxy_pays_the_rtt(
    sim_host: Callable[..., SshdHost],
    delay_proxy: Callable[..., ThreadedDelayProxy],
    user_key: KeyPair,
    tmp_path: Path,
    ssh: str,
) -> None:
    host = sim_host("my-2")
    rtt_ms = 50
    proxy = delay_proxy(host.port, rtt_ms=rtt_ms)
    kh = known_hosts(
        tmp_path, host.known_hosts_line, f"[127.0.0.1]:{proxy.port} {host.host_key_line}"
    )

    def timed(port: int) -> float:
        start = time.perf_counter()
        r = subprocess.run(
            [*ssh_argv(ssh, user_key, kh, port), "true"], capture_output=True, timeout=30
        )
        assert r.returncode == 0, r.stderr
        return time.perf_counter() - start

    extra = timed(proxy.port) - timed(host.port)
    assert extra >= 3 * rtt_ms / 1000, "an SSH login needs several round trips"


@pytest.mark.openssh
def test_make_host_prefers_openssh(tmp_path: Path, require_bin: Callable[[str], str]) -> None:
    require_bin("sshd")
    assert isinstance(make_host("x", tmp_path / "x"), SshdHost)


# ---------------------------------------------------------------- delay proxy


def test_proxy_adds_the_round_trip_time(
    echo_port: int, delay_proxy: Callable[..., ThreadedDelayProxy]
) -> None:
    baseline = median_ms(echo_port)
    proxy = delay_proxy(echo_port, rtt_ms=40)
    assert abs(median_ms(proxy.port) - (40 + baseline)) <= 5
    proxy.set_rtt(10)
    assert abs(median_ms(proxy.port) - (10 + baseline)) <= 5


def test_proxy_keeps_order_and_bytes_under_back_pressure(
    echo_port: int, delay_proxy: Callable[..., ThreadedDelayProxy]
) -> None:
    proxy = delay_proxy(echo_port, rtt_ms=4)
    payload = random.randbytes(12 * 1024 * 1024)  # three times the in-flight bound
    received = bytearray()
    with connect(proxy.port, timeout=30) as sock:

        def reader() -> None:
            while chunk := sock.recv(1024 * 1024):
                received.extend(chunk)

        thread = threading.Thread(target=reader)
        thread.start()
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)  # half-close: the echo still flows back
        thread.join(30)
    assert not thread.is_alive()
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()


def test_freeze_holds_bytes_until_thaw(
    echo_port: int, delay_proxy: Callable[..., ThreadedDelayProxy]
) -> None:
    proxy = delay_proxy(echo_port, rtt_ms=2)
    with connect(proxy.port) as sock:
        sock.sendall(b"a")
        assert sock.recv(1) == b"a"
        proxy.freeze()
        sock.sendall(b"b")
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(1)
        with connect(proxy.port) as late:  # new connections hang too
            late.settimeout(0.3)
            late.sendall(b"c")
            with pytest.raises(TimeoutError):
                late.recv(1)
            proxy.thaw()
            late.settimeout(5)
            assert late.recv(1) == b"c"
        sock.settimeout(5)
        assert sock.recv(1) == b"b"


def test_stop_drops_connections_and_restart_reuses_the_port(
    echo_port: int, delay_proxy: Callable[..., ThreadedDelayProxy]
) -> None:
    proxy = delay_proxy(echo_port, rtt_ms=2)
    port = proxy.port
    with connect(port) as sock:
        sock.sendall(b"a")
        assert sock.recv(1) == b"a"
        proxy.stop()
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(1) == b""
    with pytest.raises(ConnectionRefusedError):
        connect(port, timeout=1).close()
    proxy.restart()
    assert proxy.port == port
    assert echo_round_trip_ms(port) < 1000


@pytest.mark.parametrize("target", ["10.0.0.1", "192.168.1.1", "example.com", "0.0.0.0"])
def test_non_loopback_targets_are_refused(target: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        ThreadedDelayProxy(target, 22, 10)
    with pytest.raises(ValueError, match="loopback"):
        DelayProxy(target, 22, 10)
    with pytest.raises(ValueError, match="loopback"):
        DelayProxy("127.0.0.1", 22, 10, listen_host=target)


async def test_refused_upstream_closes_the_client() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    proxy = DelayProxy("127.0.0.1", dead_port, 2)
    await proxy.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await asyncio.wait_for(reader.read(1), 5) == b""
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    finally:
        await proxy.stop()


def test_command_line(echo_port: int) -> None:
    module = [sys.executable, "-m", "gpuhop_sim.delayproxy"]
    with subprocess.Popen(
        [*module, "--target", f"127.0.0.1:{echo_port}", "--rtt", "20"],
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()  # "listening 127.0.0.1:PORT -> ..."
            port = int(line.split()[1].rsplit(":", 1)[1])
            assert echo_round_trip_ms(port) >= 20
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0
    bad = subprocess.run(
        [*module, "--target", "10.1.1.1:22", "--rtt", "5"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 2 and "loopback" in bad.stderr


# ---------------------------------------------------------------- embedded host


class _Keys:
    def __init__(self) -> None:
        self.ca = asyncssh.generate_private_key("ssh-ed25519")
        self.user = asyncssh.generate_private_key("ssh-ed25519")
        self.cert = self.ca.generate_user_certificate(
            # A gpuhop host opens ACCOUNT only for the principal ACCOUNT@HOST.
            self.user,
            "embedded-test",
            principals=["root@emb-1"],
            valid_before="+5m",
        )
        self.plain = asyncssh.generate_private_key("ssh-ed25519")

    @property
    def ca_line(self) -> str:
        return self.ca.export_public_key().decode().strip()


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[tuple[EmbeddedHost, _Keys]]:
    keys = _Keys()
    host = EmbeddedHost(
        "emb-1",
        tmp_path / "emb-1",
        gpus=2,
        gpu_model="A100",
        user_ca_pub=keys.ca_line,
        authorized_keys=[keys.plain.export_public_key().decode()],
    )
    host.start()
    yield host, keys
    host.stop()


async def _connect(host: EmbeddedHost, client_keys: list[object]) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(
        "127.0.0.1",
        host.port,
        username="root",
        client_keys=client_keys,
        known_hosts=asyncssh.import_known_hosts(host.known_hosts_line + "\n"),
        config=None,
        agent_path=None,
    )


async def test_embedded_exec_status_signal_and_stderr(
    embedded: tuple[EmbeddedHost, _Keys],
) -> None:
    host, keys = embedded
    async with await _connect(host, [(keys.user, keys.cert)]) as conn:
        ok = await conn.run("echo out; echo err >&2", encoding="utf-8")
        assert (ok.exit_status, ok.stdout, ok.stderr) == (0, "out\n", "err\n")
        fail = await conn.run("exit 1")
        assert fail.exit_status == 1
        killed_child = await conn.run("sleep 30 & kill -9 $!; wait $!")
        assert killed_child.exit_status == 137
        killed_self = await conn.run("kill -9 $$")
        assert killed_self.exit_signal is not None and killed_self.exit_signal[0] == "KILL"
        gpus = await conn.run(
            "nvidia-smi --query-gpu=index,name --format=csv,noheader", encoding="utf-8"
        )
        assert gpus.stdout == "0, NVIDIA A100-SXM4-80GB\n1, NVIDIA A100-SXM4-80GB\n"
        echoed = await conn.run("cat", input="hello", encoding="utf-8")
        assert echoed.stdout == "hello"


async def test_embedded_pty_sftp_and_forwarding(embedded: tuple[EmbeddedHost, _Keys]) -> None:
    host, keys = embedded
    async with await _connect(host, [keys.plain]) as conn:
        tty = await conn.run("tty; stty size", term_type="xterm", term_size=(100, 30))
        assert tty.exit_status == 0
        assert "/dev/pts/" in str(tty.stdout) and "30 100" in str(tty.stdout)
        async with conn.start_sftp_client() as sftp:
            assert "nvidia-smi" in await sftp.listdir(str(host.directory / "bin"))
        reader, writer = await conn.open_connection("127.0.0.1", host.port)
        assert (await reader.read(8)).startswith(b"SSH-2.0")
        writer.close()
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.open_connection("10.255.255.1", 22)  # refused before any traffic


async def test_embedded_refuses_unknown_keys(embedded: tuple[EmbeddedHost, _Keys]) -> None:
    host, keys = embedded
    with pytest.raises(asyncssh.PermissionDenied):
        await _connect(host, [keys.user])  # the CA's user key, but without its certificate


def test_embedded_stop_kills_sessions(embedded: tuple[EmbeddedHost, _Keys]) -> None:
    host, keys = embedded
    marker = f"{800 + random.random():.6f}"

    async def start_sleep() -> None:
        async with await _connect(host, [keys.plain]) as conn:
            await conn.run(f"nohup sleep {marker} >/dev/null 2>&1 </dev/null &")

    asyncio.run(start_sleep())
    assert wait_until(lambda: bool(running_with_args("sleep", marker)))
    host.stop()
    assert wait_until(lambda: not running_with_args("sleep", marker), timeout=5)


@pytest.mark.openssh
def test_openssh_client_certificate_on_embedded_host(
    tmp_path: Path, ssh: str, user_ca: KeyPair, user_key: KeyPair
) -> None:
    cert = sign_user_key(user_ca, user_key, principals=("root@emb-2",))
    with EmbeddedHost("emb-2", tmp_path / "emb-2", gpus=1, user_ca_pub=user_ca.public_line) as host:
        argv = ssh_argv(
            ssh, user_key, known_hosts(tmp_path, host.known_hosts_line), host.port, cert
        )
        r = subprocess.run(
            [*argv, "nvidia-smi -L; exit 3"], capture_output=True, text=True, timeout=30
        )
        assert r.returncode == 3, r.stderr
        assert r.stdout.startswith("GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-")


def test_make_host_falls_back_to_embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gpuhop_sim.embedded.sshd_path", lambda: None)
    with make_host("fb-1", tmp_path / "fb-1", gpus=1) as host:
        assert isinstance(host, EmbeddedHost)
        assert host.port > 0
        assert host.known_hosts_line.startswith(f"[127.0.0.1]:{host.port} ssh-ed25519 ")


# ---------------------------------------------------------------- harness


def test_environment_is_isolated() -> None:
    assert not [name for name in os.environ if name.startswith("GPUHOP_")]
    for kind in ("CONFIG", "DATA", "STATE", "CACHE"):
        assert Path(os.environ[f"XDG_{kind}_HOME"]).is_dir()
