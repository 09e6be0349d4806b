"""The systemd unit: verify, security exposure, sysusers, timing and sandbox paths."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

from deploycheck.common import (
    DEPLOY,
    SYSTEMD_EXPOSURE_MAX,
    UNIT,
    Failed,
    Run,
    drain_timeout,
    gateway_paths,
    run_tool,
    seconds,
    under,
)


def _service_section(unit: Path) -> dict[str, list[str]]:
    """The [Service] settings of a unit file, each key with all its values in order."""
    values: dict[str, list[str]] = {}
    section = ""
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service" and "=" in line:
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def check(run: Run) -> None:
    unit = DEPLOY / "systemd" / UNIT
    dropin = DEPLOY / "systemd" / "port-22.conf"
    config = DEPLOY / "systemd" / "gateway.toml"
    service = _service_section(unit)
    root = run.work / "systemd-root"

    def make_root() -> None:
        """A file system root holding the system's units, ours, and stand-ins for ExecStart."""
        if root.exists():
            return
        system = next(
            p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir()
        )
        shutil.copytree(system, root / "usr/lib/systemd/system", symlinks=True)
        (root / "etc/systemd/system").mkdir(parents=True)
        shutil.copy(unit, root / "etc/systemd/system" / UNIT)
        for key in ("ExecStartPre", "ExecStart", "ExecReload"):
            for command in service.get(key, []):
                exe = root / command.lstrip("-@+!:").split()[0].lstrip("/")
                exe.parent.mkdir(parents=True, exist_ok=True)
                exe.write_text("#!/bin/sh\nexit 0\n")
                exe.chmod(0o755)

    def with_dropin(enabled: bool) -> None:
        d = root / "etc/systemd/system" / f"{UNIT}.d"
        if enabled:
            d.mkdir(exist_ok=True)
            shutil.copy(dropin, d / dropin.name)
        else:
            shutil.rmtree(d, ignore_errors=True)

    def verify(enabled: bool) -> Callable[[], None]:
        def check() -> None:
            analyze = run.apt_tool("systemd-analyze")
            make_root()
            with_dropin(enabled)
            out = run_tool([analyze, "verify", f"--root={root}", "--man=no", UNIT])
            if out:  # Unknown keys and bad values are only warnings to systemd.
                raise Failed(out)

        return check

    def security(enabled: bool) -> Callable[[], str]:
        def check() -> str:
            analyze = run.apt_tool("systemd-analyze")
            make_root()
            with_dropin(enabled)
            cmd = [analyze, "security", "--offline=yes", f"--root={root}", "--no-pager"]
            cmd += [f"--threshold={SYSTEMD_EXPOSURE_MAX}", UNIT]
            out = run_tool(cmd)
            found = re.search(r"Overall exposure level for \S+: ([\d.]+)", out)
            if not found:
                raise Failed(f"no exposure level in: {out[-500:]}")
            return f"exposure {found[1]} (at most {SYSTEMD_EXPOSURE_MAX / 10})"

        return check

    def sysusers() -> None:
        tool = run.apt_tool("systemd-sysusers")
        target = run.work / "sysusers-root"
        target.mkdir(exist_ok=True)
        out = run_tool(
            [tool, f"--root={target}", "--dry-run", str(DEPLOY / "systemd/gpuhop.sysusers.conf")]
        )
        user = service.get("User", ["?"])[-1]
        if f"Creating user '{user}'" not in out:
            raise Failed(f"does not create User={user}: {out}")

    def timing() -> str:
        stop = seconds(service["TimeoutStopSec"][-1])
        drain = drain_timeout(config)
        if stop <= drain:
            raise Failed(f"TimeoutStopSec {stop:g}s must exceed drain_timeout_s {drain:g}s")
        if service.get("KillSignal", ["SIGTERM"])[-1] != "SIGTERM":
            raise Failed("KillSignal must be SIGTERM (the gateway drains on it)")
        return f"TimeoutStopSec {stop:g}s > drain_timeout_s {drain:g}s"

    def sandbox() -> str:
        writable = [f"/var/lib/{d}" for v in service.get("StateDirectory", []) for d in v.split()]
        writable += [f"/var/log/{d}" for v in service.get("LogsDirectory", []) for d in v.split()]
        writable += [p.lstrip("-") for v in service.get("ReadWritePaths", []) for p in v.split()]
        for key, path in gateway_paths(config).items():
            if not under(path, writable):
                raise Failed(
                    f"gateway.toml {key} = {path} is not writable under ProtectSystem=strict"
                )
        return "state paths within " + ", ".join(writable)

    run.check("systemd", f"systemd-analyze verify {UNIT}", verify(False))
    run.check("systemd", f"systemd-analyze verify {UNIT} + port-22.conf", verify(True))
    run.check("systemd", f"systemd-analyze security --offline {UNIT}", security(False))
    run.check(
        "systemd", f"systemd-analyze security --offline {UNIT} + port-22.conf", security(True)
    )
    run.check("systemd", "systemd-sysusers --dry-run gpuhop.sysusers.conf", sysusers)
    run.check("systemd", "stop timeout vs drain", timing)
    run.check("systemd", "gateway.toml paths vs sandbox", sandbox)
    run.check("systemd", "gateway.toml: check-config", lambda: run.check_config(config))
