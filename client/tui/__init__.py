"""The gpuhop terminal UI (Textual): ``gpuhop`` with no arguments, or ``gpuhop tui``.

``run()`` is what the CLI calls; ``GpuhopApp`` is the app itself (tests and
benches construct it with an ``httpx`` transport and a fixed clock).
"""

from __future__ import annotations


def run(gateway: str | None = None, token: str | None = None) -> int:
    """Run the app in this terminal until the user quits; the process exit code."""
    from client.tui.app import GpuhopApp

    app = GpuhopApp(gateway, token)
    app.run()
    return app.return_code or 0
