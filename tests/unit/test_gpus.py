"""nvidia-smi output of every shape becomes a clear GpuInventory, never an exception."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.domain.inventory.gpus import (
    NVIDIA_SMI_COMMAND,
    Gpu,
    GpuInventory,
    gpu_model_matches,
    parse_gpu_query,
)
from gpuhop_sim.gpustate import NVIDIA_SMI, default_gpus, with_load, write_state

H100 = "NVIDIA H100 80GB HBM3"
ROW0 = f"0, GPU-aaaa, {H100}, 81559, 0, 0"
ROW1 = f"1, GPU-bbbb, {H100}, 81559, 40000, 87"
G0 = Gpu(0, "GPU-aaaa", H100, 81559, 0, 0)
G1 = Gpu(1, "GPU-bbbb", H100, 81559, 40000, 87)


@pytest.mark.parametrize(
    ("stdout", "stderr", "status", "state", "gpus"),
    [
        (f"{ROW0}\n{ROW1}\n", "", 0, "ok", (G0, G1)),
        (f"{ROW1}\n{ROW0}\n", "", 0, "ok", (G0, G1)),  # sorted by index
        (f"  {ROW0}  \n\n\n", "", 0, "ok", (G0,)),  # whitespace, blank lines
        ("0 ,  GPU-aaaa ,NVIDIA H100 80GB HBM3,81559,0 , 0\r\n", "", 0, "ok", (G0,)),
        (
            "0, GPU-aaaa, NVIDIA H100 80GB HBM3, 81559 MiB, 0 MiB, 0 %\n",
            "",
            0,
            "ok",
            (G0,),
        ),  # units left in
        (
            "0, GPU-aaaa, NVIDIA H100 80GB HBM3, [N/A], [N/A], [Not Supported]\n",
            "",
            0,
            "ok",
            (Gpu(0, "GPU-aaaa", H100),),
        ),
        (
            "0, [N/A], [N/A], N/A, [Unknown Error], [GPU is lost]\n",
            "",
            0,
            "ok",
            (Gpu(0, "", ""),),
        ),
        ("0, GPU-aaaa, NVIDIA H100 80GB HBM3\n", "", 0, "ok", (Gpu(0, "GPU-aaaa", H100),)),
        ("0, GPU-aaaa\n", "", 0, "ok", (Gpu(0, "GPU-aaaa", ""),)),  # fields missing
        (
            "0, GPU-aaaa, Weird, Name, 100, 10, 5\n",
            "",
            0,
            "ok",
            (Gpu(0, "GPU-aaaa", "Weird, Name", 100, 10, 5),),
        ),  # a comma inside the name
        ("0, GPU-aaaa, X, 12.6, -3, abc\n", "", 0, "ok", (Gpu(0, "GPU-aaaa", "X", 13),)),
        ("", "", 0, "no_gpus", ()),
        ("\n  \n", "", 0, "no_gpus", ()),
        ("No devices were found\n", "", 6, "no_gpus", ()),
        ("No devices were found\n", "", 0, "no_gpus", ()),
        ("", "bash: line 1: nvidia-smi: command not found\n", 127, "no_driver", ()),
        ("", "sh: 1: nvidia-smi: not found\n", 127, "no_driver", ()),
        ("", "", 127, "no_driver", ()),
        (
            "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
            "Make sure that the latest NVIDIA driver is installed and running.\n",
            "",
            9,
            "no_driver",
            (),
        ),
        ("Failed to initialize NVML: Driver/library version mismatch\n", "", 18, "no_driver", ()),
        ('Field "bogus" is not a valid field to query.\n', "", 2, "error", ()),
        ("", "", None, "error", ()),  # killed by a signal
        ("", "Segmentation fault\n", 139, "error", ()),
        ("garbage\nmore garbage\n", "", 0, "error", ()),
        ("<html>\x00\xff</html>", "", 0, "error", ()),
        ("x, GPU-aaaa, A, 1, 1, 1\n-1, GPU-b, B, 1, 1, 1\n", "", 0, "error", ()),
    ],
)
def test_parse_table(
    stdout: str, stderr: str, status: int | None, state: str, gpus: tuple[Gpu, ...]
) -> None:
    inventory = parse_gpu_query(stdout, stderr, status)
    assert (inventory.state, inventory.gpus) == (state, gpus)
    if state != "ok":
        assert inventory.message, "a state other than ok always says why"


def test_bad_rows_are_skipped_and_named() -> None:
    inventory = parse_gpu_query(f"{ROW0}\nnonsense\n{ROW0}\n{ROW1}\n")
    assert inventory.state == "ok" and inventory.gpus == (G0, G1)
    assert "line 2" in inventory.message and "line 3: index 0 repeated" in inventory.message


def test_messages_are_short_and_one_line() -> None:
    inventory = parse_gpu_query("bad\n" * 500, "", 0)
    assert inventory.state == "error" and len(inventory.message) < 300
    failed = parse_gpu_query("", "x" * 1000 + "\nsecond line", 1)
    assert "\n" not in failed.message and len(failed.message) < 200
    assert failed.message.startswith("nvidia-smi exit status 1: ")


@pytest.mark.parametrize(
    ("wanted", "actual", "expected"),
    [
        ("H100", H100, True),
        ("h100", H100, True),
        ("NVIDIA H100 80GB HBM3", H100, True),
        ("H100 HBM3", H100, True),
        ("HBM3 H100", H100, False),  # order matters
        ("H1000", H100, False),
        ("H10", H100, False),
        ("A100", "NVIDIA A100-SXM4-80GB", True),
        ("a100-80gb", "NVIDIA A100-SXM4-80GB", True),
        ("RTX 4090", "NVIDIA GeForce RTX 4090", True),
        ("T4", "Tesla T4", True),
        ("", H100, False),
        ("H100", "", False),
    ],
)
def test_gpu_model_matches(wanted: str, actual: str, expected: bool) -> None:
    assert gpu_model_matches(wanted, actual) is expected


def test_idle_indices_and_free_memory() -> None:
    inventory = GpuInventory("ok", (G0, G1, Gpu(2, "GPU-c", H100, None, None, None)))
    assert inventory.idle_indices() == (0,)
    assert inventory.idle_indices(max_utilization_pct=90, max_memory_used_mib=50000) == (0, 1)
    assert (inventory.count, inventory.indices) == (3, (0, 1, 2))
    assert G1.memory_free_mib == 41559 and inventory.gpus[2].memory_free_mib is None


def _run_fake(state: Path | None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin"}
    if state is not None:
        env["GPUHOP_FAKE_GPUS"] = str(state)
    argv = NVIDIA_SMI_COMMAND.split()[1:]
    return subprocess.run(
        [sys.executable, str(NVIDIA_SMI), *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_parses_the_fake_tools_real_output(tmp_path: Path) -> None:
    path = tmp_path / "gpus.json"
    gpus = list(default_gpus("sg-1", 3, "A100"))
    gpus[2] = with_load(gpus[2], utilization=64, memory_used_mib=1234)
    write_state(path, gpus)
    done = _run_fake(path)
    inventory = parse_gpu_query(done.stdout, done.stderr, done.returncode)
    assert inventory.state == "ok", inventory
    assert inventory.gpus == tuple(
        Gpu(
            g.index,
            g.uuid,
            g.name,
            g.memory_total_mib,
            g.memory_used_mib,
            g.utilization_gpu,
        )
        for g in gpus
    )


def test_fake_tool_without_gpus_is_no_gpus(tmp_path: Path) -> None:
    path = tmp_path / "gpus.json"
    write_state(path, [])
    for state in (path, None):
        done = _run_fake(state)
        assert done.returncode == 6
        assert parse_gpu_query(done.stdout, done.stderr, done.returncode).state == "no_gpus"
