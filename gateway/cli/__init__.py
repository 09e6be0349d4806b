"""``gpuhop-gateway``, one module per command group.

``root`` holds the group and adds the others (``keys``: ca and hostkey,
``audit``, ``db``, ``directory``: admin); each of those imports only
``common``, never ``root``, so the package has no import cycle.
"""

from __future__ import annotations

from gateway.cli.root import main

__all__ = ["main"]
