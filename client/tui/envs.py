"""Environments for the TUI: ``images/<name>/`` directories and their fingerprints.

Blocking file reads, run from a thread worker. The fingerprint is computed by
``client.envs.fingerprint`` without a Docker engine when every base image is
pinned by digest (``FROM image@sha256:...``); otherwise the local Docker engine
resolves the base (as ``gpuhop env build`` does), and without one the row says
why it has no fingerprint. Which hosts have it: ``client.tui.envsync``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
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


def load_envs(root: Path, resolve_base: Callable[[str], str] | None = None) -> list[EnvRow]:
    """Every environment under ``root`` with its fingerprint (or the reason it has none).

    ``resolve_base(ref)`` gives a base image's ID from the local engine, as a
    build would; it raises ``ClientError`` when it cannot. Without it, or when it
    cannot, a base pinned by digest stands for itself.
    """
    from client.envs.fingerprint import fingerprint
    from client.envs.spec import load_env

    def resolve(ref: str) -> str:
        if resolve_base is not None:
            try:
                return resolve_base(ref)
            except ClientError:
                pass
        return _pinned_only(ref)

    rows: list[EnvRow] = []
    for name in env_names(root):
        try:
            spec = load_env(root, name)
        except ClientError as exc:
            rows.append(EnvRow(name, "", 0, "—", error=str(exc)))
            continue
        try:
            fp = fingerprint(spec, resolve)
        except _Unpinned as exc:
            fp, err = "—", f"base {exc} is not pinned by digest and not in the local engine"
        except OSError as exc:
            fp, err = "—", f"cannot read build inputs: {exc}"
        else:
            err = ""
        rows.append(EnvRow(name, spec.description, spec.gpus, fp, error=err))
    return rows
