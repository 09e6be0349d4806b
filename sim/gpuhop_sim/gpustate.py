"""The GPU state a simulated host reports through its fake ``nvidia-smi``.

Each simulated host has one JSON file, named to its sessions by the
``GPUHOP_FAKE_GPUS`` environment variable. Tests change what the host reports
by rewriting it (atomically, so a concurrent ``nvidia-smi`` never reads half a
file). The format, read by ``sim/gpuhop_sim/bin/nvidia-smi``::

    {"driver_version": "550.54.15", "cuda_version": "12.4",
     "gpus": [{"index": 0, "uuid": "GPU-…", "name": "NVIDIA H100 80GB HBM3",
               "memory_total_mib": 81559, "memory_used_mib": 0,
               "utilization_gpu": 0, "pci_bus_id": "00000000:18:00.0"}],
     "processes": [{"pid": 4242, "process_name": "python", "gpu_index": 0,
                    "used_memory_mib": 1024}]}
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

DRIVER_VERSION = "550.54.15"
CUDA_VERSION = "12.4"
NVIDIA_SMI = Path(__file__).with_name("bin") / "nvidia-smi"

# short model name -> (name nvidia-smi prints, memory.total in MiB)
_MODELS: dict[str, tuple[str, int]] = {
    "H100": ("NVIDIA H100 80GB HBM3", 81559),
    "H200": ("NVIDIA H200", 143771),
    "A100": ("NVIDIA A100-SXM4-80GB", 81920),
    "A10G": ("NVIDIA A10G", 23028),
    "L4": ("NVIDIA L4", 23034),
    "L40S": ("NVIDIA L40S", 46068),
    "T4": ("Tesla T4", 15360),
    "RTX 4090": ("NVIDIA GeForce RTX 4090", 24564),
}
_DEFAULT_MEMORY_MIB = 24576


@dataclass(frozen=True, slots=True)
class FakeGpu:
    """One simulated GPU, as the state file stores it."""

    index: int
    uuid: str
    name: str
    memory_total_mib: int
    memory_used_mib: int = 0
    utilization_gpu: int = 0
    pci_bus_id: str = ""


@dataclass(frozen=True, slots=True)
class FakeProcess:
    """A compute process the fake ``nvidia-smi --query-compute-apps`` lists."""

    pid: int
    process_name: str
    gpu_index: int
    used_memory_mib: int


def model_spec(model: str) -> tuple[str, int]:
    """Return (full name, memory MiB) for a short ("H100") or full model name."""
    if model in _MODELS:
        return _MODELS[model]
    for name, memory in _MODELS.values():
        if name == model:
            return name, memory
    name = model if model.startswith(("NVIDIA", "Tesla")) else f"NVIDIA {model}"
    return name, _DEFAULT_MEMORY_MIB


def default_gpus(host: str, count: int, model: str) -> tuple[FakeGpu, ...]:
    """Idle GPUs with stable UUIDs derived from the host name, so runs are repeatable."""
    name, memory = model_spec(model)
    return tuple(
        FakeGpu(
            index=i,
            uuid=f"GPU-{uuid.uuid5(uuid.NAMESPACE_DNS, f'{host}.gpu{i}.gpuhop')}",
            name=name,
            memory_total_mib=memory,
            pci_bus_id=f"00000000:{(0x18 + 0x10 * i) % 0x100:02X}:00.0",
        )
        for i in range(count)
    )


def write_state(path: Path, gpus: Sequence[FakeGpu], processes: Sequence[FakeProcess] = ()) -> None:
    """Replace the state file atomically (write a sibling, then rename)."""
    state = {
        "driver_version": DRIVER_VERSION,
        "cuda_version": CUDA_VERSION,
        "gpus": [asdict(g) for g in gpus],
        "processes": [asdict(p) for p in processes],
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_state(path: Path) -> tuple[FakeGpu, ...]:
    """Read the GPUs back (for tests that change one field and write them again)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    rows = data["gpus"] if isinstance(data, dict) else data
    return tuple(FakeGpu(**row) for row in rows)


def with_load(gpu: FakeGpu, *, utilization: int, memory_used_mib: int) -> FakeGpu:
    """A copy of ``gpu`` reporting the given load."""
    return replace(gpu, utilization_gpu=utilization, memory_used_mib=memory_used_mib)


def install_nvidia_smi(bin_dir: Path) -> Path:
    """Copy the fake ``nvidia-smi`` into ``bin_dir``, run by this interpreter.

    The shebang is rewritten to ``sys.executable -IS`` so the script starts fast
    and does not depend on which ``python3`` the session's PATH finds.
    """
    bin_dir.mkdir(parents=True, exist_ok=True)
    target = bin_dir / "nvidia-smi"
    body = NVIDIA_SMI.read_text(encoding="utf-8").split("\n", 1)[1]
    tmp = target.with_name(".nvidia-smi.tmp")
    tmp.write_text(f"#!{sys.executable} -IS\n{body}", encoding="utf-8")
    tmp.chmod(0o755)
    os.replace(tmp, target)
    return target
