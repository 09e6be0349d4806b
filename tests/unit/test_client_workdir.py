"""What the work directory sends (git-tracked files or a walk, minus .gpuhopignore), as tar."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from client.errors import SendFailed
from client.workdir import chunks, select_files, total_size
from tests.conftest import require


def _tree(root: Path) -> None:
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "src" / "pkg" / "mod.py").write_text("x = 1\n")
    (root / "README.md").write_text("hello\n")
    (root / "build").mkdir()
    (root / "build" / "out.o").write_bytes(b"\0" * 10)
    (root / "notes.tmp").write_text("scratch\n")
    script = root / "run.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    (root / "link").symlink_to("README.md")


def _git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(root), "-c", "user.email=t@t", "-c", "user.name=t", *args],
        check=True,
        capture_output=True,
    )


def test_walk_outside_git_honours_gpuhopignore(tmp_path: Path) -> None:
    _tree(tmp_path)
    (tmp_path / ".gpuhopignore").write_text("build/\n*.tmp\n")
    (tmp_path / ".git").mkdir()  # a stray .git dir is never sent, even outside a repo
    (tmp_path / ".git" / "config").write_text("x")
    sel = select_files(tmp_path)
    assert sel.source == "walk"
    names = [f.name for f in sel.files]
    assert names == [".gpuhopignore", "README.md", "link", "run.sh", "src/pkg/mod.py"]


def test_plain_walk(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    root.mkdir()
    _tree(root)
    (root / ".gpuhopignore").write_text("build/\n*.tmp\n!keep.tmp\n")
    (root / "keep.tmp").write_text("k")
    sel = select_files(root)
    assert sel.source == "walk"
    assert [f.name for f in sel.files] == [
        ".gpuhopignore",
        "README.md",
        "keep.tmp",
        "link",
        "run.sh",
        "src/pkg/mod.py",
    ]


def test_git_tracked_files_only(tmp_path: Path) -> None:
    require("git")
    _tree(tmp_path)
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "src", "README.md", "run.sh", "link", "notes.tmp")
    _git(tmp_path, "commit", "-qm", "x")
    (tmp_path / "untracked.txt").write_text("u")
    (tmp_path / ".gpuhopignore").write_text("*.tmp\n")
    os.remove(tmp_path / "README.md")  # tracked, deleted in the work tree: skipped
    sel = select_files(tmp_path)
    assert sel.source == "git"
    assert [f.name for f in sel.files] == ["link", "run.sh", "src/pkg/mod.py"]
    sub = select_files(tmp_path / "src")  # a subdirectory of a repo: its own subtree
    assert [f.name for f in sub.files] == ["pkg/mod.py"]


def test_missing_workdir(tmp_path: Path) -> None:
    with pytest.raises(SendFailed):
        select_files(tmp_path / "nope")


def test_tar_stream_round_trips(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    root.mkdir()
    _tree(root)
    big = os.urandom(700_001)
    (root / "big.bin").write_bytes(big)
    sel = select_files(root)
    pieces = list(chunks(sel, size=64 * 1024))
    assert max(len(p) for p in pieces) < 64 * 1024 + 2 * 512 + 64 * 1024
    data = b"".join(pieces)
    assert len(data) % 512 == 0
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert set(members) == {f.name for f in sel.files}
        assert members["link"].issym() and members["link"].linkname == "README.md"
        assert members["run.sh"].mode & 0o111
        assert members["big.bin"].uid == 0 and members["big.bin"].uname == ""
        extracted = tar.extractfile("big.bin")
        assert extracted is not None and extracted.read() == big
    assert total_size(sel) >= len(big)


def test_tar_stream_unpacks_with_real_tar(tmp_path: Path) -> None:
    tar_bin = require("tar")
    root = tmp_path / "plain"
    root.mkdir()
    _tree(root)
    (root / "ünïcode name.txt").write_text("u\n")
    (root / ("long" * 40)).write_text("l\n")
    out = tmp_path / "out"
    out.mkdir()
    data = b"".join(chunks(select_files(root)))
    subprocess.run([tar_bin, "-x", "-f", "-", "-C", str(out)], input=data, check=True)
    assert (out / "src" / "pkg" / "mod.py").read_text() == "x = 1\n"
    assert (out / "ünïcode name.txt").read_text() == "u\n"
    assert (out / ("long" * 40)).exists()
    assert os.readlink(out / "link") == "README.md"
    assert os.access(out / "run.sh", os.X_OK)


def test_empty_selection_is_a_valid_empty_archive(tmp_path: Path) -> None:
    data = b"".join(chunks(select_files(tmp_path)))
    assert data == bytes(1024)
