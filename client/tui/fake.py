"""An in-process stand-in for the gateway API, for snapshots, screenshots and the bench.

``FakeGateway`` answers the requests the TUI makes through an
``httpx.MockTransport``: from responses recorded from a real gateway
(``tests/tui/capture.py`` writes them), or from ``synthetic_hosts`` — any number
of hosts whose latency moves on every poll, for measuring the UI under load.

    fake = FakeGateway.recorded(Path("tests/tui/fixtures/api.json"))
    app = GpuhopApp("http://127.0.0.1:8080", "gph_test", transport=fake.transport(),
                    timer=fixed_rtt_timer(1.2))
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from client.envs.build import LABEL_ENV, LABEL_FINGERPRINT, env_ref
from client.envs.remote import HostImages, RemoteImage
from client.envs.sync import PushReport
from client.errors import ClientError

GPU_MODELS = (
    ("NVIDIA A100-SXM4-80GB", 8, 2.10),
    ("NVIDIA H100 80GB HBM3", 8, 2.85),
    ("NVIDIA H200", 8, 3.60),
    ("NVIDIA L40S", 4, 1.20),
)
REGIONS = (("sg", "SG", 35.0), ("my", "MY", 45.0), ("ae", "AE", 120.0), ("jp", "JP", 70.0))


def fixed_rtt_timer(rtt_ms: float) -> Callable[[], float]:
    """A ``timer`` for ``AsyncClient`` that makes every measured round trip ``rtt_ms``."""
    ticks = itertools.count()
    return lambda: next(ticks) * rtt_ms / 1000.0


class FakeGateway:
    """Routes ``/v1/...`` requests to canned JSON; counts requests per path."""

    def __init__(self, responses: Mapping[str, Any], hosts: Callable[[], Any] | None = None):
        self.responses = dict(responses)
        self._hosts = hosts
        self.requests: dict[str, int] = {}
        self.killed: list[str] = []

    @classmethod
    def recorded(cls, path: Path) -> FakeGateway:
        return cls(json.loads(path.read_text(encoding="utf-8")))

    @classmethod
    def synthetic(cls, n_hosts: int, *, seed: int = 1) -> FakeGateway:
        """``n_hosts`` hosts over four regions; every ``/v1/hosts`` moves their latency."""
        hosts = synthetic_hosts(n_hosts, seed=seed)
        rng = random.Random(seed)
        me = {"user": "bench", "scope": "admin", "team": "", "roles": [], "accounts": []}

        def current() -> list[dict[str, Any]]:
            for h in hosts:
                base = h["_base"]
                h["rtt_ms"] = round(base + rng.uniform(-2, 2), 3)
                h["rtt_history"] = [*h["rtt_history"][1:], h["rtt_ms"]]
                h["utilization_pct"] = float(rng.randrange(0, 100))
            return [{k: v for k, v in h.items() if not k.startswith("_")} for h in hosts]

        empty_sessions: dict[str, Any] = {"sessions": [], "next_after": None}
        return cls({"/v1/me": me, "/v1/sessions": empty_sessions}, hosts=current)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.requests[path] = self.requests.get(path, 0) + 1
        if path == "/v1/health":
            return httpx.Response(200, json={"status": "ok", "version": "0.1.0"})
        if path == "/v1/hosts" and self._hosts is not None:
            return httpx.Response(200, json=self._hosts())
        if path.startswith("/v1/recordings/"):
            return self._canned("/v1/recordings", text=True)
        if path.startswith("/v1/sessions/") and path.endswith("/kill"):
            session_id = path.split("/")[3]
            self.killed.append(session_id)
            return httpx.Response(200, json={"session_id": session_id, "killed": True})
        if path == "/v1/sessions" and request.url.params.get("live") == "true":
            return self._canned("/v1/sessions?live=true")
        if path == "/v1/audit" and int(request.url.params.get("after_id", "0") or 0) > 0:
            return httpx.Response(200, json={"events": [], "next_after_id": None})
        return self._canned(path)

    def _canned(self, key: str, *, text: bool = False) -> httpx.Response:
        if key not in self.responses:
            body = {"error": {"code": "not_found", "message": f"no recorded response for {key}"}}
            return httpx.Response(404, json=body)
        value = self.responses[key]
        if text:
            return httpx.Response(200, text=str(value))
        return httpx.Response(200, json=value)


def synthetic_hosts(n: int, *, seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        region, country, base = REGIONS[i % len(REGIONS)]
        model, gpus, price = GPU_MODELS[(i // len(REGIONS)) % len(GPU_MODELS)]
        rtt = base + rng.uniform(-5, 5)
        out.append(
            {
                "name": f"{region}-{i:03d}",
                "region": region,
                "country": country,
                "address": "127.0.0.1",
                "port": 22,
                "status": "up",
                "gpu_model": model,
                "gpus_total": gpus,
                "gpus_free": rng.randrange(0, gpus + 1),
                "price_per_gpu_hour": price,
                "egress_per_gb": 0.09,
                "residency": [country],
                "labels": {},
                "rtt_ms": round(rtt, 3),
                "rtt_p95_ms": round(rtt + 3, 3),
                "rtt_history": [round(rtt + rng.uniform(-2, 2), 3) for _ in range(20)],
                "utilization_pct": 0.0,
                "allowed": True,
                "_base": rtt,
            }
        )
    return out


class ReplayEnvBackend:
    """Host images for the Environments screen from fixed data (snapshots, screenshots).

    ``images`` maps a host to ``(env name, fingerprint)`` pairs it holds as
    ``gpuhop/NAME``, or to a string: why the host could not be asked.
    ``engine`` is why the local engine is unavailable ("" stands for one that answers).
    """

    def __init__(
        self, images: Mapping[str, Sequence[tuple[str, str]] | str], engine: str = ""
    ) -> None:
        self.images = dict(images)
        self.engine = engine

    async def host_images(self, hosts: Sequence[str]) -> dict[str, HostImages]:
        out: dict[str, HostImages] = {}
        for n, host in enumerate(hosts):
            held = self.images.get(host, ())
            if isinstance(held, str):
                out[host] = HostImages(host, error=held)
                continue
            out[host] = HostImages(
                host,
                tuple(
                    RemoteImage(
                        f"sha256:{n:02d}{i:062d}",
                        (env_ref(name),),
                        (),
                        {LABEL_ENV: name, LABEL_FINGERPRINT: fp},
                    )
                    for i, (name, fp) in enumerate(held)
                ),
            )
        return out

    async def push(self, name: str, hosts: Sequence[str], progress: Any) -> PushReport:
        raise ClientError("pushing is not possible in a replay")

    def resolve_base(self, ref: str) -> str:
        raise ClientError("no local engine in a replay")

    def engine_error(self) -> str:
        return self.engine
