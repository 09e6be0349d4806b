"""The compose file: Compose v2's own validation, then what the resolved model promises."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from deploycheck.common import (
    DEPLOY,
    PLACEHOLDER_URL,
    REPO,
    Failed,
    Missing,
    Run,
    drain_timeout,
    entrypoint,
    gateway_paths,
    run_tool,
    seconds,
    under,
)


def check(run: Run) -> None:
    compose_file = DEPLOY / "compose" / "docker-compose.yml"
    config = DEPLOY / "compose" / "gateway.toml"
    secrets_dir = run.work / "compose-secrets"
    secrets_dir.mkdir(exist_ok=True)
    state: dict[str, Any] = {}

    def compose(*args: str) -> str:
        binary = run.tools_python(
            "import compose, json, os; print(json.dumps(os.path.dirname(compose.__file__)))", {}
        )
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("GPUHOP_", "COMPOSE_"))}
        env = {**clean, "GPUHOP_SECRETS_DIR": str(secrets_dir)}
        # The standalone Compose v2 binary itself: its Python wrapper drops the exit status.
        return run_tool(
            [str(Path(binary) / "docker-compose"), "-f", str(compose_file), *args], env=env
        )

    def validate() -> str:
        try:
            run.tools()
        except Missing as exc:
            state["missing"] = str(exc)
            raise
        compose("config", "--quiet")
        state["model"] = json.loads(compose("config", "--format", "json"))
        return compose("version", "--short").strip()

    def model() -> dict[str, Any]:
        if "missing" in state:
            raise Missing(state["missing"])
        if "model" not in state:
            raise Failed("the compose file did not validate")
        found: dict[str, Any] = state["model"]
        return found

    def hardening() -> None:
        m = model()
        gw, pg = m["services"]["gateway"], m["services"]["postgres"]
        problems = []
        if str(gw.get("user", "root")).split(":")[0] in ("", "0", "root"):
            problems.append("gateway runs as root")
        if gw.get("read_only") is not True:
            problems.append("gateway root filesystem is writable")
        if "ALL" not in gw.get("cap_drop", []):
            problems.append("gateway keeps capabilities (cap_drop: [ALL])")
        if "no-new-privileges:true" not in gw.get("security_opt", []):
            problems.append("gateway lacks no-new-privileges")
        if gw.get("depends_on", {}).get("postgres", {}).get("condition") != "service_healthy":
            problems.append("gateway does not wait for a healthy postgres")
        if not str(pg.get("image", "")).startswith("postgres:16"):
            problems.append(f"postgres image is {pg.get('image')}, expected postgres:16")
        for name, svc in (("gateway", gw), ("postgres", pg)):
            if not svc.get("healthcheck", {}).get("test"):
                problems.append(f"{name} has no healthcheck")
        if "/v1/ready" not in " ".join(gw.get("healthcheck", {}).get("test", [])):
            problems.append("gateway healthcheck does not ask GET /v1/ready")
        if str(gw.get("environment", {}).get("GPUHOP_DB_UPGRADE")) != "1":
            problems.append("gateway does not run db upgrade at start (GPUHOP_DB_UPGRADE=1)")
        build = gw.get("build", {})
        if (
            Path(build.get("context", "")) != REPO
            or not (REPO / build.get("dockerfile", "")).is_file()
        ):
            problems.append(f"gateway build does not point at the repository's Dockerfile: {build}")
        if problems:
            raise Failed("; ".join(problems))

    def timing() -> str:
        gw = model()["services"]["gateway"]
        stop, drain = seconds(gw.get("stop_grace_period", "10s")), drain_timeout(config)
        if stop <= drain:
            raise Failed(f"stop_grace_period {stop:g}s must exceed drain_timeout_s {drain:g}s")
        return f"stop_grace_period {stop:g}s > drain_timeout_s {drain:g}s"

    def mounts() -> str:
        """Every path gateway.toml names is a secret or volume the gateway service mounts."""
        gw = model()["services"]["gateway"]
        secrets = {
            s["source"]: s.get("target") or f"/run/secrets/{s['source']}" for s in gw["secrets"]
        }
        volumes = [v["target"] for v in gw.get("volumes", [])]
        configs = [c["target"] for c in gw.get("configs", [])]
        if "/etc/gpuhop/gateway.toml" not in configs:
            raise Failed("gateway.toml is not mounted at /etc/gpuhop/gateway.toml")
        for key, path in gateway_paths(config).items():
            if path not in secrets.values() and not under(path, volumes):
                raise Failed(f"gateway.toml {key} = {path} is neither a secret nor on a volume")
        return f"{len(secrets)} secrets, {len(volumes)} volume(s)"

    def gateway_config() -> None:
        """check-config as the container would run it: compose's environment, via the entrypoint."""
        m = model()
        gw = m["services"]["gateway"]
        env = {k: str(v) for k, v in gw.get("environment", {}).items() if v is not None}
        for secret in gw["secrets"]:
            target = secret.get("target") or f"/run/secrets/{secret['source']}"
            local = secrets_dir / secret["source"]
            local.write_text(PLACEHOLDER_URL + "\n")
            env = {k: (str(local) if v == target else v) for k, v in env.items()}
        if not any(k.startswith("GPUHOP_GATEWAY__STORAGE_URL") for k in env):
            raise Failed(
                "the gateway service sets no storage URL (GPUHOP_GATEWAY__STORAGE_URL[_FILE])"
            )
        out = entrypoint(run, ["check-config", "--config", str(config)], env, run.gateway_bin())
        if ": ok (" not in out:
            raise Failed(out)

    run.check("compose", "docker-compose config (Compose v2)", validate)
    run.check("compose", "gateway and postgres hardening", hardening)
    run.check("compose", "stop grace vs drain", timing)
    run.check("compose", "gateway.toml paths are mounted", mounts)
    run.check("compose", "gateway.toml: check-config with compose's environment", gateway_config)
