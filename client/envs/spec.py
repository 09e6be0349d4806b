"""What an environment is: ``images/<name>/`` or a project's dev container definition.

``images/<name>/`` holds a ``Dockerfile``, a hash-pinned ``requirements.lock``
(pip-tools ``--generate-hashes`` format) and ``env.toml``::

    description = "Python 3.11 with pinned scientific packages"
    gpus = 0                       # GPUs a job asks for unless told otherwise
    command = ["python", "-V"]     # the default job command
    # optional: dockerfile = "Dockerfile", context = ".", lock = "requirements.lock",
    #           [build_args] NAME = "value"

A ``.devcontainer/devcontainer.json`` (``build.dockerfile``/``context``/``args``
or ``image``) is accepted too, so teams that use dev containers keep one
definition. Parsing is strict and every problem is one ``EnvSpecError`` line.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from client.errors import EnvNotFound, EnvSpecError

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_PIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?==[^\s;]+")


@dataclass(frozen=True)
class EnvSpec:
    """A parsed environment definition; paths are absolute."""

    name: str
    source: Literal["images", "devcontainer"]
    root: Path
    dockerfile: Path | None  # None when the environment is a ready image
    context: Path | None
    lock_file: Path | None
    image: str | None  # devcontainer "image" form
    description: str = ""
    gpus: int = 0
    command: tuple[str, ...] = ()
    build_args: tuple[tuple[str, str], ...] = ()


class _EnvToml(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    gpus: int = Field(default=0, ge=0, le=64)
    command: list[str] = Field(default_factory=list)
    dockerfile: str = "Dockerfile"
    context: str = "."
    lock: str = "requirements.lock"
    build_args: dict[str, str] = Field(default_factory=dict)


def _one_line(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "file"
    return f"{where}: {err['msg']}"


def _inside(root: Path, relative: str, what: str, origin: Path) -> Path:
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()) and what != "context":
        raise EnvSpecError(f"{origin}: {what} {relative!r} points outside {root}")
    return path


def check_lock_file(path: Path) -> None:
    """Every requirement in a pip-tools lock must be pinned with ``==`` and carry hashes."""
    text = path.read_text(encoding="utf-8")
    logical: list[tuple[int, str]] = []
    current, start = "", 0
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.split(" #", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        if not current:
            start = number
        current += " " + stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            if current.strip():
                logical.append((start, current.strip()))
            current = ""
    for number, requirement in logical:
        if requirement.startswith("-"):
            continue  # options such as --index-url or --no-binary
        if not _PIN.match(requirement) or "--hash=sha256:" not in requirement:
            first = requirement.split()[0]
            raise EnvSpecError(f"{path}:{number}: {first} is not pinned with == and --hash")


def load_env(images_dir: Path, name: str) -> EnvSpec:
    """The environment ``images_dir/name``; ``EnvNotFound`` lists the ones that exist."""
    root = (images_dir / name).resolve()
    if not _NAME.match(name) or not root.is_dir():
        known = ", ".join(e.name for e in discover(images_dir)) or "none"
        raise EnvNotFound(f"no environment {name!r}: {images_dir / name} is not a directory "
                          f"(known: {known})")  # fmt: skip
    toml_path = root / "env.toml"
    try:
        raw = tomllib.loads(toml_path.read_text(encoding="utf-8")) if toml_path.exists() else {}
        cfg = _EnvToml.model_validate(raw)
    except tomllib.TOMLDecodeError as e:
        raise EnvSpecError(f"{toml_path}: {e}") from None
    except ValidationError as e:
        raise EnvSpecError(f"{toml_path}: {_one_line(e)}") from None
    dockerfile = _inside(root, cfg.dockerfile, "dockerfile", toml_path)
    if not dockerfile.is_file():
        raise EnvNotFound(f"environment {name!r} has no Dockerfile at {dockerfile}")
    lock = _inside(root, cfg.lock, "lock", toml_path)
    if lock.exists():
        check_lock_file(lock)
    elif "lock" in raw:
        raise EnvSpecError(f"{toml_path}: lock file {cfg.lock!r} does not exist")
    return EnvSpec(
        name=name,
        source="images",
        root=root,
        dockerfile=dockerfile,
        context=_inside(root, cfg.context, "context", toml_path),
        lock_file=lock if lock.exists() else None,
        image=None,
        description=cfg.description,
        gpus=cfg.gpus,
        command=tuple(cfg.command),
        build_args=tuple(sorted(cfg.build_args.items())),
    )


def discover(images_dir: Path) -> list[EnvSpec]:
    """Every well-formed environment under ``images_dir`` (malformed ones are skipped)."""
    found: list[EnvSpec] = []
    if images_dir.is_dir():
        for child in sorted(images_dir.iterdir()):
            if (child / "Dockerfile").is_file() and _NAME.match(child.name):
                try:
                    found.append(load_env(images_dir, child.name))
                except (EnvSpecError, EnvNotFound):
                    continue
    return found


def strip_jsonc(text: str) -> str:
    """JSON with comments and trailing commas (devcontainer.json) → plain JSON."""
    out: list[str] = []
    i, n, in_string = 0, len(text), False
    while i < n:
        c = text[i]
        if in_string:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
            out.append(c)
        elif text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
            continue
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
            continue
        else:
            out.append(c)
        i += 1
    return re.sub(r",(\s*[}\]])", r"\1", "".join(out))


class _DevBuild(BaseModel):
    model_config = ConfigDict(extra="ignore")

    dockerfile: str | None = None
    context: str = "."
    args: dict[str, str] = Field(default_factory=dict)


class _DevContainer(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    name: str | None = None
    image: str | None = None
    build: _DevBuild | None = None
    dockerFile: str | None = None  # the spec's legacy spelling
    context: str | None = None
    hostRequirements: dict[str, object] = Field(default_factory=dict)


def load_devcontainer(project: Path, name: str | None = None) -> EnvSpec:
    """The environment a project's ``.devcontainer/devcontainer.json`` describes."""
    candidates = [project / ".devcontainer" / "devcontainer.json", project / ".devcontainer.json"]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise EnvNotFound(f"no devcontainer.json in {project} (looked in .devcontainer/)")
    try:
        dev = _DevContainer.model_validate(json.loads(strip_jsonc(path.read_text("utf-8"))))
    except (ValueError, ValidationError) as e:
        first = _one_line(e) if isinstance(e, ValidationError) else str(e)
        raise EnvSpecError(f"{path}: {first}") from None
    base = path.parent.resolve()
    env_name = name or re.sub(r"[^a-z0-9._-]+", "-", (dev.name or project.name).lower()).strip("-")
    gpu = dev.hostRequirements.get("gpu")
    gpus = 1 if gpu is True or gpu == "optional" or isinstance(gpu, dict) else 0
    build = dev.build or _DevBuild()
    dockerfile_name = build.dockerfile or dev.dockerFile
    if dockerfile_name is None and dev.image is None:
        raise EnvSpecError(f"{path}: needs build.dockerfile or image")
    if dockerfile_name is None:
        return EnvSpec(env_name or "devcontainer", "devcontainer", base, None, None, None,
                       dev.image, f"dev container image {dev.image}", gpus)  # fmt: skip
    dockerfile = (base / dockerfile_name).resolve()
    if not dockerfile.is_file():
        raise EnvNotFound(f"{path}: Dockerfile {dockerfile} does not exist")
    context = (
        base / (dev.context if dev.build is None and dev.context else build.context)
    ).resolve()
    lock = next((p for p in (context / "requirements.lock", base / "requirements.lock")
                 if p.is_file()), None)  # fmt: skip
    if lock is not None:
        check_lock_file(lock)
    return EnvSpec(
        name=env_name or "devcontainer",
        source="devcontainer",
        root=base,
        dockerfile=dockerfile,
        context=context,
        lock_file=lock,
        image=None,
        description=f"dev container {dev.name or project.name}",
        gpus=gpus,
        command=(),
        build_args=tuple(sorted(build.args.items())),
    )


def resolve(images_dir: Path, name_or_path: str) -> EnvSpec:
    """``images/<name>`` if it exists, else a project directory with a dev container."""
    named = bool(_NAME.match(name_or_path)) and (images_dir / name_or_path).is_dir()
    if not named and Path(name_or_path).is_dir():
        return load_devcontainer(Path(name_or_path))
    return load_env(images_dir, name_or_path)
