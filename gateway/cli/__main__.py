"""``python -m gateway.cli``: the same as ``gpuhop-gateway``."""

from __future__ import annotations

from gateway.cli.root import main

main()
