"""The pure parts of the flood limits: audit coalescing, pre-auth places, algorithm sets."""

from __future__ import annotations

import doctest

import pytest

import gateway.domain.audit.coalesce
import gateway.services.sessions.limits
from gateway.adapters.hosts.algorithms import connection_algorithms
from gateway.domain.audit.coalesce import AuditCoalescer
from gateway.services.envprotocol import MAX_HOSTS, parse_request
from gateway.services.sessions.limits import Refused, Startup, StartupLimiter, turn_away_bytes

FORBIDDEN_MARKERS = ("sha1", "-cbc", "ssh-dss", "arcfour", "md5")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    "module", [gateway.domain.audit.coalesce, gateway.services.sessions.limits]
)
def test_doctests(module: object) -> None:
    assert doctest.testmod(module).failed == 0  # type: ignore[arg-type]


def test_repeats_become_one_summary_per_window() -> None:
    clock = Clock()
    c = AuditCoalescer(per_s=100, clock=clock)
    written = sum(c.offer("conn", "channel.deny", "same", "u", {"n": 1}) for _ in range(1000))
    assert written == 1
    assert c.due() == []  # window still open
    clock.now = 1.0
    (summary,) = c.due()
    assert summary.data == {"n": 1, "repeated": 999, "window_s": 1.0, "coalesced": "repeat"}
    assert c.next_due() is None


def test_budget_bounds_distinct_events_per_second() -> None:
    clock = Clock()
    c = AuditCoalescer(per_s=5, clock=clock)
    total_rows = 0
    for second in range(10):
        clock.now = float(second)
        total_rows += len(c.due())
        for i in range(2000):  # 2,000 distinct reasons a second
            total_rows += c.offer("conn", "channel.deny", f"r{second}-{i}", "u", {})
    clock.now = 100.0
    summaries = c.due()
    total_rows += len(summaries)
    assert total_rows <= 10 * (5 + 1) + 1
    assert sum(int(s.data["repeated"]) for s in summaries) > 0


def test_counts_add_up_exactly_on_close() -> None:
    clock = Clock()
    c = AuditCoalescer(per_s=3, clock=clock)
    events = 0
    firsts = 0
    for i in range(500):
        clock.now = i * 0.01
        firsts += c.offer("conn", "channel.deny", f"r{i % 7}", "u", {})
        events += 1
    repeated = sum(int(s.data["repeated"]) for s in c.due() + c.close("conn"))
    assert firsts + repeated == events
    assert c.scopes() == []


def test_scopes_are_bounded() -> None:
    c = AuditCoalescer(per_s=1, max_scopes=10, clock=Clock())
    for i in range(1000):
        c.offer(f"conn{i}", "k", "r", "u", {})
        c.offer(f"conn{i}", "k", "r", "u", {})
    assert len(c.scopes()) == 10
    assert sum(int(s.data["repeated"]) for s in c.due()) == 990


def test_startup_places_total_and_per_source() -> None:
    lim = StartupLimiter(total=3, per_source=2)
    a1, a2 = lim.admit("a"), lim.admit("a")
    assert isinstance(a1, Startup) and isinstance(a2, Startup)
    refused = lim.admit("a")
    assert isinstance(refused, Refused) and refused.limit == "per_source"
    b = lim.admit("b")
    assert isinstance(b, Startup)
    full = lim.admit("c")
    assert isinstance(full, Refused) and full.limit == "total"
    a1.done()
    a1.done()  # idempotent
    assert lim.open == 2
    assert isinstance(lim.admit("c"), Startup)


def test_linger_is_bounded() -> None:
    lim = StartupLimiter(total=1, per_source=1, max_lingering=2)
    assert [lim.begin_linger() for _ in range(3)] == [True, True, False]
    lim.end_linger()
    assert lim.begin_linger()


def test_turn_away_is_a_valid_disconnect_packet() -> None:
    data = turn_away_bytes(b"gpuhop_1", "too many")
    line, version, packet = data.split(b"\r\n", 2)
    assert (line, version) == (b"gpuhop: too many", b"SSH-2.0-gpuhop_1")
    length = int.from_bytes(packet[:4], "big")
    assert len(packet) == 4 + length and len(packet) % 8 == 0
    pad = packet[4]
    assert pad >= 4
    payload = packet[5 : 4 + length - pad + 0]
    assert payload[0] == 1 and int.from_bytes(payload[1:5], "big") == 12
    assert payload[9 : 9 + int.from_bytes(payload[5:9], "big")] == b"too many"


@pytest.mark.parametrize("algorithm_set", ["modern", "compatible"])
def test_algorithm_sets(algorithm_set: str) -> None:
    algs = connection_algorithms(algorithm_set)  # type: ignore[arg-type]
    flat = [a for v in algs.values() for a in v]
    assert not [a for a in flat for m in FORBIDDEN_MARKERS if m in a]
    assert algs["kex_algs"][0] == "mlkem768x25519-sha256"
    if algorithm_set == "modern":
        assert not [k for k in algs["kex_algs"] if "nistp" in k or "diffie-hellman" in k]
        assert all(m.endswith("-etm@openssh.com") for m in algs["mac_algs"])
    else:
        assert "ecdh-sha2-nistp256" in algs["kex_algs"] and "hmac-sha2-256" in algs["mac_algs"]


def test_host_list_bounded() -> None:
    hosts = " ".join(f"h{i}" for i in range(MAX_HOSTS))
    assert len(parse_request(f"images {hosts}").hosts) == MAX_HOSTS
    with pytest.raises(ValueError, match=f"too many hosts named \\({MAX_HOSTS + 1}\\)"):
        parse_request(f"images {hosts} one-more")
