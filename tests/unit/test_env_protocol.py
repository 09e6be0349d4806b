"""The ``gpuhop-env`` wire (gateway side) and the client's reading of it: pure, no SSH."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from client.envs.build import EnvImage
from client.envs.remote import HostImages, RemoteImage, compare_envs
from gateway.services import envprotocol
from gateway.services.envprotocol import (
    IMAGES_SCRIPT,
    EnvRequest,
    HostReport,
    docker_error,
    id_script,
    parse_images,
    parse_request,
)

ID = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ("images sg-1 my-1 sg-1", EnvRequest("images", ("sg-1", "my-1"))),
        (f"load repo/base:latest {ID} sg-1", EnvRequest("load", ("sg-1",), "repo/base:latest", ID)),
        (f"tag {ID} repo/x:1 my-1", EnvRequest("tag", ("my-1",), "repo/x:1", ID)),
    ],
)
def test_requests_parse(args: str, expected: EnvRequest) -> None:
    assert parse_request(args) == expected


@pytest.mark.parametrize(
    ("args", "why"),
    [
        ("", "unknown or incomplete request ''"),
        ("push x", "unknown or incomplete request 'push'"),
        ("images", "no hosts named"),
        (f"load ref {ID}", "no hosts named"),
        ("load ref sha256:short sg-1", "not an image ID"),
        (f"load 'x;rm -rf /' {ID} sg-1", "not an image reference"),
        ("images 'sg-1", "No closing quotation"),
    ],
)
def test_malformed_requests_say_why(args: str, why: str) -> None:
    with pytest.raises(ValueError, match="^" + why.replace("(", r"\(")):
        parse_request(args)


def test_host_commands_quote_what_they_are_given() -> None:
    assert id_script("repo/x:1") == "exec docker image inspect --format '{{.Id}}' repo/x:1"
    assert IMAGES_SCRIPT.startswith("ids=$(docker image ls -q --no-trunc) || exit;")


def test_image_listing_parses_nulls_and_duplicates() -> None:
    line = json.dumps({"id": ID, "tags": None, "layers": ["sha256:aa"], "labels": None})
    tagged = json.dumps({"id": ID, "tags": ["a:1"], "layers": ["sha256:aa"], "labels": {"k": "v"}})
    assert parse_images(f"{line}\n\n{tagged}\n".encode()) == [
        {"id": ID, "tags": ["a:1"], "layers": ["sha256:aa"], "labels": {"k": "v"}}
    ]
    assert parse_images(b"") == []


def test_docker_errors_are_one_line() -> None:
    assert docker_error("ae-1", 127, b"sh: docker: not found\n") == (
        "ae-1: docker is not installed there"
    )
    out = b"some progress\nCannot connect to the Docker daemon at unix:///x.sock.\n\n"
    assert docker_error("sg-1", 1, out) == (
        "sg-1: Cannot connect to the Docker daemon at unix:///x.sock."
    )
    assert docker_error("sg-1", 3, b"") == "sg-1: exit status 3"


def test_reports_carry_images_only_for_queries() -> None:
    assert "images" not in HostReport("loaded", image_id=ID, bytes=5).wire()
    assert HostReport("ok", images=({"id": ID},)).wire()["images"] == [{"id": ID}]


def _env(name: str, fp: str, current: bool = True) -> EnvImage:
    return EnvImage(name, fp, "sha256:" + fp * 8, 1, (f"gpuhop-env/{name}:latest",), current)


def _remote(name: str, fp: str) -> RemoteImage:
    labels = {"io.gpuhop.env": name, "io.gpuhop.fingerprint": fp}
    return RemoteImage("sha256:" + fp * 8, (f"gpuhop-env/{name}:latest",), (), labels)


def test_status_compares_fingerprints_per_host() -> None:
    local = [_env("base", "aaaaaaaa"), _env("app", "bbbbbbbb"), _env("app", "cccccccc", False)]
    remote = {
        "sg-1": HostImages("sg-1", (_remote("base", "aaaaaaaa"), _remote("old", "dddddddd"))),
        "my-1": HostImages("my-1", (_remote("app", "cccccccc"),)),
        "ae-1": HostImages("ae-1", error="denied: no role grants ae-1"),
    }
    rows = {(r.host, r.name): r.state for r in compare_envs(local, remote)}
    assert rows == {
        ("sg-1", "app"): "missing",
        ("sg-1", "base"): "current",
        ("sg-1", "old"): "remote-only",
        ("my-1", "app"): "drift",
        ("my-1", "base"): "missing",
        ("ae-1", "*"): "error",
    }


def test_host_images_know_chains_and_tags() -> None:
    image = RemoteImage(ID, ("repo/x:latest",), ("sha256:aa", "sha256:bb"), {})
    host = HostImages("sg-1", (image,))
    assert host.tagged("repo/x") is image and host.tagged("repo/x:2") is None
    assert host.has_id(ID) and "sha256:aa" in host.chains() and len(host.chains()) == 2


# ---------------------------------------------------------------- staged pushes

IMAGE = ID


def test_a_chunk_name_holds_its_index_and_digest_prefix() -> None:
    assert envprotocol.chunk_name(3, "0123456789abcdef" * 4) == "000003-0123456789abcdef"
    assert envprotocol.stage_key(IMAGE) == "ab" * 12


def test_the_chunk_list_keeps_complete_chunks_only() -> None:
    listing = b"000000-0123456789abcdef\n000001-0123456789abcdef.part.4242\nnotes\n"
    assert envprotocol.parse_chunk_list(listing) == {"000000-0123456789abcdef"}


def test_chunk_commands_refuse_names_that_are_not_chunk_names() -> None:
    with pytest.raises(ValueError, match="not a chunk name"):
        envprotocol.stage_chunk_command(IMAGE, "../../etc/passwd", 10)
    command = envprotocol.stage_chunk_command(IMAGE, "000000-0123456789abcdef", 10)
    assert "-eq 10 ]" in command and 'mv -f "$t"' in command


def _sh(script: str, cwd: Path, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["sh", "-c", script], input=stdin, capture_output=True, env=_stage_env(cwd), cwd=cwd
    )


def _stage_env(home: Path) -> dict[str, str]:
    """The staging directory under ``home``, and a fake ``docker`` there first on PATH."""
    return {**os.environ, "XDG_CACHE_HOME": str(home), "PATH": f"{home}:{os.environ['PATH']}"}


def test_the_staging_scripts_in_a_real_shell(tmp_path: Path) -> None:
    """List, write a chunk (a short one is not kept), and load: with a fake docker."""
    docker = tmp_path / "docker"
    docker.write_text('#!/bin/sh\ncat > "$XDG_CACHE_HOME/loaded"\n')
    docker.chmod(0o755)
    assert _sh(envprotocol.stage_list_script(IMAGE), tmp_path, b"").stdout == b""
    good, short = "000000-0123456789abcdef", "000001-0123456789abcdef"
    assert _sh(envprotocol.stage_chunk_command(IMAGE, good, 5), tmp_path, b"hello").returncode == 0
    assert _sh(envprotocol.stage_chunk_command(IMAGE, short, 5), tmp_path, b"hel").returncode == 1
    listed = _sh(envprotocol.stage_list_script(IMAGE), tmp_path, b"").stdout
    assert envprotocol.parse_chunk_list(listed) == {good}

    load = _sh(envprotocol.stage_load_command(IMAGE), tmp_path, f"{good}\nEND\n".encode())
    assert load.returncode == 0, load.stderr
    assert (tmp_path / "loaded").read_bytes() == b"hello"
    assert not (tmp_path / "gpuhop" / "push" / envprotocol.stage_key(IMAGE)).exists()


def test_a_load_whose_list_ends_without_end_is_killed_and_keeps_the_chunks(tmp_path: Path) -> None:
    docker = tmp_path / "docker"
    docker.write_text('#!/bin/sh\ncat > "$XDG_CACHE_HOME/loaded"\n')
    docker.chmod(0o755)
    _sh(envprotocol.stage_list_script(IMAGE), tmp_path, b"")
    good = "000000-0123456789abcdef"
    _sh(envprotocol.stage_chunk_command(IMAGE, good, 5), tmp_path, b"hello")

    cut = subprocess.run(
        ["setsid", "sh", "-c", envprotocol.stage_load_command(IMAGE)],
        input=f"{good}\n".encode(),
        capture_output=True,
        env=_stage_env(tmp_path),
        cwd=tmp_path,
    )
    assert cut.returncode == -9  # the whole group, docker included
    staged = tmp_path / "gpuhop" / "push" / envprotocol.stage_key(IMAGE)
    assert (staged / good).read_bytes() == b"hello"
