"""Environment definitions: env.toml, lock files, devcontainer.json, and the shipped images/."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.envs.spec import (
    check_lock_file,
    discover,
    load_devcontainer,
    load_env,
    resolve,
    strip_jsonc,
)
from client.errors import EnvNotFound, EnvSpecError

REPO_IMAGES = Path(__file__).resolve().parents[2] / "images"
HASH = "--hash=sha256:" + "a" * 64


def _env(root: Path, name: str, toml: str = "", lock: str | None = None) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "Dockerfile").write_text("FROM scratch\n")
    (d / "env.toml").write_text(toml)
    if lock is not None:
        (d / "requirements.lock").write_text(lock)
    return d


def test_env_toml_is_parsed_into_a_spec(tmp_path: Path) -> None:
    _env(
        tmp_path,
        "train",
        'description = "trainer"\ngpus = 2\ncommand = ["python", "t.py"]\n'
        '[build_args]\nPY = "3.11"\n',
        lock=f"numpy==1.26.4 \\\n    {HASH}\n    # via -r requirements.in\n",
    )
    spec = load_env(tmp_path, "train")
    assert (spec.name, spec.gpus, spec.command) == ("train", 2, ("python", "t.py"))
    assert spec.build_args == (("PY", "3.11"),)
    assert spec.lock_file == (tmp_path / "train" / "requirements.lock").resolve()
    assert spec.context == (tmp_path / "train").resolve()


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("gpus = -1", "gpus"),
        ("colour = 'red'", "colour"),
        ("gpus = [", "env.toml"),
        ('lock = "missing.lock"', "does not exist"),
        ('dockerfile = "../../etc/passwd"', "outside"),
    ],
)
def test_bad_env_toml_is_one_line(tmp_path: Path, toml: str, message: str) -> None:
    _env(tmp_path, "bad", toml)
    with pytest.raises(EnvSpecError, match=message) as info:
        load_env(tmp_path, "bad")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "lock",
    [
        "numpy>=1.26\n",
        "numpy==1.26.4\n",
        f"numpy \\\n    {HASH}\n",
    ],
)
def test_lock_files_must_pin_with_hashes(tmp_path: Path, lock: str) -> None:
    path = tmp_path / "requirements.lock"
    path.write_text("# header\n" + lock)
    with pytest.raises(EnvSpecError, match=r"requirements.lock:2: numpy"):
        check_lock_file(path)


def test_a_missing_environment_lists_the_known_ones(tmp_path: Path) -> None:
    _env(tmp_path, "base")
    with pytest.raises(EnvNotFound, match=r"no environment 'nope'.*\(known: base\)"):
        load_env(tmp_path, "nope")
    with pytest.raises(EnvNotFound, match="known: none"):
        load_env(tmp_path / "absent", "base")


def test_jsonc_comments_and_trailing_commas() -> None:
    text = '{\n // c\n "a": "http://x", /* b */ "b": [1, 2,],\n}'
    assert strip_jsonc(text) == '{\n \n "a": "http://x",  "b": [1, 2]\n}'


def test_devcontainer_build_and_image_forms(tmp_path: Path) -> None:
    (tmp_path / ".devcontainer").mkdir()
    (tmp_path / ".devcontainer" / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / ".devcontainer" / "devcontainer.json").write_text(
        '{"name": "ML Box", "build": {"dockerfile": "Dockerfile", "args": {"A": "1"}},'
        ' "hostRequirements": {"gpu": true}}'
    )
    spec = load_devcontainer(tmp_path)
    assert (spec.name, spec.source, spec.gpus, spec.build_args) == (
        "ml-box",
        "devcontainer",
        1,
        (("A", "1"),),
    )
    assert spec.context == (tmp_path / ".devcontainer").resolve()
    (tmp_path / ".devcontainer" / "devcontainer.json").write_text(
        '{"image": "mcr.microsoft.com/devcontainers/python:3.11"}'
    )
    ready = load_devcontainer(tmp_path, name="py")
    assert ready.image == "mcr.microsoft.com/devcontainers/python:3.11"
    assert ready.dockerfile is None
    assert resolve(tmp_path / "images", str(tmp_path)).image == ready.image


def test_devcontainer_problems(tmp_path: Path) -> None:
    with pytest.raises(EnvNotFound, match=r"no devcontainer\.json"):
        load_devcontainer(tmp_path)
    (tmp_path / ".devcontainer").mkdir()
    (tmp_path / ".devcontainer" / "devcontainer.json").write_text('{"name": "x"}')
    with pytest.raises(EnvSpecError, match=r"needs build\.dockerfile or image"):
        load_devcontainer(tmp_path)


def test_shipped_images_are_well_formed() -> None:
    found = {spec.name: spec for spec in discover(REPO_IMAGES)}
    assert {"base", "pytorch-cuda"} <= set(found)
    assert found["pytorch-cuda"].gpus >= 1
    for spec in found.values():
        assert spec.lock_file is not None  # load_env already checked every hash pin
        assert spec.dockerfile is not None
        text = spec.dockerfile.read_text()
        assert "@sha256:" in text, f"{spec.name}: base image is not pinned by digest"
        assert "--require-hashes" in text
