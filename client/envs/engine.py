"""The Docker port: what the sync engine asks of an engine, and docker-py behind it.

``ImageEngine`` is the small surface sync needs (image IDs, layers, the chain
IDs an engine holds, save, load, tag). ``DockerEngine`` implements it over a
docker-py client; any base URL docker-py accepts works: ``unix://`` for a local
or per-host engine, ``ssh://`` once the gateway routes it. ``FakeEngine`` in
``client.envs.fake`` implements it in memory for unit tests.

docker-py and requests errors are translated here, once, into ``EnvError``
subclasses with one readable line.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import docker
import docker.errors
import requests.exceptions

from client.envs.archive import chain_ids
from client.envs.dockercompat import use_api_version
from client.errors import DockerUnavailable, EnvError, EnvNotFound, SyncFailed

SAVE_CHUNK = 1 << 20
_MIN_API = "1.24"  # replaced by the engine's own version on connect


class ImageEngine(Protocol):
    """An image store that can be asked what it holds and fed ``docker save`` archives."""

    name: str

    def image_id(self, ref: str) -> str | None:
        """The image ID ``ref`` (a name or an ID) resolves to, or None.

        >>> engine.image_id("gpuhop-env/base:latest")  # doctest: +SKIP
        'sha256:3f…'
        """
        ...

    def diff_ids(self, ref: str) -> tuple[str, ...]:
        """The image's layer digests, bottom-up (``RootFS.Layers``).

        >>> engine.diff_ids("gpuhop-env/base:latest")  # doctest: +SKIP
        ('sha256:3a24…', 'sha256:e502…')
        """
        ...

    def layer_sizes(self, ref: str) -> tuple[int, ...] | None:
        """Each layer's size in bytes, bottom-up, when the engine can tell; for progress only.

        >>> engine.layer_sizes("gpuhop-env/base:latest")  # doctest: +SKIP
        (1996800, 20971520)
        """
        ...

    def present_chains(self) -> frozenset[str]:
        """The chain ID of every layer stack the engine holds (what ``load`` can skip).

        >>> "sha256:3a24…" in engine.present_chains()  # doctest: +SKIP
        True
        """
        ...

    def save(self, ref: str) -> Iterator[bytes]:
        """``docker save ref`` as a stream of chunks.

        >>> b"".join(engine.save("gpuhop-env/base:latest"))[:4]  # doctest: +SKIP
        b'4fec'
        """
        ...

    def load(self, chunks: Iterable[bytes]) -> None:
        """``docker load`` from a stream; raises ``SyncFailed`` unless the engine accepted it.

        >>> engine.load(thin_archive(source.save(ref), layers, have))  # doctest: +SKIP
        """
        ...

    def tag(self, image_id: str, ref: str) -> None:
        """Point ``ref`` at an image the engine already has.

        >>> engine.tag("sha256:3f…", "gpuhop-env/base:latest")  # doctest: +SKIP
        """
        ...


def _unavailable(url: str, exc: BaseException) -> DockerUnavailable:
    text = str(exc)
    if "FileNotFoundError" in text or "No such file" in text:
        why = "the socket does not exist (is Docker installed and running there?)"
    elif "Connection refused" in text or "ConnectionRefused" in text:
        why = "connection refused (is dockerd running?)"
    elif "Permission denied" in text or "PermissionError" in text:
        why = "permission denied on the socket"
    else:
        why = text.splitlines()[0] if text else type(exc).__name__
    return DockerUnavailable(f"no Docker engine at {url}: {why}")


def engine_url(client: docker.DockerClient) -> str:
    """The address a client was made for (docker-py shows ``http+docker://localhost``)."""
    adapter: Any = getattr(client.api, "_custom_adapter", None)
    if getattr(adapter, "socket_path", None):
        return f"unix://{adapter.socket_path}"
    if getattr(adapter, "ssh_host", None):
        return f"ssh://{adapter.ssh_host}"
    return str(client.api.base_url)


def _probe_unix(base_url: str) -> None:
    """Connect once ourselves: docker-py leaks the socket when a unix connect fails."""
    path = base_url.removeprefix("unix://")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(5)
        try:
            probe.connect(path)
        except OSError as e:
            raise _unavailable(base_url, e) from None


def connect(base_url: str, timeout: int = 600) -> docker.DockerClient:
    """A docker-py client that has answered once, or ``DockerUnavailable`` with the reason.

    ``timeout`` bounds each socket read; loads of large layers need minutes.
    """
    if base_url.startswith("unix://"):
        _probe_unix(base_url)
    # A client built with version="auto" asks the engine inside its constructor and,
    # when that fails, leaks its socket; ask after construction instead.
    try:
        client = docker.DockerClient(base_url=base_url, timeout=timeout, version=_MIN_API)
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as e:
        raise _unavailable(base_url, e) from None
    try:
        use_api_version(client, str(client.api.version(api_version=False)["ApiVersion"]))
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as e:
        client.close()
        raise _unavailable(base_url, e) from None
    return client


@contextlib.contextmanager
def translated(what: str, url: str) -> Iterator[None]:
    """Turn docker-py and transport errors inside the block into one-line ``EnvError``s."""
    try:
        yield
    except docker.errors.ImageNotFound as e:
        raise EnvNotFound(f"{what}: {_explain(e)}") from None
    except docker.errors.APIError as e:
        raise EnvError(f"{what}: {_explain(e)}") from None
    except (requests.exceptions.ConnectionError, ConnectionError) as e:
        raise _unavailable(url, e) from None
    except docker.errors.DockerException as e:
        raise EnvError(f"{what}: {e}") from None


def _explain(e: docker.errors.APIError) -> str:
    explanation = e.explanation
    if isinstance(explanation, bytes):
        explanation = explanation.decode("utf-8", "replace")
    return str(explanation or e).strip()


class DockerEngine:
    """``ImageEngine`` over a docker-py client (the caller owns and closes the client)."""

    def __init__(self, client: docker.DockerClient, name: str | None = None) -> None:
        self.client = client
        self.url = engine_url(client)
        self.name = name or self.url

    def _inspect(self, ref: str) -> dict[str, Any] | None:
        try:
            attrs: dict[str, Any] = self.client.api.inspect_image(ref)
        except docker.errors.ImageNotFound:
            return None
        return attrs

    def image_id(self, ref: str) -> str | None:
        with translated(f"{self.name}: inspect {ref}", self.url):
            attrs = self._inspect(ref)
        return None if attrs is None else str(attrs["Id"])

    def diff_ids(self, ref: str) -> tuple[str, ...]:
        with translated(f"{self.name}: inspect {ref}", self.url):
            attrs = self._inspect(ref)
        if attrs is None:
            raise EnvNotFound(f"{self.name}: no image {ref}")
        return tuple(attrs.get("RootFS", {}).get("Layers") or ())

    def layer_sizes(self, ref: str) -> tuple[int, ...] | None:
        with translated(f"{self.name}: history {ref}", self.url):
            history = self.client.api.history(ref)
        sizes = [int(h.get("Size") or 0) for h in reversed(history)]
        nonempty = tuple(s for s in sizes if s > 0)
        # History marks metadata-only steps with size 0; the map is exact only
        # when every real layer has content.
        return nonempty if len(nonempty) == len(self.diff_ids(ref)) else None

    def present_chains(self) -> frozenset[str]:
        """Top-level images suffice: an intermediate image's chain prefixes its child's."""
        chains: set[str] = set()
        with translated(f"{self.name}: list images", self.url):
            for summary in self.client.api.images():
                attrs = self._inspect(summary["Id"])
                if attrs is not None:
                    chains.update(chain_ids(attrs.get("RootFS", {}).get("Layers") or ()))
        return frozenset(chains)

    def save(self, ref: str) -> Iterator[bytes]:
        with translated(f"{self.name}: save {ref}", self.url):
            stream = self.client.api.get_image(ref, chunk_size=SAVE_CHUNK)
            yield from stream

    def load(self, chunks: Iterable[bytes]) -> None:
        with translated(f"{self.name}: load", self.url):
            messages = self.client.api.load_image(chunks)
            for message in messages:
                if isinstance(message, dict) and message.get("error"):
                    detail = message.get("errorDetail", {}).get("message") or message["error"]
                    raise SyncFailed(f"{self.name}: docker load failed: {detail}")

    def tag(self, image_id: str, ref: str) -> None:
        repo, tag = split_ref(ref)
        with translated(f"{self.name}: tag {ref}", self.url):
            self.client.api.tag(image_id, repo, tag)


def split_ref(ref: str) -> tuple[str, str]:
    """``repo[:tag]`` → (repo, tag), defaulting the tag to ``latest`` (ports contain ':')."""
    repo, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return ref, "latest"
    return repo, tag
