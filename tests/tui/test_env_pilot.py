"""The Environments screen against a real gateway and real Docker engines.

The gateway fixture of ``tests/integration/test_env_push_gateway.py``: OpenSSH
hosts ``sg-1`` and ``my-1`` with private ``dockerd`` engines, ``ae-1`` without
one (and not allowed to user ``dev``), and the developer's own engine. The app
reads host images through the gateway, pushes with a live progress bar, and
shows the hosts in sync afterwards.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from textual.widgets import ProgressBar, SelectionList

from client.envs.build import env_ref
from client.tui.app import GpuhopApp
from client.tui.envsync import GatewayEnvBackend
from client.tui.screens.environments import EnvironmentsScreen
from client.tui.widgets.table import LiveTable
from tests.integration.test_env_push_gateway import (  # noqa: F401 (env is a fixture)
    Env,
    build,
    env,
    set_line,
    write_env,
)
from tests.tui.conftest import in_thread, notifications, until

pytestmark = [pytest.mark.docker, pytest.mark.openssh, pytest.mark.slow]


def _token(gateway: Env, user: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "token", "create", "--config",
         str(gateway.stack.config), "--user", user, "--scope", "user"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return result.stdout.strip().splitlines()[-1]


async def test_environments_show_host_status_and_push_with_progress(env: Env) -> None:  # noqa: F811
    root = write_env(env.images, "tuienv", deps_mb=6, seed=51, source=True)
    image_id = build(env, "tuienv")
    app = GpuhopApp(
        f"http://127.0.0.1:{env.stack.api_port}",
        _token(env, "dev"),
        refresh_s=3600,
        images=env.images,
        env_backend=GatewayEnvBackend(env.connect("dev"), env.daemons["local"].base_url),
    )
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("4")
        screen = app.screen
        assert isinstance(screen, EnvironmentsScreen)
        await until(pilot, lambda: screen.status_loaded, 60, "host status")
        [row] = [e for e in screen.envs if e.name == "tuienv"]
        assert row.fingerprint.startswith("sha256:") and not row.error  # base resolved locally
        states = screen.states["tuienv"]
        assert states["sg-1"] == states["my-1"] == "missing", states
        assert states["ae-1"] == "error" and "denied" in screen.host_errors["ae-1"]

        table = screen.query_one(LiveTable)
        table.move_cursor(row=table.get_row_index("tuienv"))
        await pilot.press("p")  # the picker starts with the hosts that lack it
        await until(pilot, lambda: app.screen is not screen, 10, "host picker")
        await pilot.press("enter")
        await until(pilot, lambda: screen.last_push is not None, 120, "the push")
        push = screen.last_push
        assert push is not None
        assert sorted(push.results) == [("my-1", "loaded", ""), ("sg-1", "loaded", "")]
        assert screen.progress_updates > 0  # the bar moved with the bytes
        assert not screen.query_one("#push-progress", ProgressBar).display
        for host in ("sg-1", "my-1"):
            assert env.host_id(host, env_ref("tuienv")) == image_id
        await until(
            pilot,
            lambda: (
                screen.states["tuienv"].get("sg-1") == "in sync"
                and screen.states["tuienv"].get("my-1") == "in sync"
            ),
            60,
            "in sync after the push",
        )
        assert table.get_row("tuienv")[3].plain == "2/3"
        told = notifications(app)
        for host in ("sg-1", "my-1"):  # one result notification per host
            assert any(f"tuienv on {host}: loaded, " in n for n in told), told

        # Another build here: both hosts now hold a different one.
        set_line(root, "v2")
        new_id = await in_thread(lambda: build(env, "tuienv"))
        await pilot.press("r")
        await until(
            pilot,
            lambda: (
                screen.states.get("tuienv", {}).get("sg-1") == "drift"
                and screen.states["tuienv"].get("my-1") == "drift"
            ),
            60,
            "drift after a rebuild",
        )
        assert "drift" in str(screen.query_one("#detail").render())

        # Push again, ae-1 ticked too: it refuses, the others take the new layer.
        screen.last_push = None
        await pilot.press("p")
        await until(pilot, lambda: app.screen is not screen, 10, "host picker")
        picker = app.screen.query_one(SelectionList)
        assert [str(o.value) for o in picker.options] == ["ae-1", "my-1", "sg-1"]
        assert sorted(str(v) for v in picker.selected) == ["my-1", "sg-1"]  # the drifted
        picker.select("ae-1")
        await pilot.press("enter")
        await until(pilot, lambda: screen.last_push is not None, 120, "the second push")
        results = {h: (st, err) for h, st, err in screen.last_push.results}
        assert results["sg-1"] == results["my-1"] == ("loaded", ""), results
        assert results["ae-1"][0] == "failed" and results["ae-1"][1], results
        told = notifications(app)
        assert any("tuienv on ae-1: " in n and "loaded" not in n for n in told), told
        for host in ("sg-1", "my-1"):
            assert env.host_id(host, env_ref("tuienv")) == new_id
        assert app.return_code is None  # errors are notifications, never a traceback
