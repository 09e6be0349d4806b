"""What ``nvidia-smi`` says about a host's GPUs, parsed without ever raising.

The probe runs ``NVIDIA_SMI_COMMAND`` on each host over SSH and hands the
exit status, stdout and stderr to ``parse_gpu_query``. Real hosts answer in
many ways besides a clean table: ``[N/A]`` or ``[Not Supported]`` for a field
a card cannot report, units left in by an older driver, no GPUs at all, a
missing driver or tool, or an error banner. Each becomes one ``GpuInventory``
state, so the gateway, the API and placement all see the same thing:

    ok        at least one GPU row parsed (rows that did not are named in ``message``)
    no_gpus   the tool ran and reports no devices
    no_driver the tool or the driver is missing on the host
    error     anything else; ``message`` says what came back

Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

QUERY_FIELDS = ("index", "uuid", "name", "memory.total", "memory.used", "utilization.gpu")
NVIDIA_SMI_COMMAND = (
    f"nvidia-smi --query-gpu={','.join(QUERY_FIELDS)} --format=csv,noheader,nounits"
)

InventoryState = Literal["ok", "no_gpus", "no_driver", "error"]

# The shell's "not found" status, and nvidia-smi's own "no devices" status.
EXIT_NOT_FOUND = 127
EXIT_NO_DEVICES = 6
_NO_DEVICES = ("no devices were found", "no devices found")
_NO_DRIVER = (
    "command not found",
    "not found",
    "no such file or directory",
    "couldn't communicate with the nvidia driver",
    "driver/library version mismatch",
    "nvml: driver not loaded",
)
# Bracketed placeholders ("[N/A]", "[Not Supported]", "[Unknown Error]", "[GPU is lost]")
# and the bare spellings some drivers print.
_PLACEHOLDER = re.compile(r"\[[^\]]*\]|n/a|not supported|unknown error", re.IGNORECASE)
_UNIT = re.compile(r"\s*(mib|%)$", re.IGNORECASE)
_MAX_MESSAGE = 200


@dataclass(frozen=True, slots=True)
class Gpu:
    """One GPU row; a number the card could not report is None."""

    index: int
    uuid: str
    name: str
    memory_total_mib: int | None = None
    memory_used_mib: int | None = None
    utilization_pct: int | None = None

    @property
    def memory_free_mib(self) -> int | None:
        if self.memory_total_mib is None or self.memory_used_mib is None:
            return None
        return max(0, self.memory_total_mib - self.memory_used_mib)


@dataclass(frozen=True, slots=True)
class GpuInventory:
    """A host's GPUs as last reported, sorted by index, and what state the report was in."""

    state: InventoryState
    gpus: tuple[Gpu, ...] = ()
    message: str = ""

    @property
    def count(self) -> int:
        return len(self.gpus)

    @property
    def indices(self) -> tuple[int, ...]:
        return tuple(g.index for g in self.gpus)

    def idle_indices(
        self, max_utilization_pct: int = 5, max_memory_used_mib: int = 1024
    ) -> tuple[int, ...]:
        """GPUs that look unused on the host itself (a GPU that reports no load counts as busy).

        Leases track what the gateway handed out; this catches work started
        around it, which nvidia-smi still sees.
        """
        return tuple(
            g.index
            for g in self.gpus
            if g.utilization_pct is not None
            and g.memory_used_mib is not None
            and g.utilization_pct <= max_utilization_pct
            and g.memory_used_mib <= max_memory_used_mib
        )


def parse_gpu_query(stdout: str, stderr: str = "", exit_status: int | None = 0) -> GpuInventory:
    """The ``GpuInventory`` for one run of ``NVIDIA_SMI_COMMAND``; never raises.

    ``exit_status`` is None when the command died of a signal or the status
    was not reported.

    >>> parse_gpu_query("0, GPU-1, NVIDIA L4, 23034, 10, 3\\n").gpus[0].utilization_pct
    3
    """
    out, err = stdout.strip(), stderr.strip()
    if exit_status == 0 and out:
        parsed = _parse_rows(out.splitlines())
        if parsed.state == "ok":
            return parsed
    said = f"{err}\n{out}".lower()
    if exit_status == EXIT_NOT_FOUND or any(m in said for m in _NO_DRIVER):
        return GpuInventory("no_driver", message=_first_line(err or out) or "nvidia-smi not found")
    if exit_status == EXIT_NO_DEVICES or any(m in said for m in _NO_DEVICES):
        return GpuInventory("no_gpus", message=_first_line(out or err) or "no devices were found")
    if exit_status != 0:
        status = "killed by a signal" if exit_status is None else f"exit status {exit_status}"
        detail = _first_line(err or out)
        return GpuInventory("error", message=f"nvidia-smi {status}: {detail}".rstrip(": "))
    if not out:
        return GpuInventory("no_gpus", message="nvidia-smi listed no GPUs")
    return _parse_rows(out.splitlines())  # the rows' own error, e.g. garbage


def _parse_rows(lines: Iterable[str]) -> GpuInventory:
    gpus: dict[int, Gpu] = {}
    problems: list[str] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        gpu, problem = _parse_row(line)
        if gpu is not None and gpu.index in gpus:
            problem = f"index {gpu.index} repeated"
        elif gpu is not None:
            gpus[gpu.index] = gpu
            continue
        problems.append(f"line {number}: {problem}")
    message = "; ".join(problems)
    if len(message) > _MAX_MESSAGE:
        message = message[: _MAX_MESSAGE - 1] + "…"
    if not gpus:
        return GpuInventory("error", message=f"no GPU rows could be read ({message})")
    ordered = tuple(gpus[i] for i in sorted(gpus))
    return GpuInventory("ok", ordered, f"skipped {message}" if message else "")


def _parse_row(line: str) -> tuple[Gpu | None, str]:
    """One row, or None and why not."""
    cells = [c.strip() for c in line.split(",")]
    if len(cells) < 2:
        return None, f"expected {len(QUERY_FIELDS)} fields, got {len(cells)}: {_clip(line)!r}"
    if len(cells) > len(QUERY_FIELDS):
        # Only the name is free text; a comma in it must not shift the numbers.
        extra = len(cells) - len(QUERY_FIELDS)
        cells = [*cells[:2], ", ".join(cells[2 : 3 + extra]), *cells[3 + extra :]]
    cells += [""] * (len(QUERY_FIELDS) - len(cells))
    if not (cells[0].isascii() and cells[0].isdigit()):
        return None, f"index {_clip(cells[0])!r} is not a GPU index"
    index = int(cells[0])
    uuid = "" if _missing(cells[1]) else cells[1]
    name = "" if _missing(cells[2]) else cells[2]
    gpu = Gpu(index, uuid, name, _number(cells[3]), _number(cells[4]), _number(cells[5]))
    return gpu, ""


def _missing(cell: str) -> bool:
    return not cell or _PLACEHOLDER.fullmatch(cell) is not None


def _number(cell: str) -> int | None:
    """A non-negative whole number, tolerating a unit and a decimal part; None otherwise."""
    if _missing(cell):
        return None
    text = _UNIT.sub("", cell).strip()
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return round(value)


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return _clip(line.strip())
    return ""


def _clip(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def model_tokens(model: str) -> tuple[str, ...]:
    """A GPU model name as lower-case words: ``"NVIDIA A100-SXM4-80GB"`` → nvidia a100 sxm4 80gb."""
    return tuple(re.findall(r"[a-z0-9]+", model.lower()))


def gpu_model_matches(wanted: str, actual: str) -> bool:
    """Whether a short or full model name (``"H100"``, ``"a100 80gb"``) names ``actual``.

    Case and punctuation are ignored; every word of ``wanted`` must appear in
    ``actual`` in order, as a whole word, so ``H100`` matches ``NVIDIA H100
    80GB HBM3`` but not ``H1000``. An empty ``wanted`` matches nothing.

    >>> gpu_model_matches("A100", "NVIDIA A100-SXM4-80GB")
    True
    """
    words = iter(model_tokens(actual))
    wanted_words = model_tokens(wanted)
    return bool(wanted_words) and all(w in words for w in wanted_words)
