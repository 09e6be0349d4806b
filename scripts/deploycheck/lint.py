"""Shell scripts (shellcheck) and plain YAML (yamllint) under deploy/."""

from __future__ import annotations

from pathlib import Path

from deploycheck.common import DEPLOY, REPO, Failed, Run, run_tool


def _shell_of(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            first = fh.readline(200).decode("utf-8", "replace")
    except OSError:
        return ""
    if not first.startswith("#!"):
        return ""
    words = first[2:].split()
    name = Path(words[0]).name if words else ""
    if name == "env" and len(words) > 1:
        name = words[1]
    return name


def check_shell(run: Run) -> None:
    scripts = sorted(p for p in DEPLOY.rglob("*") if p.is_file() and _shell_of(p) in ("sh", "bash"))

    def shellcheck() -> str:
        if not scripts:
            raise Failed("no shell scripts found under deploy/")
        run_tool([run.apt_tool("shellcheck"), "--severity=style", *map(str, scripts)])
        return ", ".join(str(p.relative_to(REPO)) for p in scripts)

    run.check("shell", "shellcheck", shellcheck)


def check_yaml(run: Run) -> None:
    def yamllint() -> None:
        run_tool([run.tool("yamllint"), "--strict", "-c", "yamllint.yaml", "."], cwd=DEPLOY)

    run.check("yaml", "yamllint deploy/ (deploy/yamllint.yaml)", yamllint)
