"""Audit SFTP per operation by watching the relayed packet streams.

The gateway relays the ``sftp`` subsystem byte for byte and parses both
directions on the side (SFTP v3 framing: ``uint32 length, byte type, ...``) to
turn them into operations: a file opened, bytes read and written through its
handle, closed; renames, removals, directories. Nothing is stored but the
operation records; file contents never reach the audit log.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

OPEN, CLOSE, READ, WRITE = 3, 4, 5, 6
REMOVE, MKDIR, RMDIR, RENAME, SYMLINK = 13, 14, 15, 18, 20
EXTENDED = 200
STATUS, HANDLE, DATA = 101, 102, 103

_MAX_PACKET = 1 << 20  # larger frames mean a stream we do not understand: stop parsing

Emit = Callable[[str, dict[str, object]], None]


@dataclass(slots=True)
class _File:
    path: str
    flags: int
    read: int = 0
    written: int = 0


def _string(buf: bytes, pos: int) -> tuple[bytes, int]:
    (n,) = struct.unpack_from(">I", buf, pos)
    start = pos + 4
    return buf[start : start + n], start + n


class SftpAuditor:
    """Feed it both directions of an SFTP channel; it calls ``emit`` per operation."""

    def __init__(self, emit: Emit) -> None:
        self._emit = emit
        self._bufs = {"c": bytearray(), "s": bytearray()}
        self._pending_open: dict[int, tuple[str, int]] = {}
        self._pending_read: dict[int, bytes] = {}
        self._handles: dict[bytes, _File] = {}
        self._broken = False

    def client_data(self, data: bytes) -> None:
        self._feed("c", data)

    def server_data(self, data: bytes) -> None:
        self._feed("s", data)

    def close(self) -> None:
        """The channel ended: report files never closed."""
        for handle in list(self._handles):
            self._close_handle(handle, ended=True)

    def _feed(self, side: str, data: bytes) -> None:
        if self._broken:
            return
        buf = self._bufs[side]
        buf += data
        while len(buf) >= 5:
            (length,) = struct.unpack_from(">I", buf, 0)
            if length > _MAX_PACKET or length < 1:
                self._broken = True
                self._emit("sftp.unparsed", {"reason": "unexpected framing"})
                return
            if len(buf) < 4 + length:
                return
            packet = bytes(buf[4 : 4 + length])
            del buf[: 4 + length]
            try:
                (self._client_packet if side == "c" else self._server_packet)(packet)
            except (struct.error, UnicodeDecodeError, IndexError):
                continue  # a malformed packet is the host's problem; keep watching

    def _client_packet(self, p: bytes) -> None:
        kind = p[0]
        if kind < 3:  # INIT / VERSION
            return
        (req,) = struct.unpack_from(">I", p, 1)
        pos = 5
        if kind == OPEN:
            path, pos = _string(p, pos)
            (flags,) = struct.unpack_from(">I", p, pos)
            self._pending_open[req] = (path.decode("utf-8", "replace"), flags)
        elif kind == READ:
            handle, _ = _string(p, pos)
            self._pending_read[req] = handle
        elif kind == WRITE:
            handle, pos = _string(p, pos)
            pos += 8  # offset
            (n,) = struct.unpack_from(">I", p, pos)
            f = self._handles.get(handle)
            if f is not None:
                f.written += n
        elif kind == CLOSE:
            handle, _ = _string(p, pos)
            self._close_handle(handle)
        elif kind in (REMOVE, MKDIR, RMDIR):
            path, _ = _string(p, pos)
            op = {REMOVE: "remove", MKDIR: "mkdir", RMDIR: "rmdir"}[kind]
            self._emit(f"sftp.{op}", {"path": path.decode("utf-8", "replace")})
        elif kind == EXTENDED:
            name, pos = _string(p, pos)
            if name in (b"posix-rename@openssh.com", b"hardlink@openssh.com"):
                old, pos = _string(p, pos)
                new, _ = _string(p, pos)
                op = "sftp.rename" if name.startswith(b"posix") else "sftp.hardlink"
                self._emit(
                    op,
                    {"path": old.decode("utf-8", "replace"), "to": new.decode("utf-8", "replace")},
                )
        elif kind in (RENAME, SYMLINK):
            old, pos = _string(p, pos)
            new, _ = _string(p, pos)
            self._emit(
                "sftp.rename" if kind == RENAME else "sftp.symlink",
                {"path": old.decode("utf-8", "replace"), "to": new.decode("utf-8", "replace")},
            )

    def _server_packet(self, p: bytes) -> None:
        kind = p[0]
        if kind < 100:
            return
        (req,) = struct.unpack_from(">I", p, 1)
        if kind == HANDLE:
            pending = self._pending_open.pop(req, None)
            if pending is not None:
                handle, _ = _string(p, 5)
                self._handles[handle] = _File(*pending)
        elif kind == DATA:
            handle = self._pending_read.pop(req, b"")
            (n,) = struct.unpack_from(">I", p, 5)
            f = self._handles.get(handle)
            if f is not None:
                f.read += n
        elif kind == STATUS:
            self._pending_open.pop(req, None)
            self._pending_read.pop(req, None)

    def _close_handle(self, handle: bytes, ended: bool = False) -> None:
        f = self._handles.pop(handle, None)
        if f is None:
            return  # a directory handle, or one opened before we started watching
        self._emit(
            "sftp.file",
            {
                "path": f.path,
                "flags": f.flags,
                "bytes_read": f.read,
                "bytes_written": f.written,
                "closed": not ended,
            },
        )
