"""Client services: placement takes the gateway's ranking as is (filtered by region)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import TypeAdapter

from client.api.clients import Client
from client.api.models import Excluded, Placement, Ranked
from client.errors import HostNotFound
from client.services.placement import best_in_region, place
from client.services.ssh import session_variables, ssh_argv
from client.settings import Secret


def ranked(rank: int, name: str, region: str) -> Ranked:
    return Ranked(rank, name, region, 1.0, 1.0, "USD", 2.0, 10.0, 5.0, 4, "H100")


RANKING = Placement(
    ranked=(ranked(1, "my-2", "my"), ranked(2, "sg-1", "sg"), ranked(3, "my-1", "my")),
    excluded=(Excluded("sg-2", "sg", ("host is down",)),),
)


@pytest.mark.parametrize(
    ("region", "best"), [("", "my-2"), ("any", "my-2"), ("sg", "sg-1"), ("my", "my-2")]
)
def test_the_first_ranked_host_in_the_region_wins(region: str, best: str) -> None:
    assert best_in_region(RANKING, region) == best


def test_no_ranked_host_in_the_region_says_why() -> None:
    narrow = Placement(ranked=RANKING.ranked[:1], excluded=RANKING.excluded)
    with pytest.raises(HostNotFound, match=r"in region sg \(sg-2: host is down\)"):
        best_in_region(narrow, "sg")
    with pytest.raises(HostNotFound, match="no such hosts"):
        best_in_region(narrow, "zz")


def test_an_unknown_region_names_the_known_ones() -> None:
    with pytest.raises(HostNotFound, match=r"^unknown region xx \(known: my, sg\)"):
        best_in_region(RANKING, "xx")
    nothing = Placement(ranked=(), excluded=RANKING.excluded)
    with pytest.raises(HostNotFound, match=r"in region sg \(sg-2: host is down\)"):
        best_in_region(nothing, "sg")  # a known region with nothing free says why


def _host(name: str, region: str, free: int) -> dict[str, Any]:
    return {
        "name": name, "region": region, "country": region.upper(), "status": "up",
        "gpu_model": "H100", "gpus_total": 8, "gpus_free": free, "price_per_gpu_hour": 2.0,
        "egress_per_gb": 0.1, "rtt_ms": 5.0, "allowed": True,
    }  # fmt: skip


def _gateway(seen: list[httpx.Request]) -> Callable[[httpx.Request], httpx.Response]:
    ranking = TypeAdapter(Placement).dump_python(RANKING, mode="json")
    hosts = [_host("sg-1", "sg", 8), _host("my-1", "my", 0), _host("my-2", "my", 2)]

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = ranking if request.url.path == "/v1/placement" else hosts
        return httpx.Response(200, content=json.dumps(body).encode())

    return handler


def test_place_asks_the_gateway_to_rank_and_checks_a_named_host() -> None:
    seen: list[httpx.Request] = []
    transport = httpx.MockTransport(_gateway(seen))
    with Client("http://gw.test", Secret("t"), transport=transport) as api:
        assert place(api, "", "my", 2, "sg-data").name == "my-2"
        assert seen[-1].url.params["gpus"] == "2" and seen[-1].url.params["data"] == "sg-data"
        assert place(api, "sg-1", "", 4).name == "sg-1"
        with pytest.raises(HostNotFound, match="0 free GPUs; 1 asked"):
            place(api, "my-1", "", 1)
        with pytest.raises(HostNotFound, match="unknown host"):
            place(api, "zz-1", "", 0)


def test_ssh_argv() -> None:
    assert ssh_argv("ssh", Path("/c"), "sg-1", ("nvidia-smi",), "root") == [
        "ssh", "-F", "/c", "-l", "root", "sg-1", "nvidia-smi",
    ]  # fmt: skip


def test_ssh_argv_sends_gpus_and_env_through_setenv() -> None:
    variables = session_variables(2, [("GPUHOP_GPUS", "9"), ("LANG", "C"), ("MSG", 'a "b"')])
    assert variables == {"GPUHOP_GPUS": "2", "LANG": "C", "MSG": 'a "b"'}  # --gpus wins
    assert ssh_argv("ssh", Path("/c"), "sg-1", (), "", variables) == [
        "ssh", "-F", "/c", '-oSetEnv=GPUHOP_GPUS=2 LANG=C "MSG=a \\"b\\""', "sg-1",
    ]  # fmt: skip
    assert session_variables(0, []) == {}
    assert "-oSetEnv" not in " ".join(ssh_argv("ssh", Path("/c"), "sg-1", (), "", {}))
