"""Print the OpenAPI document: ``python -m gateway.edges.http.openapi > docs/openapi.json``."""

from __future__ import annotations

import json
import sys

from gateway.edges.http.app import openapi_document


def render() -> str:
    """The committed form: two-space indent, keys in FastAPI's order, final newline."""
    return json.dumps(openapi_document(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
