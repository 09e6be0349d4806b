"""``gpuhop-gateway``: checks that the gateway extra is installed, then runs the gateway CLI.

``pip install gpuhop`` is the client only; the gateway's own dependencies come with
``gpuhop[gateway]``. This module imports nothing of the gateway until they are all
importable, so a client-only install answers with one line instead of a traceback.
"""

from __future__ import annotations

import importlib.util
import sys

# The top-level modules of the `gateway` extra's distributions (pyproject.toml).
GATEWAY_MODULES = (
    "pydantic_settings",
    "structlog",
    "sqlalchemy",
    "psycopg",
    "alembic",
    "fastapi",
    "uvicorn",
    "prometheus_client",
)
MISSING_EXTRA = "the gateway needs gpuhop[gateway]: pip install 'gpuhop[gateway]'"


def missing_modules() -> list[str]:
    """The gateway extra's modules that cannot be imported here."""
    return [name for name in GATEWAY_MODULES if importlib.util.find_spec(name) is None]


def main() -> None:
    if missing_modules():
        sys.exit(MISSING_EXTRA)
    # Imported only now: importing gateway.cli needs the modules checked above.
    from gateway.cli import main as gateway_main

    gateway_main()
