"""Snapshots (SVG, committed) of every screen at 80x24 and 120x36.

The app is fed responses recorded from a real gateway (``tests/tui/capture.py``
wrote ``fixtures/api.json``) through ``FakeGateway``'s ``httpx.MockTransport``,
with a fixed client round trip, so each SVG is the same on every run. Update
them after a deliberate change with ``pytest tests/tui --snapshot-update`` and
look at ``snapshot_report.html`` before committing.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from client import credentials
from client.api.models import SessionView
from client.credentials import Credentials
from client.errors import NotLoggedIn
from client.settings import Secret
from client.tui.app import GpuhopApp
from client.tui.envs import load_envs
from client.tui.fake import FakeGateway, ReplayEnvBackend, fixed_rtt_timer
from client.tui.screens.dialogs import SummaryScreen
from client.tui.screens.firstrun import FirstRunScreen
from client.tui.screens.hosts import HostsScreen
from tests.tui.conftest import until
from tests.tui.stack import repo_root

FIXTURES = Path(__file__).with_name("fixtures")
IMAGES = Path("tests/tui/fixtures/images")  # shown on screen, so relative to the repo root
SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 36), id="120x36")]

Snap = Callable[..., bool]


@pytest.fixture(autouse=True)
def _at_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo_root())
    for path in (repo_root() / IMAGES).rglob("*"):
        if path.is_file():
            os.chmod(path, 0o644)  # fingerprints include permission bits; git keeps only x


def replay_envs() -> ReplayEnvBackend:
    """Host images for the Environments screen: in sync, drifted, and a host without Docker."""
    first = load_envs(IMAGES)[0]
    return ReplayEnvBackend(
        {
            "sg-a100-1": [(first.name, first.fingerprint)],
            "my-h100-1": [(first.name, "sha256:" + "0" * 64)],
            "ae-h200-1": "ae-h200-1: docker is not installed there",
        }
    )


def snapshot_app(theme: str = "textual-dark") -> GpuhopApp:
    fake = FakeGateway.recorded(FIXTURES / "api.json")
    return GpuhopApp(
        "http://127.0.0.1:8080",
        "gph_snapshot",
        transport=fake.transport(),
        timer=fixed_rtt_timer(1.2),
        refresh_s=3600,
        images=IMAGES,
        env_backend=replay_envs(),
        theme=theme,
    )


def shot(snap_compare: Snap, app: GpuhopApp, **kw: Any) -> bool:
    """``snap_compare``, and the app must not have crashed on the way (a crashed app
    still leaves a screenshot behind)."""
    same = snap_compare(app, **kw)
    assert app.return_code in (0, None), f"the app failed: {app._exception!r}"
    return bool(same)


def on(mode: str, ready: Callable[[Any], object]) -> Callable[[Pilot[Any]], Awaitable[None]]:
    """Switch to ``mode`` and wait until ``ready(screen)`` says its data is shown."""

    async def run_before(pilot: Pilot[Any]) -> None:
        app = pilot.app
        await until(pilot, lambda: getattr(app, "me", None) is not None, 10, "me")
        await app.switch_mode(mode)
        await until(pilot, lambda: ready(app.screen), 10, mode)
        await pilot.pause()

    return run_before


@pytest.mark.parametrize("size", SIZES)
def test_hosts(snap_compare: Snap, size: tuple[int, int]) -> None:
    assert shot(snap_compare, snapshot_app(), terminal_size=size, run_before=on("hosts", _loaded))


def test_hosts_light_theme_filtered(snap_compare: Snap) -> None:
    assert shot(
        snap_compare,
        snapshot_app("textual-light"),
        press=["slash", "s", "g", "enter"],
        run_before=on("hosts", _loaded),
    )


@pytest.mark.parametrize("size", SIZES)
def test_sessions(snap_compare: Snap, size: tuple[int, int]) -> None:
    assert shot(
        snap_compare, snapshot_app(), terminal_size=size, run_before=on("sessions", _loaded)
    )


@pytest.mark.parametrize("size", SIZES)
def test_placement(snap_compare: Snap, size: tuple[int, int]) -> None:
    async def ready(pilot: Pilot[Any]) -> None:
        await on("placement", lambda s: s.result is not None)(pilot)
        screen: Any = pilot.app.screen
        first = screen.result
        await pilot.press("f", "backspace", "4", "tab", "tab", *"100", "enter", "escape")
        await until(pilot, lambda: screen.result is not first, 10, "ranked again")
        await pilot.press("ctrl+g")
        await until(pilot, lambda: screen.golden is not None, 10, "golden test")
        await pilot.pause()

    assert shot(snap_compare, snapshot_app(), terminal_size=size, run_before=ready)


@pytest.mark.parametrize("size", SIZES)
def test_environments(snap_compare: Snap, size: tuple[int, int]) -> None:
    ready = on("environments", lambda s: len(s.envs) == 3 and s.status_loaded)
    assert shot(snap_compare, snapshot_app(), terminal_size=size, run_before=ready)


@pytest.mark.parametrize("size", SIZES)
def test_audit(snap_compare: Snap, size: tuple[int, int]) -> None:
    assert shot(snap_compare, snapshot_app(), terminal_size=size, run_before=on("audit", _events))


@pytest.mark.parametrize("size", SIZES)
def test_replay(snap_compare: Snap, size: tuple[int, int]) -> None:
    async def ready(pilot: Pilot[Any]) -> None:
        await on("audit", _events)(pilot)
        screen: Any = pilot.app.screen
        start = next(e for e in screen.events if e.kind == "session.end")
        screen.table.move_cursor(row=screen.table.get_row_index(str(start.id)))
        await pilot.press("enter")
        await until(pilot, lambda: getattr(pilot.app.screen, "player", None) is not None)
        await pilot.press("end")

    assert shot(snap_compare, snapshot_app(), terminal_size=size, run_before=ready)


def test_help(snap_compare: Snap) -> None:
    assert shot(
        snap_compare, snapshot_app(), press=["question_mark"], run_before=on("hosts", _loaded)
    )


def test_shell_summary(snap_compare: Snap) -> None:
    session = SessionView(
        id="3909b4d60e6f45e8",
        user="alice",
        host="sg-a100-1",
        region="sg",
        mode="recorded",
        started_at=1795551897.49,
        ended_at=1795551961.93,
        live=False,
        duration_s=64.44,
        gpus=2,
        cost_usd=0.075180,
        exit_status=0,
    )

    async def ready(pilot: Pilot[Any]) -> None:
        await on("hosts", _loaded)(pilot)
        await pilot.app.push_screen(SummaryScreen("sg-a100-1", 0, session, 2))

    assert shot(snap_compare, snapshot_app(), run_before=ready)


def _loaded(screen: Any) -> bool:
    return bool(getattr(screen, "loaded", False))


def _events(screen: Any) -> bool:
    return bool(getattr(screen, "events", ()))


NOT_LOGGED_IN = (
    "not logged in: run `gpuhop login GATEWAY_URL`, or set GPUHOP_GATEWAY and GPUHOP_TOKEN"
)


def first_run_app(monkeypatch: pytest.MonkeyPatch, logins: list[Credentials]) -> GpuhopApp:
    """An app given no gateway: each look for the stored login takes the next of ``logins``
    (none left: not logged in)."""

    def resolve(settings: object) -> Credentials:
        if not logins:
            raise NotLoggedIn(NOT_LOGGED_IN)
        return logins.pop(0)

    monkeypatch.setattr(credentials, "resolve", resolve)
    fake = FakeGateway.recorded(FIXTURES / "api.json")
    return GpuhopApp(
        transport=fake.transport(), timer=fixed_rtt_timer(1.2), refresh_s=3600, images=IMAGES
    )


@pytest.mark.parametrize("size", SIZES)
def test_first_run(
    snap_compare: Snap, monkeypatch: pytest.MonkeyPatch, size: tuple[int, int]
) -> None:
    async def ready(pilot: Pilot[Any]) -> None:
        await until(pilot, lambda: isinstance(pilot.app.screen, FirstRunScreen), 10, "first run")
        await pilot.pause()

    assert shot(snap_compare, first_run_app(monkeypatch, []), terminal_size=size, run_before=ready)


async def test_first_run_stays_until_a_login_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    later: list[Credentials] = []
    app = first_run_app(monkeypatch, later)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, FirstRunScreen), 10, "first run")
        await pilot.pause(1.0)
        assert isinstance(app.screen, FirstRunScreen)  # not a toast that fades
        assert app.status.state == "not logged in"
        later.append(Credentials("http://127.0.0.1:8080", Secret("gph_snapshot"), "keyring"))
        await pilot.press("r")  # `gpuhop login` done in another terminal: look again
        await until(pilot, lambda: app.me is not None, 10, "me")
        screen = app.screen
        assert isinstance(screen, HostsScreen)
        await until(pilot, lambda: len(screen.hosts) > 0, 10, "hosts")
