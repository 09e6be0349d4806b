"""One test per docker-py internal that client/envs/dockercompat.py relies on."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import docker
from docker.types.daemon import CancellableStream

from client.envs import dockercompat


def test_the_api_client_keeps_its_version_where_requests_read_it() -> None:
    client = docker.DockerClient(base_url="unix:///nonexistent.sock", version="1.24")
    try:
        assert client.api._version == "1.24"
        dockercompat.use_api_version(client, "1.41")
        assert (
            client.api._url("/containers/json") == "http+docker://localhost/v1.41/containers/json"
        )
    finally:
        client.close()


class _Closable:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_attach_streams_keep_their_response() -> None:
    response: Any = _Closable()
    stream = CancellableStream(iter(()), response)
    assert stream._response is response
    dockercompat.close_stream(stream)
    assert response.closed


def test_dockerignore_matching_keeps_the_dockerfile(tmp_path: Path) -> None:
    assert list(inspect.signature(dockercompat.exclude_paths).parameters) == [
        "root",
        "patterns",
        "dockerfile",
    ]
    (tmp_path / "Dockerfile").write_text("FROM x\n")
    (tmp_path / "keep.txt").write_text("k")
    (tmp_path / "skip.log").write_text("s")
    kept = dockercompat.kept_paths(str(tmp_path), ["*.log", "Dockerfile"], "Dockerfile")
    assert kept == {"Dockerfile", "keep.txt"}
