"""Probes against real OpenSSH hosts behind the userspace delay proxy.

Each reported round-trip time must be within 5 ms of the injected delay plus
the loopback baseline, measured here on a direct connection; a host whose
proxy stops is down within 5 s and up within 5 s of the proxy's restart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import asyncssh
import pytest

from gateway.adapters.hosts.probes import (
    HostProbe,
    HostStatus,
    ProbeCredentials,
    SshHostLink,
    connect_host,
    query_gpus,
    ssh_rtt_ms,
    tcp_connect_ms,
)
from gateway.domain.models import Host
from gateway.errors import UpstreamError
from gpuhop_sim.delayproxy import ThreadedDelayProxy
from gpuhop_sim.sshd import SshdHost
from tests.sshkeys import KeyPair

pytestmark = pytest.mark.openssh

TOLERANCE_MS = 5.0
ROUNDS = 15


def credentials(key: KeyPair, cert: Path | None = None) -> ProbeCredentials:
    return ProbeCredentials(
        "root",
        asyncssh.read_private_key(str(key.private)),
        asyncssh.read_certificate(str(cert)) if cert else None,
    )


def host_at(sim: SshdHost, port: int, region: str = "sg") -> Host:
    return Host(sim.name, region, "127.0.0.1", port, host_key=sim.host_key_line, gpu_count=2)


def quick_probe(
    link: SshHostLink,
    interval_s: float = 0.02,
    timeout_s: float = 2.0,
    gpu_interval_s: float = 0.0,
) -> HostProbe:
    return HostProbe(
        link.host.name,
        link,
        interval_s=interval_s,
        timeout_s=timeout_s,
        gpu_interval_s=gpu_interval_s,
        tcp_interval_s=0.0,
    )


async def wait_for_state(probe: HostProbe, state: str, limit_s: float) -> float:
    """Seconds until the probe reports ``state``; fails past ``limit_s``."""
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        if probe.status().state == state:
            return time.monotonic() - start
        await asyncio.sleep(0.02)
    pytest.fail(f"{probe.name} not {state} within {limit_s} s: {probe.status()}")


async def test_reported_rtt_is_injected_delay_plus_baseline(
    sim_host: Callable[..., SshdHost],
    delay_proxy: Callable[..., ThreadedDelayProxy],
    user_key: KeyPair,
    user_cert: Path,
) -> None:
    delays = {"sg-1": 5.0, "my-1": 40.0, "ae-1": 120.0}
    sims = {name: sim_host(name, gpus=2) for name in delays}
    creds = credentials(user_key, user_cert)

    direct = SshHostLink(host_at(sims["sg-1"], sims["sg-1"].port), creds)
    baseline_probe = quick_probe(direct)
    await baseline_probe.run(rounds=ROUNDS)
    await baseline_probe.close()
    baseline = baseline_probe.status().latency.median_ms
    assert baseline is not None and baseline < 5, baseline_probe.status()

    probes = {}
    for name, rtt in delays.items():
        proxy = delay_proxy(sims[name].port, rtt_ms=rtt)
        link = SshHostLink(host_at(sims[name], proxy.port), creds)
        probes[name] = quick_probe(link, gpu_interval_s=60.0)
    try:
        await asyncio.gather(*(p.run(rounds=ROUNDS) for p in probes.values()))
    finally:
        for p in probes.values():
            await p.close()

    report = []
    for name, rtt in delays.items():
        status: HostStatus = probes[name].status()
        median = status.latency.median_ms
        assert status.up and median is not None, status
        report.append(f"{name}: injected {rtt} + baseline {baseline:.2f} -> {median:.2f} ms")
        assert abs(median - (rtt + baseline)) <= TOLERANCE_MS, report
        assert len(status.history) == ROUNDS and None not in status.history
        assert status.latency.p95_ms is not None and status.latency.p95_ms >= median
        assert status.tcp_connect_ms is not None  # taken when the link connected
        assert status.gpus is not None and status.gpus.state == "ok"
        assert status.gpus.count == 2
    print("; ".join(report))


async def test_host_down_when_proxy_stops_and_up_after_restart(
    sim_host: Callable[..., SshdHost],
    delay_proxy: Callable[..., ThreadedDelayProxy],
    user_key: KeyPair,
) -> None:
    sim = sim_host("sg-2")
    proxy = delay_proxy(sim.port, rtt_ms=40)
    port = proxy.port
    link = SshHostLink(host_at(sim, port), credentials(user_key), connect_timeout_s=1.0)
    probe = quick_probe(link, interval_s=0.5, timeout_s=1.0, gpu_interval_s=0)
    task = asyncio.create_task(probe.run())
    try:
        await wait_for_state(probe, "up", 10)
        await asyncio.to_thread(proxy.stop)
        down_after = await wait_for_state(probe, "down", 5)
        assert "lost" in probe.status().error or "connect" in probe.status().error
        await asyncio.to_thread(proxy.start)
        assert proxy.port == port
        up_after = await wait_for_state(probe, "up", 5)
        print(f"down after {down_after:.2f} s, up after {up_after:.2f} s")
        assert None in probe.status().history  # the missed rounds show as gaps
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await probe.close()


async def test_frozen_link_misses_the_deadline_and_recovers(
    sim_host: Callable[..., SshdHost],
    delay_proxy: Callable[..., ThreadedDelayProxy],
    user_key: KeyPair,
) -> None:
    sim = sim_host("my-2")
    proxy = delay_proxy(sim.port, rtt_ms=5)
    link = SshHostLink(host_at(sim, proxy.port), credentials(user_key), connect_timeout_s=1.0)
    probe = quick_probe(link, interval_s=0.2, timeout_s=0.5)
    task = asyncio.create_task(probe.run())
    try:
        await wait_for_state(probe, "up", 10)
        await asyncio.to_thread(proxy.freeze)
        await wait_for_state(probe, "down", 5)
        assert "no answer within" in probe.status().error
        await asyncio.to_thread(proxy.thaw)
        await wait_for_state(probe, "up", 5)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await probe.close()


async def test_gpu_query_states_on_a_real_host(
    sim_host: Callable[..., SshdHost], user_key: KeyPair
) -> None:
    sim = sim_host("ae-2", gpus=4, gpu_model="H200")
    conn, connect_ms = await connect_host(host_at(sim, sim.port), credentials(user_key))
    async with conn:
        assert connect_ms >= 0
        await ssh_rtt_ms(conn)  # the first one waits for sshd's session set-up
        assert await ssh_rtt_ms(conn) < 20
        ok = await query_gpus(conn)
        assert ok.state == "ok" and ok.indices == (0, 1, 2, 3), ok
        assert {g.name for g in ok.gpus} == {"NVIDIA H200"}
        sim.set_gpus([])
        assert (await query_gpus(conn)).state == "no_gpus"
        (sim.directory / "bin" / "nvidia-smi").unlink()
        missing = await query_gpus(conn)
        assert missing.state == "no_driver" and "not found" in missing.message, missing
    with pytest.raises(UpstreamError, match="closed"):
        await ssh_rtt_ms(conn)


async def test_wrong_pinned_key_and_closed_port_are_upstream_errors(
    sim_host: Callable[..., SshdHost], user_key: KeyPair
) -> None:
    sim = sim_host("sg-3")
    other = sim_host("sg-4")
    wrong = Host("sg-3", "sg", "127.0.0.1", sim.port, host_key=other.host_key_line)
    with pytest.raises(UpstreamError, match="SSH login failed"):
        await connect_host(wrong, credentials(user_key), timeout_s=5)
    assert await tcp_connect_ms("127.0.0.1", sim.port) < 50
    other.stop()
    with pytest.raises(UpstreamError, match="TCP connect"):
        await tcp_connect_ms("127.0.0.1", other.port, timeout_s=2)
