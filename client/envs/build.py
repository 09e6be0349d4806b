"""Build an environment with docker-py, or reuse the image its fingerprint names.

    client = connect("unix:///var/run/docker.sock")
    built = build_env(client, load_env(Path("images"), "base"), progress=print)
    built.ref, built.fingerprint, built.reused

The image is tagged ``gpuhop-env/<name>:latest`` and ``gpuhop-env/<name>:<fp12>``
and labelled ``io.gpuhop.env`` / ``io.gpuhop.fingerprint``. If an image with the
same fingerprint already exists, nothing is built: the tags are moved to it.
A failing step raises ``BuildFailed`` naming the step and Docker's message.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors

from client.envs.engine import engine_url, split_ref, translated
from client.envs.fingerprint import fingerprint
from client.envs.spec import EnvSpec
from client.errors import BuildFailed, EnvError

REPO = "gpuhop-env"
LABEL_ENV = "io.gpuhop.env"
LABEL_FINGERPRINT = "io.gpuhop.fingerprint"
LABEL_DESCRIPTION = "io.gpuhop.description"
LineFn = Callable[[str], None]


def env_ref(name: str) -> str:
    """The tag an environment's current image carries on every engine."""
    return f"{REPO}/{name}:latest"


@dataclass(frozen=True)
class EnvImage:
    """A built environment image as ``ls`` shows it."""

    name: str
    fingerprint: str
    image_id: str
    size: int
    tags: tuple[str, ...]
    current: bool  # carries gpuhop-env/<name>:latest


@dataclass(frozen=True)
class BuiltEnv:
    """The result of ``build_env``."""

    name: str
    ref: str
    image_id: str
    fingerprint: str
    size: int
    reused: bool


def _base_resolver(client: docker.DockerClient, progress: LineFn | None) -> Callable[[str], str]:
    """Image ID of a base on this engine, pulling it if missing; a pinned digest as is."""

    def resolve(ref: str) -> str:
        try:
            return str(client.api.inspect_image(ref)["Id"])
        except docker.errors.ImageNotFound:
            pass
        if "@sha256:" in ref:
            return ref.split("@", 1)[1]  # the build will pull exactly this
        if progress is not None:
            progress(f"pulling base image {ref}")
        try:
            repo, tag = split_ref(ref)
            return str(client.images.pull(repo, tag=tag).id)
        except docker.errors.APIError as e:
            raise EnvError(
                f"base image {ref} is not on this engine and could not be pulled: "
                f"{str(e.explanation or e).strip()}"
            ) from None

    return resolve


def _context_for_image(image: str) -> io.BytesIO:
    """A one-line build context that only labels a ready image (devcontainer ``image``)."""
    text = f"FROM {image}\n".encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text))
    buf.seek(0)
    return buf


def _find(client: docker.DockerClient, name: str, fp: str) -> str | None:
    filters = {"label": [f"{LABEL_FINGERPRINT}={fp}", f"{LABEL_ENV}={name}"]}
    ids = client.api.images(filters=filters, quiet=True)
    return str(ids[0]) if ids else None


def build_env(
    client: docker.DockerClient,
    spec: EnvSpec,
    progress: LineFn | None = None,
    force: bool = False,
) -> BuiltEnv:
    """Build ``spec`` (or reuse the image with its fingerprint) and tag it; see module doc."""
    url = engine_url(client)
    with translated(f"build {spec.name}", url):
        fp = fingerprint(spec, _base_resolver(client, progress))
        existing = None if force else _find(client, spec.name, fp)
        if existing is not None:
            if progress is not None:
                progress(f"{spec.name}: inputs unchanged ({fp[:19]}), reusing {existing[:19]}")
            image_id = existing
        else:
            image_id = _run_build(client, spec, fp, progress)
        for tag in ("latest", fp.removeprefix("sha256:")[:12]):
            client.api.tag(image_id, f"{REPO}/{spec.name}", tag)
        size = int(client.api.inspect_image(image_id).get("Size") or 0)
    return BuiltEnv(spec.name, env_ref(spec.name), image_id, fp, size, existing is not None)


def _run_build(client: docker.DockerClient, spec: EnvSpec, fp: str, progress: LineFn | None) -> str:
    labels = {LABEL_ENV: spec.name, LABEL_FINGERPRINT: fp, LABEL_DESCRIPTION: spec.description}
    kwargs: dict[str, Any] = {
        "tag": env_ref(spec.name),
        "labels": labels,
        "buildargs": dict(spec.build_args),
        "rm": True,
        "forcerm": True,
        "decode": True,
    }
    if spec.dockerfile is not None and spec.context is not None:
        kwargs["path"] = str(spec.context)
        kwargs["dockerfile"] = str(spec.dockerfile)
    else:
        kwargs["fileobj"] = _context_for_image(spec.image or "scratch")
        kwargs["custom_context"] = True
    step = "the start"
    image_id: str | None = None
    for item in client.api.build(**kwargs):
        if not isinstance(item, dict):
            continue
        text = str(item.get("stream") or item.get("status") or "").rstrip()
        for line in text.splitlines():
            if line.startswith("Step "):
                step = line.strip()
            if progress is not None and line.strip():
                progress(line)
        if item.get("error"):
            detail = item.get("errorDetail", {}).get("message") or item["error"]
            message = " ".join(str(detail).split())
            raise BuildFailed(f"build of {spec.name} failed at {step}: {message}")
        aux = item.get("aux")
        if isinstance(aux, dict) and aux.get("ID"):
            image_id = str(aux["ID"])
    if image_id is None:
        raise BuildFailed(f"build of {spec.name} ended without an image (last: {step})")
    return image_id


def list_envs(client: docker.DockerClient) -> list[EnvImage]:
    """Every environment image on the engine: name, fingerprint, size, tags."""
    found: list[EnvImage] = []
    with translated("list environments", engine_url(client)):
        for summary in client.api.images(filters={"label": LABEL_ENV}):
            labels = summary.get("Labels") or {}
            name = str(labels.get(LABEL_ENV, "?"))
            tags = tuple(t for t in (summary.get("RepoTags") or ()) if t != "<none>:<none>")
            found.append(
                EnvImage(
                    name=name,
                    fingerprint=str(labels.get(LABEL_FINGERPRINT, "")),
                    image_id=str(summary["Id"]),
                    size=int(summary.get("Size") or 0),
                    tags=tags,
                    current=env_ref(name) in tags,
                )
            )
    return sorted(found, key=lambda e: (e.name, not e.current, e.image_id))
