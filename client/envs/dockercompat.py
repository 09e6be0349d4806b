"""Every docker-py internal the client relies on, fenced in one module.

docker-py's public API has no call to adopt the engine's API version after
construction, no way to close an attach stream's HTTP response over ``ssh://``,
and no public helper for ``.dockerignore`` matching. Each function below names
what it relies on, and ``tests/unit/test_dockercompat.py`` pins each of those
against the installed docker-py, so an upgrade shows at once what broke.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import docker
from docker.utils.build import exclude_paths


def use_api_version(client: docker.DockerClient, version: str) -> None:
    """Make ``client`` speak API ``version`` from now on (what ``version="auto"`` settles on).

    Relies on: ``APIClient._version``, the attribute docker-py's constructor
    sets and every request's URL reads.
    """
    client.api._version = version


def close_stream(stream: Any) -> None:
    """Close an attach stream and its HTTP response (over ``ssh://`` only the response closes).

    Relies on: ``CancellableStream._response``.
    """
    with contextlib.suppress(Exception):
        stream.close()
    with contextlib.suppress(Exception):
        stream._response.close()


def kept_paths(context: str, patterns: Iterable[str], dockerfile: str | None) -> set[str]:
    """The files of a build context that ``.dockerignore`` ``patterns`` keep, as docker build does.

    Relies on: ``docker.utils.build.exclude_paths(root, patterns, dockerfile)``
    (not in docker-py's documented API).
    """
    kept: set[str] = exclude_paths(context, list(patterns), dockerfile=dockerfile)
    return kept
