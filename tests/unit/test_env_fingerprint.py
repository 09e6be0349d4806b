"""Fingerprints change with every build input and with nothing else."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from client.envs.fingerprint import base_images, context_files, fingerprint
from client.envs.spec import load_env


def _ids(ref: str) -> str:
    return "sha256:" + ref.encode().hex().ljust(64, "0")[:64]


@pytest.fixture
def env(tmp_path: Path) -> Path:
    root = tmp_path / "images" / "app"
    (root / "src").mkdir(parents=True)
    (root / "Dockerfile").write_text("FROM busybox:1\nCOPY src/ /app/\n")
    (root / "src" / "main.py").write_text("print('hi')\n")
    (root / ".dockerignore").write_text("# comment\n*.log\nscratch/\n")
    (root / "requirements.lock").write_text("# empty\n")
    return root


def _fp(root: Path, resolve: object = _ids) -> str:
    return fingerprint(load_env(root.parent, root.name), resolve)  # type: ignore[arg-type]


def test_stable_for_unchanged_inputs_and_timestamps(env: Path) -> None:
    first = _fp(env)
    os.utime(env / "src" / "main.py", (1, 1))
    (env / "debug.log").write_text("ignored")
    (env / "scratch").mkdir()
    (env / "scratch" / "x").write_text("ignored too")
    assert _fp(env) == first and first.startswith("sha256:")


@pytest.mark.parametrize(
    "change",
    [
        lambda r: (r / "src" / "main.py").write_text("print('changed')\n"),
        lambda r: (r / "src" / "new.py").write_text(""),
        lambda r: (r / "src" / "main.py").chmod(0o755),
        lambda r: (r / "Dockerfile").write_text("FROM busybox:1\nCOPY src/ /srv/\n"),
        lambda r: (r / "requirements.lock").write_text("# changed\n"),
        lambda r: (r / "env.toml").write_text('[build_args]\nX = "1"\n'),
    ],
)
def test_each_input_changes_it(env: Path, change: object) -> None:
    before = _fp(env)
    change(env)  # type: ignore[operator]
    assert _fp(env) != before


def test_a_different_base_image_id_changes_it(env: Path) -> None:
    assert _fp(env) != _fp(env, lambda ref: "sha256:" + "f" * 64)


def test_dockerignore_is_honoured_like_docker_py(env: Path) -> None:
    (env / "debug.log").write_text("x")
    files = context_files(env, env / "Dockerfile")
    assert "src/main.py" in files and "Dockerfile" in files and "debug.log" not in files


def test_base_images_skip_stages_scratch_and_expand_args() -> None:
    dockerfile = (
        "# syntax=docker/dockerfile:1\n"
        "ARG CUDA=12.4.1\n"
        "FROM --platform=linux/amd64 nvidia/cuda:${CUDA}-runtime AS build\n"
        "RUN echo \\\n  continued\n"
        "FROM scratch AS empty\n"
        "FROM build\n"
        "COPY --from=build /a /a\n"
        "COPY --from=0 /b /b\n"
        "COPY --from=ghcr.io/x/tool@sha256:abc /t /t\n"
    )
    assert base_images(dockerfile) == ["nvidia/cuda:12.4.1-runtime", "ghcr.io/x/tool@sha256:abc"]
    assert base_images(dockerfile, {"CUDA": "12.1.0"})[0] == "nvidia/cuda:12.1.0-runtime"
