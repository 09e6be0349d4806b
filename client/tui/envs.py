"""Environments for the TUI: ``images/<name>/`` directories and their fingerprints.

Blocking file reads, run from a thread worker. The fingerprint is computed by
``client.envs.fingerprint`` without a Docker engine when every base image is
pinned by digest (``FROM image@sha256:...``); otherwise it needs an engine to
resolve the base, and the row says so. Whether each host has the environment
needs the gateway to report host images, which it does not yet: "unknown".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from client.errors import ClientError

UNKNOWN = "unknown"


@dataclass(frozen=True)
class EnvRow:
    name: str
    description: str
    gpus: int
    fingerprint: str
    """``sha256:...``, or why it could not be computed here."""
    error: str = ""


class _Unpinned(Exception):
    pass


def _pinned_only(ref: str) -> str:
    _, sep, digest = ref.partition("@")
    if sep and digest.startswith("sha256:"):
        return digest
    raise _Unpinned(ref)


def images_dir(explicit: Path | None = None) -> Path:
    """Where environments live: the argument, ``GPUHOP_IMAGES``, or ``./images``."""
    if explicit is not None:
        return explicit
    env = os.environ.get("GPUHOP_IMAGES", "").strip()
    return Path(env) if env else Path.cwd() / "images"


def env_names(root: Path) -> list[str]:
    """Directory names with a Dockerfile, for the Hosts screen's environment picker."""
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "Dockerfile").is_file())


def load_envs(root: Path) -> list[EnvRow]:
    """Every environment under ``root`` with its fingerprint (or the reason it has none)."""
    from client.envs.fingerprint import fingerprint
    from client.envs.spec import load_env

    rows: list[EnvRow] = []
    for name in env_names(root):
        try:
            spec = load_env(root, name)
        except ClientError as exc:
            rows.append(EnvRow(name, "", 0, "—", error=str(exc)))
            continue
        try:
            fp = fingerprint(spec, _pinned_only)
        except _Unpinned as exc:
            fp, err = "—", f"base {exc} is not pinned by digest: needs an engine to resolve"
        except OSError as exc:
            fp, err = "—", f"cannot read build inputs: {exc}"
        else:
            err = ""
        rows.append(EnvRow(name, spec.description, spec.gpus, fp, error=err))
    return rows
