"""Fixtures for the TUI tests: a real gateway stack, and a recorded API for snapshots."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from textual.pilot import Pilot

from tests.integration.conftest import need_openssh
from tests.tui.stack import TuiStack, start_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TuiStack]:
    """One gateway with three delayed hosts for every Pilot test in the run."""
    need_openssh()
    tui = start_stack(tmp_path_factory.mktemp("tui-stack"))
    try:
        yield tui
    finally:
        tui.close()


async def until(
    pilot: Pilot[Any], predicate: Callable[[], object], timeout: float = 20.0, what: str = ""
) -> None:
    """Let the app run until ``predicate()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"not within {timeout}s: {what or predicate}")


def notifications(app: Any) -> list[str]:
    return [f"{n.title}: {n.message}" for n in app._notifications]


async def in_thread(fn: Callable[[], Any]) -> Any:
    return await asyncio.to_thread(fn)
