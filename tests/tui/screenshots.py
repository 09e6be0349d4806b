"""Write the SVG screenshots in docs/screenshots/ (linked from docs/tui.md).

    python -m tests.tui.screenshots [--size 100x30]

Each screen is drawn from the responses recorded from a real demo gateway
(``fixtures/api.json``), the same data as the snapshot tests, and saved with
Textual's ``App.save_screenshot``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from client.api.models import SessionView
from client.tui.app import GpuhopApp
from client.tui.envs import load_envs
from client.tui.fake import FakeGateway, ReplayEnvBackend, fixed_rtt_timer
from client.tui.screens.dialogs import SummaryScreen
from tests.tui.stack import repo_root

OUT = repo_root() / "docs" / "screenshots"
FIXTURE = Path(__file__).with_name("fixtures") / "api.json"


async def _until(pilot: Any, predicate: Any, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await pilot.pause(0.05)
    raise SystemExit(f"screenshot: condition not met: {predicate}")


def _replay_envs() -> ReplayEnvBackend:
    """Host images for the Environments shot: one host in sync, one drifted, one without Docker."""
    first = load_envs(Path("images"))[0]
    return ReplayEnvBackend(
        {
            "sg-a100-1": [(first.name, first.fingerprint)],
            "my-h100-1": [(first.name, "sha256:" + "0" * 64)],
            "ae-h200-1": "ae-h200-1: docker is not installed there",
        }
    )


async def shoot(size: tuple[int, int]) -> list[Path]:
    fake = FakeGateway.recorded(FIXTURE)
    app = GpuhopApp(
        "http://127.0.0.1:8080",
        "gph_screenshot",
        transport=fake.transport(),
        timer=fixed_rtt_timer(1.2),
        refresh_s=3600,
        images=Path("images"),
        env_backend=_replay_envs(),
    )
    written: list[Path] = []

    def save(name: str) -> None:
        written.append(Path(app.save_screenshot(f"{name}.svg", str(OUT))))

    async with app.run_test(size=size) as pilot:
        screen: Any = app.screen
        await _until(pilot, lambda: app.me is not None and screen.loaded)
        await pilot.pause()
        save("hosts")
        await pilot.press("question_mark")
        await pilot.pause()
        save("help")
        await pilot.press("escape", "2")
        screen = app.screen
        await _until(pilot, lambda: screen.loaded)
        save("sessions")
        await pilot.press("3")
        screen = app.screen
        await _until(pilot, lambda: screen.result is not None)
        first = screen.result
        await pilot.press("f", "backspace", "4", "tab", "tab", *"100", "enter", "escape")
        await _until(pilot, lambda: screen.result is not first)
        await pilot.press("ctrl+g")
        await _until(pilot, lambda: screen.golden is not None)
        await pilot.pause()
        save("placement")
        await pilot.press("4")
        screen = app.screen
        await _until(pilot, lambda: len(screen.envs) >= 2 and screen.status_loaded)
        await pilot.pause()
        save("environments")
        await pilot.press("5")
        screen = app.screen
        await _until(pilot, lambda: screen.events)
        save("audit")
        end = next(e for e in screen.events if e.kind == "session.end")
        screen.table.move_cursor(row=screen.table.get_row_index(str(end.id)))
        await pilot.press("enter")
        await _until(pilot, lambda: getattr(app.screen, "player", None) is not None)
        await pilot.press("end")
        await pilot.pause()
        save("replay")
        await pilot.press("escape", "1")
        await pilot.pause()
        recorded = fake.responses["/v1/sessions"]["sessions"]
        ended = next(s for s in recorded if not s["live"])
        keep = set(SessionView.__dataclass_fields__)
        session = SessionView(**{k: v for k, v in ended.items() if k in keep})
        await app.push_screen(SummaryScreen(session.host, 0, session, 1))
        await pilot.pause()
        save("shell-summary")
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="100x30")
    width, height = (int(n) for n in parser.parse_args().size.split("x"))
    OUT.mkdir(parents=True, exist_ok=True)
    for path in asyncio.run(shoot((width, height))):
        print(path.relative_to(repo_root()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
