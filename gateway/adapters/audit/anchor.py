"""Checkpoint keys and the anchor file: the parts of the audit log kept outside the database.

- ``CheckpointSigner`` holds the ed25519 key (``gateway.audit_checkpoint_key``,
  in the gateway's key directory) that signs each commit's new head; every
  gateway replica and admin command that appends uses the same key.
- ``TrustedKeys`` checks checkpoint signatures from the public half (the key
  file itself, or its ``.pub`` for an auditor who holds no private key).
- The **anchor file** (``gateway.audit_anchor_file``) holds the newest
  checkpoint this machine committed, one JSON line, rewritten in place under
  an ``flock`` so it only moves forward. It is not fsynced: after a power cut
  it may be behind (never ahead) or unreadable until the next commit rewrites
  it; ``audit verify`` then fails closed rather than pass it.
  Each store also logs its head when it closes (``audit head`` at info), so a
  log shipper is a second, off-machine anchor.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path

import asyncssh
import structlog

from gateway.adapters.keys import ensure_private_key, load_private_key
from gateway.config.process import GatewaySettings
from gateway.domain.audit.checkpoint import Anchors, Checkpoint, checkpoint_message
from gateway.errors import KeyMaterialError, StorageError

log = structlog.get_logger("gpuhop.audit")

KEY_COMMENT = "gpuhop audit checkpoints"
_ALG = b"ssh-ed25519"
ANCHOR_MAX_BYTES = 4096  # one checkpoint line; anything larger is not ours


class CheckpointSigner:
    """Signs checkpoints with one ed25519 key; optionally keeps the anchor file current."""

    def __init__(self, key: asyncssh.SSHKey, anchor_file: Path | None = None) -> None:
        if key.algorithm != _ALG:
            raise KeyMaterialError(
                f"audit checkpoint key must be ed25519, not {key.algorithm.decode()}"
            )
        self._key = key
        self.key_id = key.get_fingerprint()
        self.anchor_file = anchor_file

    @classmethod
    def from_path(cls, path: Path, anchor_file: Path | None = None) -> CheckpointSigner:
        """Load the key at ``path``, generating it on first use (mode 0600)."""
        return cls(ensure_private_key(path, KEY_COMMENT), anchor_file)

    def sign(self, event_id: int, digest: str, ts: float) -> Checkpoint:
        blob = self._key.sign(checkpoint_message(event_id, digest, ts), _ALG)
        return Checkpoint(event_id, digest, ts, self.key_id, base64.b64encode(blob).decode())

    def committed(self, checkpoint: Checkpoint) -> None:
        """After a commit: move the anchor file forward (errors are logged, not raised:
        the events are committed, and the database keeps the checkpoint)."""
        if self.anchor_file is None:
            return
        try:
            write_anchor(self.anchor_file, checkpoint)
        except OSError as exc:
            log.error("audit anchor not updated", file=str(self.anchor_file), error=str(exc))

    def trusted(self) -> TrustedKeys:
        return TrustedKeys([self._key])


def signer_for(g: GatewaySettings) -> CheckpointSigner:
    """The signer every audit writer of this gateway uses (server, admin commands)."""
    return CheckpointSigner.from_path(g.audit_checkpoint_key, g.audit_anchor_file)


class TrustedKeys:
    """Accepts checkpoints signed by one of ``keys``."""

    def __init__(self, keys: Sequence[asyncssh.SSHKey]) -> None:
        # Public halves only: asyncssh's private key objects do not verify.
        public = [asyncssh.import_public_key(k.export_public_key()) for k in keys]
        self._by_id = {k.get_fingerprint(): k for k in public}

    @classmethod
    def from_file(cls, path: Path) -> TrustedKeys:
        """A private key file, or a public key file (OpenSSH one-line format)."""
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            raise KeyMaterialError(f"{path}: no such audit checkpoint key") from None
        except OSError as exc:
            raise KeyMaterialError(f"{path}: cannot read key: {exc.strerror}") from None
        if b"PRIVATE KEY" in text:
            return cls([load_private_key(path)])
        try:
            return cls([asyncssh.import_public_key(text)])
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise KeyMaterialError(f"{path}: not an OpenSSH public key ({exc})") from None

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._by_id)

    def __call__(self, checkpoint: Checkpoint) -> bool:
        key = self._by_id.get(checkpoint.key_id)
        if key is None:
            return False
        try:
            blob = base64.b64decode(checkpoint.signature, validate=True)
        except (binascii.Error, ValueError):
            return False
        try:
            return bool(key.verify(checkpoint.message(), blob))
        except (ValueError, TypeError, asyncssh.Error):
            return False


def _to_line(checkpoint: Checkpoint) -> bytes:
    return (json.dumps(asdict(checkpoint), sort_keys=True) + "\n").encode()


def _parse(data: bytes, path: Path) -> Checkpoint:
    try:
        if len(data) > ANCHOR_MAX_BYTES:
            raise ValueError(f"larger than {ANCHOR_MAX_BYTES} bytes")
        raw = json.loads(data)
        cp = Checkpoint(
            event_id=raw["event_id"],
            hash=raw["hash"],
            ts=raw["ts"],
            key_id=raw["key_id"],
            signature=raw["signature"],
        )
        ok = isinstance(cp.event_id, int) and cp.event_id >= 1
        ok = ok and all(isinstance(v, str) for v in (cp.hash, cp.key_id, cp.signature))
        if not ok or not isinstance(cp.ts, int | float):
            raise ValueError("fields of the wrong type")
    except (ValueError, KeyError, TypeError) as exc:
        raise StorageError(f"{path}: not an audit anchor file ({exc})") from None
    return cp


def read_anchor(path: Path) -> Checkpoint | None:
    """The checkpoint in an anchor file; None when the file does not exist.

    A file that exists but holds no checkpoint is a ``StorageError``: an anchor
    that cannot be read must not pass for "no anchor".
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"{path}: cannot read the audit anchor: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # a writer replaces the line under LOCK_EX
        data = os.pread(fd, ANCHOR_MAX_BYTES + 1, 0)
    except OSError as exc:
        raise StorageError(f"{path}: cannot read the audit anchor: {exc.strerror}") from None
    finally:
        os.close(fd)
    return _parse(data, path)


def write_anchor(path: Path, checkpoint: Checkpoint) -> bool:
    """Replace the anchor with ``checkpoint`` unless it already records a later event.

    Several writers (workers, ``gpuhop-gateway admin``) may race: an ``flock`` on
    the file orders them, so it only moves forward. The line is rewritten in
    place (a rename would make ext4 flush the file on every commit, several
    milliseconds each); readers take the lock shared, so they never see half a
    line. Returns whether it was replaced.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        current: Checkpoint | None = None
        with contextlib.suppress(StorageError):  # unreadable (a power cut mid-write): replace
            current = _parse(os.pread(fd, ANCHOR_MAX_BYTES + 1, 0), path)
        if current is not None and current.event_id >= checkpoint.event_id:
            return False
        line = _to_line(checkpoint)
        os.pwrite(fd, line, 0)
        os.ftruncate(fd, len(line))
        return True
    finally:
        os.close(fd)  # releases the lock


def anchors_for(
    trusted: TrustedKeys,
    anchor_file: Path | None,
    expect: tuple[int, str] | None = None,
    *,
    require_anchor: bool = False,
) -> Anchors:
    """``Anchors`` for a verification: read the anchor file *before* the database, so a
    commit landing in between makes the database longer than the anchor, never shorter."""
    anchor = read_anchor(anchor_file) if anchor_file is not None else None
    if anchor is None and anchor_file is not None and require_anchor:
        raise StorageError(
            f"{anchor_file}: audit anchor file missing: cannot rule out a truncated log "
            "(give --anchor FILE, or --no-anchor to check signatures only)"
        )
    name = f"anchor file {anchor_file}" if anchor_file is not None else "anchor"
    return Anchors(trusted, anchor, name, expect)


def checkpoint_rows(rows: Iterable[tuple[object, ...]]) -> Iterable[Checkpoint]:
    """Checkpoints from ``(event_id, hash, ts, key_id, signature)`` rows as stored."""
    for event_id, digest, ts, key_id, signature in rows:
        yield Checkpoint(int(event_id), str(digest), float(ts), str(key_id), str(signature))  # type: ignore[call-overload, arg-type]
