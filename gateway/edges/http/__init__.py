"""The gateway's HTTP API (v1): FastAPI routes served by uvicorn on the gateway's loop.

Wire it from the gateway process::

    api = await start_api(ApiContext(...), g.api_host, g.api_port)
    ...
    await api.stop()
"""

from __future__ import annotations

from gateway.edges.http.app import build_app, create_app, openapi_document
from gateway.edges.http.context import ApiContext, ClosableSession, LiveSession, session_controls
from gateway.edges.http.server import ApiServer, bind_api_socket, start_api

__all__ = [
    "ApiContext",
    "ApiServer",
    "ClosableSession",
    "LiveSession",
    "bind_api_socket",
    "build_app",
    "create_app",
    "openapi_document",
    "session_controls",
    "start_api",
]
