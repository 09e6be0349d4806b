"""The gpuhop terminal UI (Textual): ``gpuhop`` with no arguments, or ``gpuhop tui``.

``run()`` is what the CLI calls; ``GpuhopApp`` is the app itself (tests and
benches construct it with an ``httpx`` transport and a fixed clock).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from client.tui.shell import GpuhopSsh


def run(
    gateway: str | None = None, token: str | None = None, gpuhop_ssh: GpuhopSsh | None = None
) -> int:
    """Run the app in this terminal until the user quits; the process exit code."""
    from client.tui.app import GpuhopApp

    app = GpuhopApp(gateway, token, gpuhop_ssh=gpuhop_ssh)
    app.run()
    return app.return_code or 0
