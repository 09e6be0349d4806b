"""What every simulated host has: its directory layout and its public face.

``SshdHost`` (OpenSSH) and ``EmbeddedHost`` (asyncssh, where sshd is missing)
share one layout under the host's directory, so the demo, tests and benchmarks
treat them alike through the ``SimHost`` protocol::

    <dir>/host_ed25519(.pub)  host key          <dir>/authorized_keys  plain client keys
    <dir>/user_ca.pub         trusted user CAs  <dir>/gpus.json        fake GPU state
    <dir>/bin/nvidia-smi      fake tool         <dir>/home             $HOME of sessions
    <dir>/revoked.krl         RevokedKeys       <dir>/bin/gpuhop-install-krl  installs it

A host trusts certificates the way a gpuhop host must (docs/hosts.md): a login
as ACCOUNT needs the principal ``ACCOUNT@NAME`` (:func:`principals_for`), and
keys in ``revoked.krl`` (which the gateway pushes) are refused.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gateway.domain.krl import build_krl
from gateway.errors import GatewayError
from gpuhop_sim.gpustate import FakeGpu, default_gpus, install_nvidia_smi, write_state

SESSION_PATH_TAIL = "/usr/local/bin:/usr/bin:/bin"
KRL_TOOL = Path(__file__).with_name("bin") / "gpuhop-install-krl"


def principals_for(account: str, host: str) -> str:
    """The one certificate principal a simulated host accepts for ``account``."""
    return f"{account}@{host}"


class SimHostError(GatewayError):
    """A simulated host could not be started (the message carries its log's tail)."""


class SimHost(Protocol):
    """The face a simulated host shows to the demo, tests and benchmarks."""

    name: str

    @property
    def port(self) -> int: ...

    @property
    def host_key_line(self) -> str: ...

    @property
    def known_hosts_line(self) -> str: ...

    @property
    def log_path(self) -> Path: ...

    @property
    def gpu_state_path(self) -> Path: ...

    def start(self) -> SimHost: ...

    def stop(self) -> None: ...

    def authorize(self, key_line: str) -> None: ...

    def set_gpus(self, gpus: Sequence[FakeGpu]) -> None: ...

    def __enter__(self) -> SimHost: ...

    def __exit__(self, *exc: object) -> None: ...


@dataclass(frozen=True, slots=True)
class HostDir:
    """The files of one simulated host."""

    root: Path

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def gpu_state(self) -> Path:
        return self.root / "gpus.json"

    @property
    def host_key(self) -> Path:
        return self.root / "host_ed25519"

    @property
    def authorized_keys(self) -> Path:
        return self.root / "authorized_keys"

    @property
    def user_ca(self) -> Path:
        return self.root / "user_ca.pub"

    @property
    def revoked_keys(self) -> Path:
        return self.root / "revoked.krl"

    def prepare(
        self,
        name: str,
        gpus: int,
        gpu_model: str,
        user_ca_pub: str | None,
        authorized_keys: Sequence[str],
        reset_gpus: bool = True,
    ) -> None:
        """Create the layout; ``reset_gpus`` writes idle GPUs over any earlier state."""
        for d in (self.root, self.home, self.bin):
            d.mkdir(parents=True, exist_ok=True)
        if reset_gpus or not self.gpu_state.exists():
            write_state(self.gpu_state, default_gpus(name, gpus, gpu_model))
        install_nvidia_smi(self.bin)
        tool = self.bin / KRL_TOOL.name
        shutil.copyfile(KRL_TOOL, tool)
        tool.chmod(0o755)
        if not self.revoked_keys.exists():  # sshd refuses every key when it cannot read it
            tmp = self.revoked_keys.with_name(".revoked.krl.tmp")
            tmp.write_bytes(build_krl((), version=0, generated=0, comment="empty"))
            os.replace(tmp, self.revoked_keys)
        self.authorized_keys.write_text("".join(f"{k.strip()}\n" for k in authorized_keys))
        if user_ca_pub is not None:
            self.user_ca.write_text(user_ca_pub.strip() + "\n")

    def session_env(self) -> dict[str, str]:
        """Variables every session on the host sees (also how its processes are found)."""
        return {
            "HOME": str(self.home),
            "PATH": f"{self.bin}:{SESSION_PATH_TAIL}",
            "GPUHOP_FAKE_GPUS": str(self.gpu_state),
            "GPUHOP_KRL": str(self.revoked_keys),
        }

    def host_key_line(self) -> str:
        """The host's public key as ``type base64`` (comment dropped)."""
        fields = self.host_key.with_suffix(".pub").read_text().split()
        return f"{fields[0]} {fields[1]}"

    def authorize(self, key_line: str) -> None:
        with self.authorized_keys.open("a") as f:
            f.write(key_line.strip() + "\n")


def known_hosts_line(port: int, host_key_line: str, address: str = "127.0.0.1") -> str:
    """A known_hosts entry for a host on a non-standard port."""
    return f"[{address}]:{port} {host_key_line}"
