"""``ssh-keygen`` for simulated hosts: their host keys are made exactly as OpenSSH makes them."""

from __future__ import annotations

import shutil
import subprocess

from gateway.errors import KeyMaterialError


def ssh_keygen_path() -> str | None:
    return shutil.which("ssh-keygen")


def run_keygen(*args: str) -> None:
    """Run ``ssh-keygen -q ARGS``; failures raise ``KeyMaterialError`` with its message."""
    keygen = ssh_keygen_path()
    if keygen is None:
        raise KeyMaterialError("ssh-keygen is not installed")
    result = subprocess.run([keygen, "-q", *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise KeyMaterialError(f"ssh-keygen {args[0]} failed: {result.stderr.strip()}")
