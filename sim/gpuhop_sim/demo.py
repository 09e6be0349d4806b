"""The demo: a gateway, an embedded SQLite audit log and three simulated regions.

Each region is a real OpenSSH ``sshd`` on loopback (an embedded asyncssh host
where sshd is not installed) with a fake ``nvidia-smi``, behind a userspace
delay proxy that adds the region's round-trip time. Everything it writes stays
under the state directory; ``demo.json`` there tells scripts how to connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import platformdirs

from gateway.adapters.keys import UserCA, ensure_private_key, public_line
from gateway.adapters.storage import Scope
from gateway.cli.common import one_line_errors
from gateway.config.loader import load_settings
from gateway.domain.policy.passthrough import host_principal
from gateway.errors import GatewayError

DEMO_USER = "alice"
DEMO_ACCOUNT = "root"


@dataclass(frozen=True)
class DemoRegion:
    host: str
    region: str
    country: str
    display: str
    rtt_ms: float
    gpu_model: str
    gpus: int
    price: float
    egress: float


REGIONS = (
    DemoRegion("sg-a100-1", "sg", "SG", "Singapore", 35, "NVIDIA A100-SXM4-80GB", 8, 2.10, 0.09),
    DemoRegion("my-h100-1", "my", "MY", "Kuala Lumpur", 45, "NVIDIA H100 80GB HBM3", 4, 2.85, 0.08),
    DemoRegion("ae-h200-1", "ae", "AE", "Abu Dhabi", 120, "NVIDIA H200", 8, 3.60, 0.11),
)


def _config_text(state: Path, hosts: list[dict[str, Any]], user_key: str, admin_key: str) -> str:
    lines = [
        "# Written by `gpuhop demo`; every path is relative to this file.",
        "[gateway]",
        'ssh_host = "127.0.0.1"',
        "ssh_port = 0",
        "api_port = 0",
        f'storage_url = "sqlite:///{state / "gpuhop.db"}"',
        'host_key = "keys/gateway_host_ed25519"',
        'user_ca_key = "keys/user_ca"',
        'host_ca_key = "keys/host_ca"',
        'upstream_key = "keys/gateway_upstream"',
        'upstream_ca_key = "keys/upstream_ca"',
        "krl_push_interval_s = 5.0",
        'recordings_dir = "recordings"',
        "drain_timeout_s = 5.0",
        "",
    ]
    for r in REGIONS:
        lines += [
            "[[regions]]",
            f'name = "{r.region}"',
            f'country = "{r.country}"',
            f'display = "{r.display}"',
            "",
        ]
    for h in hosts:
        lines += [
            "[[hosts]]",
            f'name = "{h["name"]}"',
            f'region = "{h["region"]}"',
            'address = "127.0.0.1"',
            f"port = {h['port']}",
            f'host_key = "{h["host_key"]}"',
            f'gpu_model = "{h["gpu_model"]}"',
            f"gpu_count = {h['gpus']}",
            f"price_per_gpu_hour = {h['price']}",
            f"egress_per_gb = {h['egress']}",
            f'residency = ["{h["country"]}"]',
            f'labels = {{ tier = "demo", injected_rtt_ms = "{h["injected_rtt_ms"]:g}" }}',
            "",
        ]
    lines += [
        "[[roles]]",
        'name = "dev"',
        'hosts = ["*"]',
        f'accounts = ["{DEMO_ACCOUNT}"]',
        'modes = ["recorded", "passthrough"]',
        "max_gpus = 8",
        "forwarding = true",
        'forward_ports = ["1024-65535"]',
        "",
        "[[roles]]",
        'name = "admin"',
        'hosts = ["*"]',
        'accounts = ["*"]',
        'modes = ["passthrough", "recorded"]',
        "",
        "[[users]]",
        f'name = "{DEMO_USER}"',
        'roles = ["dev"]',
        f'keys = ["{user_key}"]',
        'team = "ml"',
        "",
        "[[users]]",
        'name = "admin"',
        'roles = ["admin"]',
        f'keys = ["{admin_key}"]',
        'team = "ops"',
        "",
    ]
    return "\n".join(lines)


def _ssh_config(state: Path, port: int, hosts: list[dict[str, Any]]) -> str:
    keys = state / "keys"
    common = [
        f"  IdentityFile {keys / DEMO_USER}",
        f"  CertificateFile {keys / (DEMO_USER + '-cert.pub')}",
        "  IdentitiesOnly yes",
        f"  UserKnownHostsFile {state / 'known_hosts'}",
        "  StrictHostKeyChecking yes",
        "  KexAlgorithms curve25519-sha256,curve25519-sha256@libssh.org",
        "  ServerAliveInterval 5",
        "  ServerAliveCountMax 3",
        "  LogLevel ERROR",
    ]
    out = [
        "# gpuhop demo: ssh -F THIS_FILE sg-a100-1 nvidia-smi",
        "Host gpuhop-gateway",
        "  HostName 127.0.0.1",
        f"  Port {port}",
        f"  User {DEMO_USER}",
        *common,
        "",
        "Host " + " ".join(h["name"] for h in hosts),
        f"  User {DEMO_ACCOUNT}",
        "  ProxyJump gpuhop-gateway",
        *common,
        "",
    ]
    return "\n".join(out)


async def _run(state: Path, ready_file: Path) -> None:
    from gateway.server import Gateway
    from gpuhop_sim.delayproxy import DelayProxy
    from gpuhop_sim.embedded import make_host

    state.mkdir(parents=True, exist_ok=True)
    keys = state / "keys"
    ca = UserCA.from_paths(keys / "user_ca")
    # Hosts trust the user CA (passthrough) and the gateway's own upstream CA (recorded).
    upstream_ca = UserCA.from_paths(keys / "upstream_ca", comment="gpuhop upstream CA")
    trusted = f"{ca.public_line}\n{upstream_ca.public_line}"
    user_key = ensure_private_key(keys / DEMO_USER, f"{DEMO_USER}@gpuhop-demo")
    admin_key = ensure_private_key(keys / "admin", "admin@gpuhop-demo")
    started: list[Any] = []
    proxies: list[DelayProxy] = []
    gateway: Gateway | None = None
    try:
        hosts: list[dict[str, Any]] = []
        for r in REGIONS:
            sim = make_host(
                name=r.host,
                directory=state / "hosts" / r.host,
                gpus=r.gpus,
                gpu_model=r.gpu_model,
                user_ca_pub=trusted,
                authorized_keys=[],
            )
            await asyncio.to_thread(sim.start)
            started.append(sim)
            proxy = DelayProxy("127.0.0.1", sim.port, r.rtt_ms)
            await proxy.start()
            proxies.append(proxy)
            hosts.append(
                {
                    "name": r.host,
                    "region": r.region,
                    "country": r.country,
                    "port": proxy.port,
                    "direct_port": sim.port,
                    "host_key": sim.host_key_line,
                    "gpu_model": r.gpu_model,
                    "gpus": r.gpus,
                    "price": r.price,
                    "egress": r.egress,
                    "injected_rtt_ms": r.rtt_ms,
                    "kind": type(sim).__name__,
                }
            )
        config = state / "gateway.toml"
        config.write_text(_config_text(state, hosts, public_line(user_key), public_line(admin_key)))
        settings = load_settings(config)
        gateway = Gateway(settings)
        await gateway.startup()
        port = gateway.port
        gw_key = ensure_private_key(settings.gateway.host_key, "")
        known = [f"[127.0.0.1]:{port} {public_line(gw_key)}"]
        host_ca = ensure_private_key(settings.gateway.host_ca_key, "")
        names = ",".join(h["name"] for h in hosts)
        # Recorded sessions present host certificates from the gateway's host CA.
        known.append(f"@cert-authority {names} {public_line(host_ca)}")
        known += [f"{h['name']} {h['host_key']}" for h in hosts]
        (state / "known_hosts").write_text("\n".join(known) + "\n")
        # The demo user's passthrough grants, host by host (ACCOUNT@HOST); a demo lasts
        # an afternoon, so its certificate outlives cert_passthrough_max_validity_s.
        scoped = [host_principal(DEMO_ACCOUNT, h["name"]) for h in hosts]
        issued = ca.sign(user_key, user=DEMO_USER, accounts=scoped, validity_s=12 * 3600)
        (keys / f"{DEMO_USER}-cert.pub").write_text(issued.openssh_line() + "\n")
        (state / "ssh_config").write_text(_ssh_config(state, port, hosts))
        assert gateway.storage is not None
        day = 86400.0
        _, user_token = await gateway.storage.tokens.create(DEMO_USER, Scope.USER, "demo", day)
        _, admin_token = await gateway.storage.tokens.create("admin", Scope.ADMIN, "demo", day)
        info = {
            "pid": os.getpid(),
            "ssh_host": "127.0.0.1",
            "ssh_port": port,
            "api_url": f"http://127.0.0.1:{gateway.api_port}",
            "user_token": user_token,
            "admin_token": admin_token,
            "user": DEMO_USER,
            "account": DEMO_ACCOUNT,
            "identity_file": str(keys / DEMO_USER),
            "certificate_file": str(keys / f"{DEMO_USER}-cert.pub"),
            "known_hosts": str(state / "known_hosts"),
            "ssh_config": str(state / "ssh_config"),
            "config": str(config),
            "database": str(state / "gpuhop.db"),
            "hosts": [
                {
                    "name": h["name"],
                    "region": h["region"],
                    "injected_rtt_ms": h["injected_rtt_ms"],
                    "port": h["port"],
                    "direct_port": h["direct_port"],
                    "kind": h["kind"],
                }
                for h in hosts
            ],
        }
        tmp = ready_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=2) + "\n")
        tmp.replace(ready_file)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        if gateway is not None:
            await gateway.shutdown(drain_s=3.0)
        for proxy in proxies:
            await proxy.stop()
        for sim in started:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(sim.stop)
        with contextlib.suppress(FileNotFoundError):
            ready_file.unlink()


def run_foreground(state: Path) -> None:
    """Run the demo in this process until Ctrl-C (used by --detach's child too)."""
    from gateway.adapters.logs import configure
    from gateway.server import run_event_loop

    configure("warning")
    run_event_loop(_run(state, state / "demo.json"))


def start_detached(state: Path, timeout_s: float = 60.0) -> dict[str, Any]:
    """Start the demo in the background; return demo.json once everything is up."""
    state.mkdir(parents=True, exist_ok=True)
    ready = state / "demo.json"
    if ready.exists():
        info: dict[str, Any] = json.loads(ready.read_text())
        if _alive(int(info.get("pid", 0))):
            return info
        ready.unlink()
    log = (state / "demo.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpuhop_sim.demo", "--state-dir", str(state)],
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready.exists():
            info = json.loads(ready.read_text())
            return info
        if proc.poll() is not None:
            tail = (state / "demo.log").read_text(errors="replace").strip().splitlines()[-1:]
            raise GatewayError(f"demo failed to start: {' '.join(tail) or 'see demo.log'}")
        time.sleep(0.1)
    proc.terminate()
    raise GatewayError(f"demo not ready after {timeout_s:.0f}s; see {state / 'demo.log'}")


def stop_detached(state: Path, timeout_s: float = 20.0) -> bool:
    """Stop a detached demo; True when one was running."""
    ready = state / "demo.json"
    if not ready.exists():
        return False
    pid = int(json.loads(ready.read_text()).get("pid", 0))
    if not _alive(pid):
        ready.unlink()
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError):
        ready.unlink()
    return True


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def _default_state_dir() -> Path:
    return Path(platformdirs.user_state_dir("gpuhop")) / "demo"


@click.group(invoke_without_command=True)
@click.option("--state-dir", type=click.Path(path_type=Path, file_okay=False), default=None)
@click.option("--detach", is_flag=True, help="Start in the background; return once ready.")
@click.pass_context
@one_line_errors
def main(ctx: click.Context, state_dir: Path | None, detach: bool) -> None:
    """A gateway with three simulated regions on loopback (Singapore, Kuala Lumpur, Abu Dhabi)."""
    if ctx.invoked_subcommand is not None:
        return
    state = (state_dir or _default_state_dir()).resolve()
    if detach:
        info = start_detached(state)
        click.echo(f"demo running (pid {info['pid']}); details in {state / 'demo.json'}")
        click.echo(f"  ssh -F {info['ssh_config']} {info['hosts'][0]['name']} nvidia-smi")
        click.echo(f"  stop with: gpuhop demo stop --state-dir {state}")
        return
    click.echo(f"starting the gpuhop demo in {state} (Ctrl-C stops it) ...")
    run_foreground(state)


@main.command("stop")
@click.option("--state-dir", type=click.Path(path_type=Path, file_okay=False), default=None)
@one_line_errors
def stop(state_dir: Path | None) -> None:
    """Stop a demo started with --detach, and everything it started."""
    state = (state_dir or _default_state_dir()).resolve()
    if stop_detached(state):
        click.echo("demo stopped")
    else:
        click.echo("no demo running in " + str(state))


if __name__ == "__main__":
    main()
