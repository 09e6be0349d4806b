"""Container options for a job, GPU DeviceRequests included (no engine needed)."""

from __future__ import annotations

import docker.types

from client.envs.run import CONTAINER_WORKDIR, LABEL_JOB, container_options, gpu_device_requests


def test_leased_gpus_become_one_device_request_by_id() -> None:
    (request,) = gpu_device_requests(["0", "3"])
    assert isinstance(request, docker.types.DeviceRequest)
    assert request["DeviceIDs"] == ["0", "3"]
    assert request["Capabilities"] == [["gpu"]]
    assert request["Count"] == 0  # ids, not "all"
    assert request["Driver"] == ""


def test_no_lease_means_no_device_request() -> None:
    assert gpu_device_requests([]) == []
    assert container_options("img", ["true"], None, {}, [])["device_requests"] == []


def test_workdir_env_and_labels() -> None:
    options = container_options(
        "gpuhop-env/base:latest",
        ["python", "-c", "import sys; sys.exit(7)"],
        "/srv/jobs/42",
        {"SEED": "1"},
        ["GPU-5d9c"],
        job="42",
    )
    assert options["volumes"] == {"/srv/jobs/42": {"bind": CONTAINER_WORKDIR, "mode": "rw"}}
    assert options["working_dir"] == CONTAINER_WORKDIR
    assert options["environment"] == {"SEED": "1"}
    assert options["command"] == ["python", "-c", "import sys; sys.exit(7)"]
    assert options["labels"] == {LABEL_JOB: "42"}
    assert options["device_requests"][0]["DeviceIDs"] == ["GPU-5d9c"]
    assert options["tty"] is False  # stdout and stderr stay separate
