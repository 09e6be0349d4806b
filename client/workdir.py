"""Which files of the work directory a job gets, and the tar stream that carries them.

In a git work tree the files are the tracked ones (``git ls-files -z``: what
CI checked out, never build output or secrets left lying around), with their
working-tree contents; elsewhere every file under the directory except
``.git``. Either way a ``.gpuhopignore`` at the top (gitignore syntax) drops
more. Regular files and symlinks are sent; directories are implied.

The tar stream is produced in bounded chunks (``chunks``), so a large file
never sits in memory whole; ``gpuhop run`` reads it through a thread.

    files = select_files(Path("."))
    for chunk in chunks(files):
        channel.write(chunk)
"""

from __future__ import annotations

import os
import stat
import subprocess
import tarfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from client.errors import SendFailed

if TYPE_CHECKING:
    from pathspec import GitIgnoreSpec

IGNORE_FILE = ".gpuhopignore"
CHUNK = 256 * 1024
BLOCK = tarfile.BLOCKSIZE


@dataclass(frozen=True)
class WorkFile:
    """One file to send: where it is here, and its path in the job's directory."""

    path: Path
    name: str  # posix, relative


@dataclass(frozen=True)
class Selection:
    root: Path
    files: tuple[WorkFile, ...]
    source: str  # "git" or "walk"


def select_files(root: Path) -> Selection:
    """The files of ``root`` a job gets (see the module docstring)."""
    if not root.is_dir():
        raise SendFailed(f"work directory {root} does not exist or is not a directory")
    spec = _ignore_spec(root)
    tracked = _git_files(root)
    names = tracked if tracked is not None else _walk(root, spec)
    source = "git" if tracked is not None else "walk"
    files = []
    for name in sorted(set(names)):
        if spec is not None and spec.match_file(name):
            continue
        path = root / name
        try:
            mode = path.lstat().st_mode
        except OSError:
            continue  # tracked but deleted in the work tree
        if stat.S_ISREG(mode) or stat.S_ISLNK(mode):
            files.append(WorkFile(path, name))
    return Selection(root, tuple(files), source)


def _git_files(root: Path) -> list[str] | None:
    """Tracked files under ``root`` (relative to it), or None outside a git work tree."""
    try:
        result = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", "--cached"],
            capture_output=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return [n for n in result.stdout.decode("utf-8", "surrogateescape").split("\0") if n]


def _walk(root: Path, spec: GitIgnoreSpec | None) -> list[str]:
    names: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel = os.path.relpath(dirpath, root)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        kept = []
        for d in sorted(dirnames):
            if d == ".git":
                continue
            if spec is not None and spec.match_file(prefix + d + "/"):
                continue
            if os.path.islink(os.path.join(dirpath, d)):
                names.append(prefix + d)  # a symlink to a directory is sent as a link
                continue
            kept.append(d)
        dirnames[:] = kept
        names += [prefix + f for f in filenames]
    return names


def _ignore_spec(root: Path) -> GitIgnoreSpec | None:
    path = root / IGNORE_FILE
    if not path.is_file():
        return None
    import pathspec

    try:
        lines = path.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
    except OSError as exc:
        raise SendFailed(f"cannot read {path}: {exc.strerror}") from None
    return pathspec.GitIgnoreSpec.from_lines(lines)


def chunks(
    selection: Selection,
    size: int = CHUNK,
    *,
    prefix: str = "",
    extra: Sequence[tuple[str, bytes, int]] = (),
) -> Iterator[bytes]:
    """The selection as an uncompressed tar stream, in pieces of about ``size`` bytes.

    Owners are left out (files belong to whoever unpacks them); permissions and
    times are kept. A file that changes size while it is read is sent at the size
    it had when listed (zero-padded or cut), as tar itself does. With ``prefix``
    (``"work/"``) the files go under that directory, which is always in the
    archive; ``extra`` members ``(name, content, mode)`` go first, at the top.
    """
    buffer = bytearray()
    now = int(time.time())
    if prefix:
        folder = _info(prefix.rstrip("/"), 0o755, now)
        folder.type = tarfile.DIRTYPE
        buffer += _header(folder)
    for name, content, mode in extra:
        info = _info(name, mode, now)
        info.size = len(content)
        buffer += _header(info) + content + bytes(-len(content) % BLOCK)
    for item in selection.files:
        try:
            st = item.path.lstat()
        except OSError:
            continue
        info = _info(prefix + item.name, st.st_mode & 0o7777, int(st.st_mtime))
        if stat.S_ISLNK(st.st_mode):
            info.type = tarfile.SYMTYPE
            info.linkname = os.readlink(item.path)
            buffer += _header(info)
            continue
        info.size = st.st_size
        buffer += _header(info)
        try:
            with item.path.open("rb") as fh:
                left = info.size
                while left > 0:
                    data = fh.read(min(size, left))
                    if not data:
                        buffer += bytes(left)  # shrank while being read
                        break
                    buffer += data
                    left -= len(data)
                    if len(buffer) >= size:
                        yield bytes(buffer)
                        buffer.clear()
        except OSError as exc:
            raise SendFailed(f"cannot read {item.path}: {exc.strerror}") from None
        buffer += bytes(-info.size % BLOCK)
        if len(buffer) >= size:
            yield bytes(buffer)
            buffer.clear()
    buffer += bytes(2 * BLOCK)
    yield bytes(buffer)


def _info(name: str, mode: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = mode
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _header(info: tarfile.TarInfo) -> bytes:
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def total_size(selection: Selection) -> int:
    """Bytes of file content in the selection (what a progress line would show)."""
    total = 0
    for item in selection.files:
        try:
            st = item.path.lstat()
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            total += st.st_size
    return total
