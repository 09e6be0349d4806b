"""The fingerprint of an environment: a digest of everything its build reads.

Inputs, in a canonical text that is hashed with SHA-256:

* the Dockerfile's bytes and the lock file's bytes;
* every file of the build context that docker-py would send (``.dockerignore``
  honoured with docker-py's own matcher), by relative path, permission bits
  and content digest; modification times are left out so that a fresh clone
  has the same fingerprint;
* build arguments;
* each external base image (``FROM`` and ``COPY --from``) with the image ID it
  resolves to on the building engine, or its pinned digest.

Two builds with equal fingerprints are the same environment, so the label
``io.gpuhop.fingerprint`` lets any host be asked "do you have exactly this?".
Pure apart from reading the context; the engine lookup is passed in.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Callable, Mapping
from pathlib import Path

from client.envs.dockercompat import kept_paths
from client.envs.spec import EnvSpec

VERSION = "gpuhop-env-fingerprint/1"
_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


def _instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for line in dockerfile.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        word, _, rest = current.partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    return out


def _expand(text: str, values: Mapping[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3)
        return values.get(name, m.group(2) or "")

    return _VAR.sub(sub, text)


def base_images(dockerfile: str, build_args: Mapping[str, str] | None = None) -> list[str]:
    """External images a Dockerfile builds on, in order, without stage names or ``scratch``.

    >>> base_images("ARG V=3.11\\nFROM python:${V}-slim AS b\\nFROM b\\nCOPY --from=x:1 / /")
    ['python:3.11-slim', 'x:1']
    """
    args = dict(build_args or {})
    values: dict[str, str] = {}
    stages: list[str] = []
    found: list[str] = []
    for word, rest in _instructions(dockerfile):
        if word == "ARG" and not stages:
            name, _, default = rest.partition("=")
            values[name.strip()] = args.get(name.strip(), default.strip().strip("\"'"))
        elif word == "FROM":
            parts = [p for p in rest.split() if not p.startswith("--")]
            if not parts:
                continue
            image = _expand(parts[0], values)
            if image.lower() != "scratch" and image.lower() not in stages and image not in found:
                found.append(image)
            stages.append(parts[2].lower() if len(parts) >= 3 and parts[1].upper() == "AS" else "")
        elif word in ("COPY", "ADD"):
            for flag in rest.split():
                if flag.startswith("--from="):
                    ref = _expand(flag.removeprefix("--from="), values)
                    known = ref.lower() in stages or ref.isdigit()
                    if not known and ref not in found:
                        found.append(ref)
    return found


def context_files(context: Path, dockerfile: Path) -> list[str]:
    """Relative paths docker-py would put in the build context, sorted."""
    ignore = context / ".dockerignore"
    patterns: list[str] = []
    if ignore.is_file():
        patterns = [
            line.strip()
            for line in ignore.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.strip().startswith("#")
        ]
    relative = os.path.relpath(dockerfile, context) if dockerfile.is_relative_to(context) else None
    return sorted(kept_paths(str(context), patterns, relative))


def _file_line(context: Path, rel: str) -> str | None:
    path = context / rel
    st = path.lstat()
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        return f"link {rel} {os.readlink(path)}"
    if stat.S_ISDIR(st.st_mode):
        return f"dir {rel} {mode:o}"
    if stat.S_ISREG(st.st_mode):
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return f"file {rel} {mode:o} {digest.hexdigest()}"
    return None


def _digest(path: Path | None) -> str:
    return "-" if path is None else hashlib.sha256(path.read_bytes()).hexdigest()


def fingerprint(spec: EnvSpec, resolve_base: Callable[[str], str]) -> str:
    """``sha256:…`` over the build inputs; ``resolve_base(ref)`` gives a base's image ID."""
    lines = [VERSION, f"dockerfile {_digest(spec.dockerfile)}", f"lock {_digest(spec.lock_file)}"]
    lines += [f"arg {k}={v}" for k, v in spec.build_args]
    if spec.image is not None:
        lines.append(f"image {spec.image} {resolve_base(spec.image)}")
    if spec.dockerfile is not None and spec.context is not None:
        text = spec.dockerfile.read_text(encoding="utf-8")
        for ref in base_images(text, dict(spec.build_args)):
            lines.append(f"base {ref} {resolve_base(ref)}")
        for rel in context_files(spec.context, spec.dockerfile):
            line = _file_line(spec.context, rel)
            if line is not None:
                lines.append(line)
    return "sha256:" + hashlib.sha256("\n".join(lines).encode()).hexdigest()
