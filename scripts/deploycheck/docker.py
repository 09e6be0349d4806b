"""The gateway image: Dockerfile lint, build context, entrypoint, default config."""

from __future__ import annotations

from deploycheck.common import DEPLOY, PLACEHOLDER_URL, REPO, Failed, Run, entrypoint, run_tool


def check(run: Run) -> None:
    dockerfile = DEPLOY / "docker" / "Dockerfile"

    def hadolint() -> None:
        run_tool([run.tool("hadolint"), "--no-color", str(dockerfile)])

    def copy_sources() -> str:
        ignore = (DEPLOY / "docker" / "Dockerfile.dockerignore").read_text().split()
        allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
        sources: list[str] = []
        for line in dockerfile.read_text().splitlines():
            words = line.split()
            if not words or words[0] != "COPY" or any(w.startswith("--from") for w in words):
                continue
            sources += [w.rstrip("/") for w in words[1:-1] if not w.startswith("--")]
        for src in sources:
            if not (REPO / src).exists():
                raise Failed(f"COPY source {src} does not exist")
            if src not in allowed:
                raise Failed(f"COPY source {src} is excluded by Dockerfile.dockerignore")
        return f"{len(sources)} sources present and not ignored"

    def secret_files() -> None:
        fake = run.work / "fake-gateway-bin"
        fake.mkdir(exist_ok=True)
        probe = fake / "gpuhop-gateway"
        probe.write_text(
            '#!/bin/sh\nprintf "url=%s\\nfile=%s\\nargs=%s\\n" '
            '"$GPUHOP_GATEWAY__STORAGE_URL" "${GPUHOP_GATEWAY__STORAGE_URL_FILE-unset}" "$*"\n'
        )
        probe.chmod(0o755)
        secret = run.work / "storage_url"
        secret.write_text(PLACEHOLDER_URL + "\n")
        env = {"GPUHOP_GATEWAY__STORAGE_URL_FILE": str(secret)}
        out = entrypoint(run, ["serve", "--config", "x"], env, fake)
        want = f"url={PLACEHOLDER_URL}\nfile=unset\nargs=serve --config x"
        if out != want:
            raise Failed(f"entrypoint passed on {out!r}, expected {want!r}")
        env = {"GPUHOP_GATEWAY__STORAGE_URL_FILE": str(run.work / "no-such-secret")}
        try:
            entrypoint(run, ["serve"], env, fake)
        except Failed as exc:
            if "exited 78" not in str(exc) or "cannot read" not in str(exc):
                raise Failed(f"unreadable secret: wrong failure: {exc}") from None
        else:
            raise Failed("an unreadable *_FILE secret did not stop the entrypoint")

    def db_upgrade() -> None:
        fake = run.work / "fake-gateway-args"
        fake.mkdir(exist_ok=True)
        probe = fake / "gpuhop-gateway"
        probe.write_text('#!/bin/sh\necho "$*"\n')
        probe.chmod(0o755)
        out = entrypoint(run, ["serve", "--config", "x"], {"GPUHOP_DB_UPGRADE": "1"}, fake)
        if out != "db upgrade --config x\nserve --config x":
            raise Failed(f"GPUHOP_DB_UPGRADE=1 ran {out!r}, expected db upgrade then serve")
        out = entrypoint(run, ["serve", "--config", "x"], {}, fake)
        if out != "serve --config x":
            raise Failed(f"without GPUHOP_DB_UPGRADE the entrypoint ran {out!r}")

    def image_config() -> None:
        secret = run.work / "storage_url"
        secret.write_text(PLACEHOLDER_URL + "\n")
        env = {"GPUHOP_GATEWAY__STORAGE_URL_FILE": str(secret)}
        config = DEPLOY / "docker" / "gateway.toml"
        out = entrypoint(run, ["check-config", "--config", str(config)], env, run.gateway_bin())
        if ": ok (" not in out:
            raise Failed(out)

    run.check("docker", "hadolint deploy/docker/Dockerfile", hadolint)
    run.check("docker", "COPY sources vs Dockerfile.dockerignore", copy_sources)
    run.check("docker", "entrypoint *_FILE secrets", secret_files)
    run.check("docker", "entrypoint GPUHOP_DB_UPGRADE=1: db upgrade, then serve", db_upgrade)
    run.check("docker", "image gateway.toml: check-config through the entrypoint", image_config)
