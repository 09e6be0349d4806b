"""The fake nvidia-smi answers in the real tool's formats and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gpuhop_sim.gpustate import (
    NVIDIA_SMI,
    FakeProcess,
    default_gpus,
    install_nvidia_smi,
    read_state,
    with_load,
    write_state,
)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / "gpus.json"
    gpus = list(default_gpus("sg-1", 2, "H100"))
    gpus[1] = with_load(gpus[1], utilization=87, memory_used_mib=40000)
    write_state(path, gpus)
    return path


def smi(state: Path | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin"}
    if state is not None:
        env["GPUHOP_FAKE_GPUS"] = str(state)
    return subprocess.run(
        [sys.executable, str(NVIDIA_SMI), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_csv_with_header_and_units(state: Path) -> None:
    fields = "index,name,memory.total,memory.used,memory.free,utilization.gpu"
    r = smi(state, f"--query-gpu={fields}", "--format=csv")
    assert r.returncode == 0, r.stdout
    assert r.stdout == (
        "index, name, memory.total [MiB], memory.used [MiB], memory.free [MiB],"
        " utilization.gpu [%]\n"
        "0, NVIDIA H100 80GB HBM3, 81559 MiB, 0 MiB, 81559 MiB, 0 %\n"
        "1, NVIDIA H100 80GB HBM3, 81559 MiB, 40000 MiB, 41559 MiB, 87 %\n"
    )


def test_csv_noheader_nounits(state: Path) -> None:
    r = smi(state, "--query-gpu=index,memory.used,utilization.gpu", "--format=csv,noheader,nounits")
    assert (r.returncode, r.stdout) == (0, "0, 0, 0\n1, 40000, 87\n")


def test_nounits_keeps_units_in_the_header(state: Path) -> None:
    r = smi(state, "--query-gpu", "memory.total", "--format", "csv,nounits")
    assert r.stdout == "memory.total [MiB]\n81559\n81559\n"


def test_identity_fields(state: Path) -> None:
    r = smi(state, "--query-gpu=uuid,pci.bus_id,driver_version,count", "--format=csv,noheader")
    rows = [line.split(", ") for line in r.stdout.splitlines()]
    assert len(rows) == 2
    assert all(row[0].startswith("GPU-") and len(row[0]) == 40 for row in rows)
    assert [row[1] for row in rows] == ["00000000:18:00.0", "00000000:28:00.0"]
    assert {row[2] for row in rows} == {"550.54.15"}
    assert {row[3] for row in rows} == {"2"}


def test_uuids_are_stable_per_host_and_differ_between_hosts() -> None:
    assert default_gpus("sg-1", 2, "H100") == default_gpus("sg-1", 2, "H100")
    assert default_gpus("sg-1", 1, "H100")[0].uuid != default_gpus("my-1", 1, "H100")[0].uuid


def test_unknown_field_is_refused_like_the_real_tool(state: Path) -> None:
    r = smi(state, "--query-gpu=index,cuda_version", "--format=csv")
    assert r.returncode == 2
    assert r.stdout == 'Field "cuda_version" is not a valid field to query.\n\n'


def test_query_needs_csv_format(state: Path) -> None:
    assert smi(state, "--query-gpu=index").returncode == 2
    assert smi(state, "--query-gpu=index", "--format=xml").returncode == 2
    assert smi(state, "--bogus").returncode == 2


def test_list_gpus(state: Path) -> None:
    uuids = [g.uuid for g in read_state(state)]
    r = smi(state, "-L")
    assert r.stdout.splitlines() == [
        f"GPU 0: NVIDIA H100 80GB HBM3 (UUID: {uuids[0]})",
        f"GPU 1: NVIDIA H100 80GB HBM3 (UUID: {uuids[1]})",
    ]


def test_select_by_index(state: Path) -> None:
    r = smi(state, "-i", "1", "--query-gpu=index", "--format=csv,noheader")
    assert r.stdout == "1\n"
    assert smi(state, "--id=7", "-L").returncode == 6


def test_compute_apps_empty(state: Path) -> None:
    r = smi(state, "--query-compute-apps=pid,used_memory", "--format=csv,noheader")
    assert (r.returncode, r.stdout) == (0, "")
    r = smi(state, "--query-compute-apps=pid,used_memory", "--format=csv")
    assert r.stdout == "pid, used_gpu_memory [MiB]\n"


def test_compute_apps_listed(tmp_path: Path) -> None:
    path = tmp_path / "gpus.json"
    gpus = default_gpus("ae-1", 2, "A100")
    write_state(
        path,
        gpus,
        [FakeProcess(pid=4242, process_name="python", gpu_index=1, used_memory_mib=1024)],
    )
    r = smi(
        path, "--query-compute-apps=pid,process_name,gpu_uuid,used_memory", "--format=csv,noheader"
    )
    assert r.stdout == f"4242, python, {gpus[1].uuid}, 1024 MiB\n"


@pytest.mark.parametrize("content", [None, "", "not json", '{"gpus": []}', "[]"])
def test_no_devices(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "gpus.json"
    if content is not None:
        path.write_text(content)
    r = smi(path, "-L")
    assert (r.returncode, r.stdout) == (6, "No devices were found\n")


def test_no_state_variable() -> None:
    assert smi(None, "--query-gpu=index", "--format=csv").returncode == 6


def test_bare_list_state(tmp_path: Path) -> None:
    path = tmp_path / "gpus.json"
    rows = [
        {
            "index": 0,
            "uuid": "GPU-x",
            "name": "NVIDIA L4",
            "memory_total_mib": 23034,
            "memory_used_mib": 5,
            "utilization_gpu": 1,
        }
    ]
    path.write_text(json.dumps(rows))
    r = smi(path, "--query-gpu=name,memory.free", "--format=csv,noheader,nounits")
    assert r.stdout == "NVIDIA L4, 23029\n"


def test_plain_table(state: Path) -> None:
    r = smi(state)
    assert r.returncode == 0
    assert "NVIDIA H100 80GB HBM3" in r.stdout
    assert "40000MiB / 81559MiB" in r.stdout
    assert "No running processes found" in r.stdout
    widths = {len(line) for line in r.stdout.splitlines()}
    assert len(widths) == 1, "every table line has the same width"


def test_installed_copy_runs_directly(tmp_path: Path, state: Path) -> None:
    tool = install_nvidia_smi(tmp_path / "bin")
    assert tool.read_text().startswith(f"#!{sys.executable} -IS\n")
    r = subprocess.run(
        [str(tool), "--query-gpu=index", "--format=csv,noheader"],
        env={"GPUHOP_FAKE_GPUS": str(state)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (r.returncode, r.stdout) == (0, "0\n1\n")


def test_state_round_trip(state: Path) -> None:
    gpus = read_state(state)
    assert [g.utilization_gpu for g in gpus] == [0, 87]
    write_state(state, [with_load(g, utilization=50, memory_used_mib=1) for g in gpus])
    assert {g.utilization_gpu for g in read_state(state)} == {50}
    assert not list(state.parent.glob(".*.tmp")), "the atomic write leaves no temp file"
