"""The Helm chart: lint and render with Helm's engine, Kubernetes schemas, invariants, refusals."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deploycheck.common import (
    CHART,
    GATEWAY_PATH_KEYS,
    K8S_VERSIONS,
    PLACEHOLDER_URL,
    Failed,
    Missing,
    Run,
    run_tool,
    under,
)

HELM_HELPER = """
import json, sys, yaml, helm_python as helm
req = json.load(sys.stdin)
values = req.get("values")
if req.get("values_file"):
    with open(req["values_file"]) as fh:
        values = yaml.safe_load(fh) or {}
out = {"values": values, "lint": helm.lint(req["chart"], values, strict=True)}
try:
    with helm.Chart.load(req["chart"]) as chart:
        rendered = chart.render(values, name="gpuhop", namespace="gpuhop", is_install=True)
except helm.HelmError as exc:
    out["error"] = str(exc)
else:
    manifests = {k: v for k, v in sorted(rendered.items()) if v.strip() and not k.endswith(".txt")}
    out["manifests"] = manifests
    out["docs"] = [d for text in manifests.values() for d in yaml.safe_load_all(text) if d]
print(json.dumps(out))
"""

# Values the chart must refuse, and a word the refusal must contain.
HELM_REFUSALS: tuple[tuple[str, dict[str, Any], str], ...] = (
    ("no keys", {}, "keys.existingSecret"),
    ("no storage", {"keys": {"existingSecret": "k"}}, "storage.existingSecret"),
    (
        "a volume and S3 for recordings",
        {
            "keys": {"existingSecret": "k"},
            "storage": {"existingSecret": "s"},
            "recordings": {"s3": {"enabled": True}},
        },
        "not both",
    ),
    (
        "several replicas without a shared recordings store",
        {
            "keys": {"existingSecret": "k"},
            "storage": {"existingSecret": "s"},
            "recordings": {"persistence": {"enabled": False}},
        },
        "shared store",
    ),
    (
        "a chart-owned [gateway] key in config.gateway",
        {
            "keys": {"existingSecret": "k"},
            "storage": {"existingSecret": "s"},
            "config": {"gateway": {"ssh_port": 22}},
        },
        "set by the chart",
    ),
    ("a mistyped value", {"replicaCount": "two"}, "replicaCount"),
    ("an unknown value", {"replicas": 2}, "replicas"),
)


# Liveness and start-up ask whether the process answers; readiness whether it
# should get traffic (storage reachable, keys loaded, not draining).
PROBE_PATHS = {
    "startupProbe": "/v1/health",
    "livenessProbe": "/v1/health",
    "readinessProbe": "/v1/ready",
}


def _kinds(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    kinds: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        kinds.setdefault(doc["kind"], []).append(doc)
    return kinds


def _chart_invariants(values: dict[str, Any], docs: list[dict[str, Any]]) -> None:
    kinds = _kinds(docs)
    problems: list[str] = []
    for kind in ("Deployment", "ConfigMap", "Service"):
        if kind not in kinds:
            problems.append(f"no {kind}")
    if problems:
        raise Failed("; ".join(problems))
    deployment = kinds["Deployment"][0]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    want_replicas = values.get("replicaCount", 2)
    if deployment["spec"]["replicas"] != want_replicas:
        problems.append(f"replicas {deployment['spec']['replicas']} != {want_replicas}")
    if pod.get("securityContext", {}).get("runAsNonRoot") is not True:
        problems.append("pod may run as root")
    sc = container.get("securityContext", {})
    if (
        sc.get("readOnlyRootFilesystem") is not True
        or sc.get("allowPrivilegeEscalation") is not False
    ):
        problems.append("container root filesystem writable or privilege escalation allowed")
    if "ALL" not in sc.get("capabilities", {}).get("drop", []):
        problems.append("container keeps capabilities")
    for probe, path in PROBE_PATHS.items():
        if container.get(probe, {}).get("httpGet", {}).get("path") != path:
            problems.append(f"{probe} is not GET {path}")
    toml_text = kinds["ConfigMap"][0]["data"]["gateway.toml"]
    drain = float(tomllib.loads(toml_text)["gateway"].get("drain_timeout_s", 30.0))
    if pod.get("terminationGracePeriodSeconds", 30) <= drain:
        problems.append(f"terminationGracePeriodSeconds does not exceed drain_timeout_s {drain:g}")
    services = {s["spec"].get("type", "ClusterIP"): s for s in kinds["Service"]}
    ssh = services.get("LoadBalancer") or services.get("NodePort")
    if ssh is None or ssh["spec"]["ports"][0]["targetPort"] != "ssh":
        problems.append("no LoadBalancer/NodePort Service for SSH")
    api = services.get("ClusterIP")
    if api is None or api["spec"]["ports"][0]["targetPort"] != "api":
        problems.append("no ClusterIP Service for the API")
    if (
        values.get("podDisruptionBudget", {}).get("enabled", True)
        and "PodDisruptionBudget" not in kinds
    ):
        problems.append("no PodDisruptionBudget")
    for claim in kinds.get("PersistentVolumeClaim", []):
        if "ReadWriteMany" not in claim["spec"]["accessModes"] and want_replicas > 1:
            problems.append("recordings claim is not ReadWriteMany")
    problems += _migration_problems(kinds, container)
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    if mounts.get("keys", {}).get("readOnly") is not True:
        problems.append("keys are not mounted read-only")
    problems += _path_problems(tomllib.loads(toml_text)["gateway"], pod, mounts)
    if problems:
        raise Failed("; ".join(problems))


MIGRATION_HOOKS = {"pre-install", "pre-upgrade"}


def _migration_problems(
    kinds: dict[str, list[dict[str, Any]]], gateway: dict[str, Any]
) -> list[str]:
    """A ``db upgrade`` Job runs as a pre-install and pre-upgrade hook, with the gateway's
    image and storage URL, and is not selected by the gateway's Services."""
    jobs = [
        j
        for j in kinds.get("Job", [])
        if j["spec"]["template"]["spec"]["containers"][0].get("args", [])[:2] == ["db", "upgrade"]
    ]
    if len(jobs) != 1:
        return [f"{len(jobs)} db upgrade Jobs, expected one"]
    job = jobs[0]
    hooks = set(job["metadata"].get("annotations", {}).get("helm.sh/hook", "").split(","))
    problems = []
    if not hooks >= MIGRATION_HOOKS:
        problems.append(f"the db upgrade Job is not a {','.join(sorted(MIGRATION_HOOKS))} hook")
    pod = job["spec"]["template"]
    (migrate,) = pod["spec"]["containers"]
    if migrate["image"] != gateway["image"]:
        problems.append("the db upgrade Job runs another image than the gateway")
    if "GPUHOP_GATEWAY__STORAGE_URL" not in {e["name"] for e in migrate.get("env", [])}:
        problems.append("the db upgrade Job sets no GPUHOP_GATEWAY__STORAGE_URL")
    if pod["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "gateway":
        problems.append("the db upgrade pod carries the gateway's selector labels")
    return problems


def _path_problems(
    gw: dict[str, Any], pod: dict[str, Any], mounts: dict[str, dict[str, Any]]
) -> list[str]:
    """Keys come from the keys Secret (mounted whole, so staged rotation files reach every
    pod); the other paths lie on a writable volume."""
    problems = []
    volumes = {v["name"]: v for v in pod["volumes"]}
    if "items" in volumes.get("keys", {}).get("secret", {}):
        problems.append("the keys Secret is mounted by items: rotation files would not reach pods")
    keys_dir = [mounts["keys"]["mountPath"]] if "keys" in mounts else []
    writable = [m["mountPath"] for m in mounts.values() if not m.get("readOnly")]
    for key in GATEWAY_PATH_KEYS:
        path = gw.get(key)
        if path is None:
            problems.append(f"gateway.toml does not set {key}")
        elif key.endswith("_key") and not under(str(path), keys_dir):
            problems.append(f"gateway.toml {key} = {path} is not in the keys Secret")
        elif not key.endswith("_key") and not under(str(path), writable):
            problems.append(f"gateway.toml {key} = {path} is not on a writable volume")
    return problems


def check(run: Run) -> None:
    values_files = sorted((CHART / "ci").glob("*-values.yaml"))

    def render_case(values_file: Path) -> None:
        name = values_file.name
        state: dict[str, Any] = {}

        def lint_render() -> str:
            try:
                out = run.tools_python(
                    HELM_HELPER, {"chart": str(CHART), "values_file": str(values_file)}
                )
            except Missing as exc:
                state["missing"] = str(exc)
                raise
            if "error" in out:
                raise Failed(out["error"])
            state.update(out)  # the checks after this one still run when lint complains
            problems = [m for m in out["lint"]["messages"] if m["severity"] >= 2]
            if problems or out["lint"]["errors"]:
                raise Failed(json.dumps(problems or out["lint"]["errors"]))
            return f"{len(out['docs'])} objects: " + ", ".join(
                sorted({d["kind"] for d in out["docs"]})
            )

        def rendered() -> dict[str, Any]:
            if "missing" in state:
                raise Missing(state["missing"])
            if "docs" not in state:
                raise Failed("the chart did not render")
            return state

        def schemas() -> None:
            stream = run.work / f"rendered-{name}"
            stream.write_text("---\n".join(rendered()["manifests"].values()))
            for version in K8S_VERSIONS:
                run_tool(
                    [
                        run.tool("kubernetes-validate"),
                        "--quiet",
                        "--strict",
                        "-k",
                        version,
                        str(stream),
                    ]
                )

        def gateway_config() -> None:
            docs = rendered()["docs"]
            config_map = _kinds(docs)["ConfigMap"][0]
            path = run.work / f"gateway-{name}.toml"
            path.write_text(config_map["data"]["gateway.toml"])
            (container,) = _kinds(docs)["Deployment"][0]["spec"]["template"]["spec"]["containers"]
            env = {e["name"]: e.get("value", PLACEHOLDER_URL) for e in container.get("env", [])}
            if "GPUHOP_GATEWAY__STORAGE_URL" not in env:
                raise Failed("the Deployment sets no GPUHOP_GATEWAY__STORAGE_URL")
            run.check_config(path, env)

        run.check("helm", f"{name}: helm lint --strict + render", lint_render)
        run.check(
            "helm", f"{name}: kubernetes-validate --strict {', '.join(K8S_VERSIONS)}", schemas
        )
        run.check(
            "helm",
            f"{name}: probes, security, services, drain, migration hook",
            lambda: _chart_invariants(rendered()["values"], rendered()["docs"]),
        )
        run.check("helm", f"{name}: rendered gateway.toml: check-config", gateway_config)

    def refused(values: dict[str, Any], word: str) -> Callable[[], None]:
        def check() -> None:
            out = run.tools_python(HELM_HELPER, {"chart": str(CHART), "values": values})
            said = out.get("error", "") + " ".join(out["lint"]["errors"])
            if not said:
                raise Failed("rendered without complaint")
            if word not in said:
                raise Failed(f"refused, but without naming {word!r}: {said}")

        return check

    if not values_files:
        run.check("helm", "ci/*-values.yaml", lambda: (_ for _ in ()).throw(Failed("none found")))
    for values_file in values_files:
        render_case(values_file)
    for what, values, word in HELM_REFUSALS:
        run.check("helm", f"refuses {what}", refused(values, word))
