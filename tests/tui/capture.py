"""Record real gateway responses for the TUI's snapshot tests and screenshots.

Run once, commit the result (``tests/tui/fixtures/api.json``)::

    python -m tests.tui.capture

It starts ``gpuhop demo`` (a real gateway, three simulated regions behind
delay proxies) in a temporary directory, runs a recorded session and two live
ones through OpenSSH, and saves what the API answers. The snapshot tests replay
these bytes through ``httpx.MockTransport``, so their SVGs do not change from
run to run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

FIXTURE = Path(__file__).with_name("fixtures") / "api.json"
PLACEMENT = {"gpus": "4", "max_latency_ms": "100", "client_rtt_ms": "1.2"}
GOLDEN = {"gpus": 4, "max_latency_ms": 100.0, "client_rtt_ms": 1.2, "top": 3}


def capture_golden(info: dict[str, Any]) -> Any:
    """``POST /v1/placement/golden`` as the demo user (a run needs a user in the inventory)."""
    with httpx.Client(
        base_url=info["api_url"],
        headers={"Authorization": f"Bearer {info['user_token']}"},
        timeout=90,
    ) as user_api:
        return user_api.post("/v1/placement/golden", json=GOLDEN).json()


def _demo(state: Path, *args: str) -> None:
    cmd = [sys.executable, "-m", "client.cli", "demo", *args, "--state-dir", str(state)]
    subprocess.run(cmd, check=True, timeout=120, capture_output=True)


def _ssh(info: dict[str, Any], host: str, command: str, gpus: int = 0) -> list[str]:
    opts = [f"-oSetEnv=GPUHOP_GPUS={gpus}"] if gpus else []
    login = f"{info['user']}+{host}@gpuhop-gateway"
    return ["ssh", "-F", info["ssh_config"], *opts, "-tt", login, command]


def capture(state: Path) -> dict[str, Any]:
    _demo(state, "--detach")
    info = json.loads((state / "demo.json").read_text())
    live: list[subprocess.Popen[bytes]] = []
    try:
        api = httpx.Client(
            base_url=info["api_url"],
            headers={"Authorization": f"Bearer {info['admin_token']}"},
            timeout=10,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            hosts = api.get("/v1/hosts").json()
            if all(len(h["rtt_history"]) >= 8 for h in hosts):
                break
            time.sleep(0.5)
        recorded = subprocess.run(
            _ssh(info, "sg-a100-1", "nvidia-smi -L; sleep 0.4; echo; uname -s; echo done"),
            capture_output=True,
            timeout=60,
        )
        assert recorded.returncode == 0, recorded.stderr
        for host, gpus in (("my-h100-1", 2), ("sg-a100-1", 1)):
            proc = subprocess.Popen(
                _ssh(info, host, "echo started; sleep 60", gpus),
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
            )
            live.append(proc)
            assert proc.stdout is not None and proc.stdout.readline().strip() == b"started"
        time.sleep(3)
        ended = api.get("/v1/sessions", params={"live": "false"}).json()["sessions"]
        cast_id = next(s["id"] for s in ended if s["host"] == "sg-a100-1")
        out = {
            "/v1/health": api.get("/v1/health").json(),
            "/v1/me": api.get("/v1/me").json(),
            "/v1/hosts": api.get("/v1/hosts").json(),
            "/v1/sessions?live=true": api.get("/v1/sessions", params={"live": "true"}).json(),
            "/v1/sessions": api.get("/v1/sessions").json(),
            "/v1/placement": api.get("/v1/placement", params=PLACEMENT).json(),
            "/v1/placement/golden": capture_golden(info),
            "/v1/audit": api.get("/v1/audit", params={"limit": "200"}).json(),
            "/v1/recordings": api.get(f"/v1/recordings/{cast_id}").text,
        }
        api.close()
        return out
    finally:
        for proc in live:
            proc.kill()
            proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()
        _demo(state, "stop")


def main() -> int:
    only = sys.argv[1:]  # e.g. /v1/placement/golden: refresh those keys, keep the rest
    with tempfile.TemporaryDirectory(prefix="gpuhop-capture-") as tmp:
        data = capture(Path(tmp))
    if only:
        kept = json.loads(FIXTURE.read_text())
        kept.update({k: data[k] for k in only})
        data = kept
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"wrote {FIXTURE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
