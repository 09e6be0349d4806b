"""Every screen of the TUI, driven by Pilot, against a real gateway with simulated hosts."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input

from client.tui.app import GpuhopApp
from client.tui.envsync import GatewayEnvBackend
from client.tui.screens.audit import AuditScreen
from client.tui.screens.dialogs import ConfirmScreen, HelpScreen, SummaryScreen
from client.tui.screens.environments import EnvironmentsScreen
from client.tui.screens.hosts import HostsScreen
from client.tui.screens.placement import PlacementScreen
from client.tui.screens.replay import ReplayScreen
from client.tui.screens.sessions import SessionsScreen
from client.tui.shell import ShellCommand
from tests.tui.conftest import notifications, until
from tests.tui.stack import INJECTED, TuiStack, repo_root

pytestmark = pytest.mark.openssh


def make_app(stack: TuiStack, admin: bool = True, **kw: object) -> GpuhopApp:
    token = stack.admin_token if admin else stack.user_token
    return GpuhopApp(
        stack.api_url,
        token,
        refresh_s=0.3,
        images=repo_root() / "images",
        **kw,  # type: ignore[arg-type]
    )


def hosts_screen(app: GpuhopApp) -> HostsScreen:
    screen = app.screen
    assert isinstance(screen, HostsScreen)
    return screen


async def test_hosts_live_latency_sort_filter_and_selection(stack: TuiStack) -> None:
    app = make_app(stack)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = hosts_screen(app)
        await until(pilot, lambda: len(screen.hosts) == 3, what="hosts")
        await until(
            pilot,
            lambda: all(h.rtt_ms is not None for h in screen.hosts),
            30,
            "every host probed",
        )
        await until(pilot, lambda: app.status.state == "live" and app.me is not None)
        table = screen.table
        # end-to-end latency = our RTT to the gateway + the gateway's to the host
        rows = {h.name: h for h in screen.hosts}
        for name, injected in INJECTED.items():
            rtt = rows[name].rtt_ms
            assert rtt is not None and abs(rtt - injected) < 15, (name, rtt)
        latency = {key.value: table.get_row(key)[6].plain for key in table.rows}  # type: ignore[union-attr]
        assert latency["ae-1"].endswith(" ms") and float(latency["ae-1"].split()[0]) >= 120
        # default sort: lowest latency first
        assert [r.key.value for r in table.ordered_rows] == ["sg-1", "my-1", "ae-1"]
        assert app.status.client_rtt_ms is not None

        # the selection stays on its host across refreshes and re-sorts
        await pilot.press("down")
        assert table.selected_key == "my-1"
        updates = table._update_count
        await until(pilot, lambda: table._update_count > updates, what="a refresh")
        assert table.selected_key == "my-1"
        await pilot.press("S")  # reverse: ae-1, my-1, sg-1
        assert [r.key.value for r in table.ordered_rows] == ["ae-1", "my-1", "sg-1"]
        assert table.selected_key == "my-1"
        await pilot.press("s")  # next sort column: price
        assert screen.sort_key == "price"

        # filter
        await pilot.press("slash", "s", "g")
        assert isinstance(app.focused, Input)
        assert [r.key.value for r in table.ordered_rows] == ["sg-1"]
        await pilot.press("escape")
        assert table.row_count == 3
        assert table.has_focus

        # GPUs and environment for the next shell
        await pilot.press("g")
        await pilot.press("backspace", "3", "enter")
        assert screen.gpus == 3
        await pilot.press("minus")
        assert screen.gpus == 2
        await pilot.press("e")
        await pilot.pause()
        await pilot.press("down", "enter")
        assert screen.env == "base"

        # usable on resize: 80x24 -> 120x36 -> 80x24
        await pilot.resize_terminal(120, 36)
        await pilot.pause()
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        assert table.row_count == 3
        assert not notifications(app)


async def test_enter_opens_a_shell_and_shows_the_cost(
    stack: TuiStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in stack.ssh_env().items():
        monkeypatch.setenv(key, value)
    ran: list[ShellCommand] = []
    outputs: list[bytes] = []

    def runner(command: ShellCommand) -> int:
        ran.append(command)
        done = subprocess.run(
            list(command.argv),
            input=b"echo hello-tui $CUDA_VISIBLE_DEVICES\nsleep 1\nexit\n",
            capture_output=True,
            env={**os.environ, **command.env},
            timeout=60,
        )
        outputs.append(done.stdout)
        return done.returncode

    app = make_app(stack, admin=False, shell_runner=runner)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = hosts_screen(app)
        await until(pilot, lambda: len(screen.hosts) == 3 and app.me is not None)
        await pilot.press("plus")  # 2 GPUs
        assert screen.gpus == 2
        await pilot.press("enter")  # on sg-1, the lowest latency
        await until(pilot, lambda: isinstance(app.screen, SummaryScreen), 30, "summary")
        assert ran and ran[0].argv[-1] == "rita+sg-1@gw"
        assert "-oSetEnv=GPUHOP_GPUS=2" in ran[0].argv
        assert outputs[0].startswith(b"hello-tui 0,1")  # the gateway leased two GPUs
        summary = app.screen
        assert isinstance(summary, SummaryScreen)
        session = summary.session
        assert session is not None and session.host == "sg-1" and not session.live
        assert session.duration_s >= 1.0
        assert session.cost_usd is not None and session.cost_usd > 0
        # 2 GPUs x $2.50/h for the duration (egress is free in this stack)
        expected = 2 * 2.5 * session.duration_s / 3600
        assert abs(session.cost_usd - expected) <= 0.05 * expected + 1e-6
        text = str(summary.query_one("#summary-text").render())
        assert f"${session.cost_usd:.4f}" in text or f"${session.cost_usd:.2f}" in text
        await pilot.press("enter")
        assert isinstance(app.screen, HostsScreen)


async def test_sessions_running_cost_and_admin_ends_one(stack: TuiStack) -> None:
    proc = subprocess.Popen(
        stack.ssh("my-1", "echo started; sleep 120", gpus=1),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"started\n"
        app = make_app(stack)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("2")
            screen = app.screen
            assert isinstance(screen, SessionsScreen)
            await until(pilot, lambda: any(s.host == "my-1" for s in screen.sessions))
            live = next(s for s in screen.sessions if s.host == "my-1")
            assert live.live and live.user == "rita"
            await until(
                pilot,
                lambda: any((s.cost_usd or 0) > 0 for s in screen.sessions if s.host == "my-1"),
                what="running cost",
            )
            row = screen.table.get_row(live.id)
            assert row[2].plain == "my-1"  # type: ignore[union-attr]
            assert row[5].plain.endswith("ms")  # type: ignore[union-attr]
            assert row[7].plain.startswith("$")  # type: ignore[union-attr]
            screen.table.move_cursor(row=screen.table.get_row_index(live.id))
            await pilot.press("k")
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("y")
            await until(pilot, lambda: proc.poll() is not None, 20, "ssh to end")
            await until(pilot, lambda: not any(s.id == live.id for s in screen.sessions))
            assert any("ended" in n for n in notifications(app))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


async def test_sessions_kill_is_denied_without_admin(stack: TuiStack) -> None:
    proc = subprocess.Popen(
        stack.ssh("sg-1", "echo started; sleep 60"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"started\n"
        app = make_app(stack, admin=False)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("2")
            screen = app.screen
            assert isinstance(screen, SessionsScreen)
            await until(pilot, lambda: any(s.live for s in screen.sessions) and app.me)
            await pilot.press("k")
            assert not isinstance(app.screen, ConfirmScreen)
            assert any(n.startswith("Denied:") for n in notifications(app))
            assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


async def test_placement_ranks_and_explains_exclusions(stack: TuiStack) -> None:
    app = make_app(stack)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = hosts_screen(app)
        await until(pilot, lambda: all(h.status == "up" for h in screen.hosts) and screen.hosts)
        # A full window of the app's own round trips, so one slow first poll (a cold
        # connection on a busy machine) is not what the latency limit is judged on.
        await until(pilot, lambda: len(app.rtt) >= 5, what="five round trips")
        await pilot.press("3")
        placement = app.screen
        assert isinstance(placement, PlacementScreen)
        await until(pilot, lambda: placement.result is not None)
        await pilot.press("f")
        assert app.focused is placement.query_one("#gpus", Input)
        placement.query_one("#max_latency_ms", Input).value = "100"
        placement.query_one("#data", Input).value = "sg-patients"
        placement.query_one("#gpus", Input).value = "2"
        before = placement.result
        await pilot.press("enter")
        await until(pilot, lambda: placement.result is not before)
        result = placement.result
        assert result is not None
        assert [r.name for r in result.ranked] == ["sg-1"], result.excluded  # say why not
        why = {e.name: " ".join(e.reasons) for e in result.excluded}
        assert "sg-patients" in why["ae-1"] and "sg-patients" in why["my-1"]
        excluded = placement.query_one("#excluded")
        assert excluded.row_count == 2  # type: ignore[attr-defined]
        verdict = str(placement.query_one("#verdict").render())
        assert "sg-1" in verdict
        # the golden test: the gateway runs its probe job on the candidate, side by side
        await pilot.press("escape", "ctrl+g")
        await until(pilot, lambda: placement.golden is not None, timeout=60)
        golden = placement.golden
        assert golden is not None and "nvidia-smi" in golden.command
        [run] = golden.hosts
        assert (run.name, run.status, run.exit_status, len(run.gpus)) == ("sg-1", "ok", 0, 2)
        assert run.seconds > 0 and run.measured_cost > 0
        table = placement.query_one("#golden-results")
        assert table.row_count == 1  # type: ignore[attr-defined]
        assert "1/1 ran it" in str(placement.query_one("#golden").render())


async def test_environments_list_images_with_fingerprints(stack: TuiStack) -> None:
    app = make_app(stack)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("4")
        screen = app.screen
        assert isinstance(screen, EnvironmentsScreen)
        await until(pilot, lambda: len(screen.envs) >= 2)
        names = {e.name: e for e in screen.envs}
        assert {"base", "pytorch-cuda"} <= set(names)
        assert names["base"].fingerprint.startswith("sha256:")
        row = screen.query_one("#envs").get_row("base")  # type: ignore[attr-defined]
        assert row[3].plain == "unknown"


async def test_environments_without_a_local_engine_say_so_instead_of_guessing(
    stack: TuiStack, tmp_path: Path
) -> None:
    async def no_gateway_call() -> Any:
        raise AssertionError("host images were asked for without a local engine")

    missing = f"unix://{tmp_path}/docker.sock"  # nothing listens there
    app = make_app(stack, env_backend=GatewayEnvBackend(no_gateway_call, missing))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("4")
        screen = app.screen
        assert isinstance(screen, EnvironmentsScreen)
        await until(pilot, lambda: len(screen.envs) >= 2 and screen.engine_error)
        assert f"no Docker engine at {missing}" in screen.engine_error
        note = str(screen.query_one("#push-note").render())
        assert "No local Docker engine" in note and "DOCKER_HOST" in note
        assert not screen.status_loaded and screen.states == {}
        names = {e.name: e for e in screen.envs}
        assert names["base"].fingerprint.startswith("sha256:")  # pinned: still computed
        row = screen.query_one("#envs").get_row("base")  # type: ignore[attr-defined]
        assert row[3].plain == "unknown"
        await pilot.press("p")
        await until(pilot, lambda: any("cannot push" in n for n in notifications(app)))
        assert app.screen is screen  # no host picker
        assert app.return_code is None  # a notice, never a traceback


async def test_audit_filters_and_replays_a_recording(stack: TuiStack) -> None:
    marker = f"replay-{time.monotonic_ns()}"
    done = subprocess.run(
        stack.ssh("ae-1", f"echo {marker}; sleep 0.5; echo bye", tty=True),
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    app = make_app(stack)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("5")
        screen = app.screen
        assert isinstance(screen, AuditScreen)
        await until(pilot, lambda: screen.events, what="audit events")
        await pilot.press("slash", *"session.end", "enter")
        await until(
            pilot,
            lambda: screen.events and all(e.kind == "session.end" for e in screen.events),
            what="filtered",
        )
        target = next(e for e in reversed(screen.events) if e.data.get("host") == "ae-1")
        screen.table.move_cursor(row=screen.table.get_row_index(str(target.id)))
        await pilot.press("enter")
        replay = app.screen
        assert isinstance(replay, ReplayScreen)
        await until(pilot, lambda: replay.player is not None, what="recording")
        await pilot.press("space")  # pause
        assert replay.player is not None and not replay.player.playing
        await pilot.press("plus", "plus")
        assert replay.player.speed == 4.0
        await pilot.press("end")
        assert marker in replay.plain and "bye" in replay.plain
        await pilot.press("minus", "minus", "r")  # back to 1x, from the start
        assert replay.player.speed == 1.0 and replay.player.playing
        assert replay.player.position < 1.0
        await pilot.press("escape")
        assert isinstance(app.screen, AuditScreen)


async def test_audit_denied_for_a_user_token(stack: TuiStack) -> None:
    app = make_app(stack, admin=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("5")
        screen = app.screen
        assert isinstance(screen, AuditScreen)
        await until(pilot, lambda: screen.denied, what="403")
        assert any(n.startswith("Denied:") for n in notifications(app))
        assert "admin token" in str(screen.query_one("#count").render())


async def test_unreachable_gateway_and_rejected_token_are_notifications(
    stack: TuiStack,
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # bound, not listening: connections are refused
        app = GpuhopApp(f"http://127.0.0.1:{closed}", "gph_x", refresh_s=0.2)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.status.state == "offline")
            await until(pilot, lambda: notifications(app))
            assert notifications(app)[0].startswith("Gateway unreachable:")
            await pilot.pause(1.0)
            assert len(notifications(app)) == 1  # the same error is not repeated every poll
            await pilot.press("2", "3", "5")  # every screen copes
            await pilot.pause(0.5)
    app = GpuhopApp(stack.api_url, "gph_" + "A" * 43, refresh_s=0.2)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.status.state == "token rejected")
        assert any(n.startswith("Token rejected:") for n in notifications(app))


async def test_no_login_is_a_notification_not_a_traceback() -> None:
    app = GpuhopApp(refresh_s=0.2)  # no arguments, no GPUHOP_* (scrubbed), empty keyring
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: notifications(app), 10, "a notification")
        assert notifications(app)[0].startswith("Not logged in:"), notifications(app)
        assert "GPUHOP_GATEWAY" in notifications(app)[0]
        await pilot.press("2", "5", "1")
        assert app.data is None and app.return_code is None


async def test_help_palette_and_themes(stack: TuiStack) -> None:
    app = make_app(stack)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, HostsScreen)
        assert app.theme == "textual-dark"
        await pilot.press("ctrl+t")
        assert app.theme == "textual-light"
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"Sessions")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, SessionsScreen), 5, "palette")
