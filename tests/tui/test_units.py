"""The TUI's pure parts: formatting, rows, the shell command, asciicast playback, errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest

from client.api.clients import AsyncClient
from client.api.models import HostView, SessionView
from client.errors import ClientError, GatewayUnavailable, PolicyDenied, TokenRejected
from client.tui.cast import Player, parse_cast
from client.tui.envs import load_envs
from client.tui.fake import FakeGateway, fixed_rtt_timer
from client.tui.format import RttWindow, cost, duration, ms, sparkline
from client.tui.shell import ShellRequest, pick_session, shell_command
from client.tui.views import gpu_label, host_rows, matches, summarize
from client.tui.widgets.terminal import screen_text

FIXTURES = Path(__file__).with_name("fixtures")


def host(name: str, region: str, rtt: float | None, price: float, free: int = 4) -> HostView:
    return HostView(
        name=name,
        region=region,
        status="up",
        gpu_model="NVIDIA H100 80GB HBM3",
        gpus_total=8,
        gpus_free=free,
        price_per_gpu_hour=price,
        rtt_ms=rtt,
        allowed=True,
        country=region.upper(),
        residency=(region.upper(),),
    )


def test_formatting() -> None:
    assert sparkline([10, 20, 30, None, 40]) == "▁▃▆·█"
    assert sparkline([5, 5]) == "▁▁"
    assert sparkline([None, None]) == "··"
    assert ms(None) == "—" and ms(3.14) == "3.1 ms" and ms(123.4) == "123 ms"
    assert cost(0.00183) == "$0.0018" and cost(12.5) == "$12.50" and cost(None) == "—"
    assert duration(42) == "42s" and duration(185) == "3m05s" and duration(7620) == "2h07m"
    assert gpu_label("NVIDIA A100-SXM4-80GB") == "A100 80GB"
    assert gpu_label("NVIDIA H200") == "H200"
    window = RttWindow(3)
    window.extend([40.0, 1.0, 2.0])
    assert window.value == 2.0  # one slow poll does not move the median


def test_host_rows_sort_filter_and_latency() -> None:
    hosts = [
        host("ae-1", "ae", 120, 3.6),
        host("sg-1", "sg", 5, 2.5, free=0),
        host("x", "my", None, 1),
    ]
    rows = host_rows(hosts, 2.0)
    assert [k for k, _ in rows] == ["sg-1", "ae-1", "x"]  # unknown latency last
    assert rows[0][1][6].plain == "7.0 ms"  # type: ignore[union-attr]  # 5 + our 2
    assert [k for k, _ in host_rows(hosts, 2.0, sort="price")] == ["x", "sg-1", "ae-1"]
    assert host_rows(hosts, 2.0, sort="price", reverse=True)[0][0] == "ae-1"
    assert [k for k, _ in host_rows(hosts, 2.0, query="SG")] == ["sg-1"]
    assert not matches(hosts[1], "free") and matches(hosts[0], "ae free h100")


def test_shell_command_forms() -> None:
    req = ShellRequest("sg-1", "rita", gpus=2, env="base")
    env = {"GPUHOP_SSH_CONFIG": "/d/ssh_config", "GPUHOP_SSH_GATEWAY": "gw"}
    cmd = shell_command(req, env)
    assert cmd.argv == (
        "ssh", "-F", "/d/ssh_config", "-t",
        "-oSetEnv=GPUHOP_GPUS=2 GPUHOP_ENV=base", "rita+sg-1@gw",
    )  # fmt: skip
    cmd = shell_command(req, {})
    assert cmd.argv[1:] == (
        "-m", "client.cli", "ssh", "--gpus=2", "--env=GPUHOP_ENV=base", "sg-1",
    )  # fmt: skip
    assert cmd.argv[0] == sys.executable
    bare = shell_command(ShellRequest("sg-1", "rita"), {})
    assert bare.argv[-2:] == ("--gpus=0", "sg-1")


def test_pick_session_takes_the_newest_on_the_host_since_launch() -> None:
    def s(id: str, host: str, at: float) -> SessionView:
        return SessionView(id, "rita", host, "sg", "recorded", at, False, 1.0)

    sessions = [s("old", "sg-1", 10.0), s("new", "sg-1", 100.0), s("other", "my-1", 101.0)]
    assert pick_session(sessions, "sg-1", 99.0) == sessions[1]
    assert pick_session(sessions, "sg-1", 200.0) is None


def test_cast_playback_speed_seek_and_idle_cap() -> None:
    header = {"version": 2, "width": 20, "height": 3, "title": "t"}
    events = [[0.5, "o", "hello\r\n"], [30.0, "o", "\x1b[31mred\x1b[0m"], [30.1, "i", "x"]]
    text = "\n".join(json.dumps(x) for x in [header, *events])
    cast = parse_cast(text)
    assert cast.duration == pytest.approx(2.5)  # the 29.5 s idle gap is capped at 2 s
    player = Player(cast)
    assert not player.advance(0.1)
    assert player.advance(0.5) and "hello" in screen_text(player.screen).plain
    player.faster()
    assert player.speed == 2.0
    player.advance(1.0)
    assert "red" in screen_text(player.screen).plain and player.finished and not player.playing
    styled = screen_text(player.screen, cursor=False)
    assert any(span.style.color is not None for span in styled.spans)  # type: ignore[union-attr]
    player.seek(0.0)
    assert "hello" not in screen_text(player.screen).plain
    with pytest.raises(ClientError):
        parse_cast('{"version": 1}')


async def test_errors_become_client_errors() -> None:
    def answer(status: int, code: str) -> httpx.MockTransport:
        body = {"error": {"code": code, "message": "m"}}
        return httpx.MockTransport(lambda _: httpx.Response(status, json=body))

    cases: list[tuple[int, str, type[ClientError]]] = [
        (401, "token_expired", TokenRejected),
        (403, "forbidden", PolicyDenied),
        (503, "storage_unavailable", GatewayUnavailable),
        (404, "not_found", ClientError),
    ]
    for status, code, kind in cases:
        data = AsyncClient("http://gw.test", "t", transport=answer(status, code))
        with pytest.raises(kind):
            await data.hosts()
        await data.aclose()

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    data = AsyncClient("http://gw.test", "t", transport=httpx.MockTransport(refuse))
    with pytest.raises(GatewayUnavailable, match="cannot reach"):
        await data.me()
    await data.aclose()
    bad = httpx.MockTransport(lambda _: httpx.Response(200, json=[{"name": 1}]))
    data = AsyncClient("http://gw.test", "t", transport=bad)
    with pytest.raises(ClientError, match="unexpected response"):
        await data.hosts()
    await data.aclose()


async def test_recorded_fixture_parses_and_rtt_is_fixed() -> None:
    fake = FakeGateway.recorded(FIXTURES / "api.json")
    data = AsyncClient(
        "http://gw.test", "t", transport=fake.transport(), timer=fixed_rtt_timer(1.2)
    )
    assert await data.ping() == pytest.approx(1.2)
    hosts = await data.hosts()
    assert {h.name for h in hosts} == {"sg-a100-1", "my-h100-1", "ae-h200-1"}
    assert all(h.rtt_history for h in hosts)
    assert all(s.live for s in await data.sessions(live=True))
    page = await data.audit()
    assert any(e.session_id for e in page.events)
    await data.aclose()


def test_environments_fingerprint_without_docker() -> None:
    rows = {r.name: r for r in load_envs(FIXTURES / "images")}
    assert rows["base"].fingerprint.startswith("sha256:") and not rows["base"].error
    assert rows["cuda-train"].gpus == 1
    assert "not pinned" in rows["scratchpad"].error
    assert load_envs(FIXTURES / "no-such-dir") == []


def test_summarize_audit_data() -> None:
    assert summarize({"host": "sg-1", "gpus": 2, "cost_usd": 0.123456}) == (
        "host=sg-1 gpus=2 cost_usd=0.1235"
    )
    assert summarize({"pid": 1}) == "pid=1"


def test_host_states_compare_fingerprints_by_environment_tag() -> None:
    from client.envs.build import LABEL_ENV, LABEL_FINGERPRINT, env_ref
    from client.envs.remote import HostImages, RemoteImage
    from client.tui.envs import EnvRow
    from client.tui.envsync import host_states

    envs = [EnvRow("app", "", 0, "sha256:aa"), EnvRow("other", "", 0, "sha256:bb")]

    def image(name: str, fp: str, tag: str = "") -> RemoteImage:
        labels = {LABEL_ENV: name, LABEL_FINGERPRINT: fp}
        return RemoteImage("sha256:" + "1" * 64, (tag or env_ref(name),), (), labels)

    remote = {
        "sg-1": HostImages("sg-1", (image("app", "sha256:aa"), image("other", "sha256:old"))),
        "my-1": HostImages("my-1", (image("app", "sha256:aa", tag="someone/else:1"),)),
        "ae-1": HostImages("ae-1", error="denied: no role"),
    }
    assert host_states(envs, remote) == {
        "app": {"sg-1": "in sync", "my-1": "missing", "ae-1": "error"},
        "other": {"sg-1": "drift", "my-1": "missing", "ae-1": "error"},
    }
