"""Thin ``docker save`` archives: the same stream with the layers a target has left out.

``docker load`` registers layer ``i`` of an image only when the engine lacks its
*chain ID* (the digest of layers ``0..i`` stacked); otherwise it never opens
that layer's ``layer.tar``. So an archive whose ``layer.tar`` entries are
dropped for every layer the target already has loads to the identical image
ID. Everything else (``manifest.json``, the config JSON, each layer's
``VERSION`` and ``json``, ``repositories``) passes through byte for byte.

The filter works on the raw 512-byte tar blocks as they stream, so nothing is
re-encoded and a multi-gigabyte layer never sits in memory. The hard part is
knowing which layer a directory holds *before* its ``layer.tar`` arrives:
Docker 20.10 names layer directories by a legacy "v1 ID" and writes them in
name order, not stack order. Each directory's ``json`` (which precedes its
``layer.tar``) carries that ID; the ID is ``sha256`` of the same JSON with
``id`` removed and the layer's chain ID and parent added, so trying each of the
image's chain IDs identifies the directory with cryptographic certainty. A
directory that cannot be identified (another Docker version's encoding) keeps
its ``layer.tar``: the archive is then larger, never wrong. Newer engines write
the OCI layout, whose layer files are named by their digest and need no such
matching.

Pure: no docker, no I/O beyond the iterators it is handed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

BLOCK = 512
_PIECE = 1 << 20
_LEGACY_DIR = re.compile(r"^(?:\./)?([0-9a-f]{64})/(json|layer\.tar)$")
_OCI_BLOB = re.compile(r"^(?:\./)?blobs/sha256/([0-9a-f]{64})$")
_EXTENSION_TYPES = (b"x", b"g", b"L", b"K")  # pax, global pax, GNU long name/link


def chain_ids(diff_ids: Sequence[str]) -> tuple[str, ...]:
    """The chain ID of each prefix of a layer stack (OCI image spec).

    >>> chain_ids(["sha256:aa"])
    ('sha256:aa',)
    """
    chains: list[str] = []
    for diff_id in diff_ids:
        if not chains:
            chains.append(diff_id)
        else:
            text = f"{chains[-1]} {diff_id}".encode()
            chains.append("sha256:" + hashlib.sha256(text).hexdigest())
    return tuple(chains)


def go_json(value: object) -> str:
    """Compact JSON as Go's encoding/json writes it (HTML characters escaped)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for raw, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(raw, escaped)
    return text


def identify_layer_json(raw: bytes, chains: Sequence[str]) -> int | None:
    """Which layer (index into ``chains``) a legacy layer directory's ``json`` describes.

    Recomputes Docker's v1 ID for each candidate chain ID and compares it with
    the ``id`` the file states; ``None`` when no candidate reproduces it.
    """
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("id"), str):
        return None
    claimed = doc.pop("id")
    parent = doc.pop("parent", None)
    variants = [dict(doc)]
    if "os" in doc:  # lower layers get "os" only after their ID was computed
        variants.append({k: v for k, v in doc.items() if k != "os"})
    for index, chain in enumerate(chains):
        for variant in variants:
            variant["layer_id"] = chain
            if parent:
                variant["parent"] = f"sha256:{parent}"
            body = ",".join(f"{go_json(k)}:{go_json(v)}" for k, v in sorted(variant.items()))
            if hashlib.sha256(("{" + body + "}").encode()).hexdigest() == claimed:
                return index
    return None


@dataclass
class ThinStats:
    """What a filter passed and dropped (filled in as the stream is consumed)."""

    bytes_in: int = 0
    bytes_out: int = 0
    layers_sent: list[str] = field(default_factory=list)
    layers_skipped: list[str] = field(default_factory=list)
    unidentified: int = 0
    complete: bool = False


class _Reader:
    """Exact-size reads over an iterator of byte chunks of any size."""

    def __init__(self, chunks: Iterable[bytes], stats: ThinStats) -> None:
        self._it = iter(chunks)
        self._buf = bytearray()
        self._stats = stats

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes; fewer only at the end of the stream."""
        while len(self._buf) < n:
            chunk = next(self._it, None)
            if chunk is None:
                break
            self._stats.bytes_in += len(chunk)
            self._buf += chunk
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def exact(self, n: int) -> bytes:
        data = self.read(n)
        if len(data) != n:
            raise ValueError("the image archive ended in the middle of an entry")
        return data


def _octal(field_: bytes) -> int:
    if field_ and field_[0] & 0x80:  # GNU base-256 for sizes of 8 GiB and more
        return int.from_bytes(bytes([field_[0] & 0x7F]) + field_[1:], "big")
    text = field_.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _pax_records(data: bytes) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        length = int(data[pos:space])
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        records[key.decode()] = value.decode("utf-8", "replace")
        pos += length
    return records


def _padded(size: int) -> int:
    return (size + BLOCK - 1) // BLOCK * BLOCK


def _entry_name_size(header: bytes, size: int, extensions: Sequence[bytes]) -> tuple[str, int]:
    """An entry's full path and size, honouring ustar prefixes, pax and GNU long names."""
    name = header[:100].split(b"\0", 1)[0]
    if header[257:263] == b"ustar\0" and header[345]:
        name = header[345:500].split(b"\0", 1)[0] + b"/" + name
    for ext in extensions:
        ext_type, ext_body = ext[156:157], ext[BLOCK : BLOCK + _octal(ext[124:136])]
        if ext_type == b"x":
            records = _pax_records(ext_body)
            name = records.get("path", name.decode("utf-8", "replace")).encode()
            size = int(records.get("size", size))
        elif ext_type == b"L":
            name = ext_body.rstrip(b"\0")
    return name.decode("utf-8", "replace"), size


class _Plan:
    """Decides, per entry, whether a layer file may be dropped."""

    def __init__(self, diff_ids: Sequence[str], present: frozenset[str]) -> None:
        self.diff_ids = tuple(diff_ids)
        self.chains = chain_ids(diff_ids)
        # One file may serve several positions (identical layers): drop it only
        # if the target has every chain that would read it.
        self.droppable = {
            d: all(
                c in present for c, dd in zip(self.chains, self.diff_ids, strict=True) if dd == d
            )
            for d in self.diff_ids
        }
        self.dir_index: dict[str, int | None] = {}


def thin_archive(
    chunks: Iterable[bytes],
    diff_ids: Sequence[str],
    present_chains: Iterable[str],
    stats: ThinStats | None = None,
) -> Iterator[bytes]:
    """Stream ``chunks`` (a ``docker save`` tar) minus the layer files the target has.

    ``diff_ids`` are the image's layers bottom-up (``RootFS.Layers``);
    ``present_chains`` the chain IDs the target engine holds. Pass ``stats`` to
    learn what was dropped. Applying it twice, or to an already thin archive,
    is harmless.
    """
    stats = stats if stats is not None else ThinStats()
    plan = _Plan(diff_ids, frozenset(present_chains))
    reader = _Reader(chunks, stats)
    pending: list[bytes] = []  # extension headers that belong to the next entry

    def emit(data: bytes) -> bytes:
        stats.bytes_out += len(data)
        return data

    while True:
        header = reader.read(BLOCK)
        if header == bytes(BLOCK):
            # End of archive: the zero blocks and the record padding pass through.
            while header:
                yield emit(header)
                header = reader.read(_PIECE)
            stats.complete = True
            return
        if len(header) < BLOCK:
            raise ValueError("the image archive ended without its end-of-archive marker")
        typeflag, size = header[156:157], _octal(header[124:136])
        if typeflag in _EXTENSION_TYPES:
            pending.append(header + reader.exact(_padded(size)))
            continue
        name, size = _entry_name_size(header, size, pending)
        regular = typeflag in (b"0", b"\0")
        legacy, blob = _LEGACY_DIR.match(name), _OCI_BLOB.match(name)
        if regular and legacy and legacy.group(2) == "json":
            body = reader.exact(_padded(size))
            index = identify_layer_json(body[:size], plan.chains)
            plan.dir_index[legacy.group(1)] = index
            stats.unidentified += index is None
            yield from (emit(part) for part in (*pending, header, body))
            pending.clear()
            continue
        layer: str | None = None  # the diff ID this entry carries, when it is a layer file
        drop = False
        if regular and legacy:
            index = plan.dir_index.get(legacy.group(1))
            layer = None if index is None else plan.diff_ids[index]
            drop = layer is not None and plan.droppable[layer]
        elif regular and blob and f"sha256:{blob.group(1)}" in plan.droppable:
            layer = f"sha256:{blob.group(1)}"
            drop = plan.droppable[layer]
        pending_out, pending = pending, []
        if drop and layer is not None:
            stats.layers_skipped.append(layer)
            remaining = _padded(size)
            while remaining:
                remaining -= len(reader.exact(min(remaining, _PIECE)))
            continue
        if layer is not None:
            stats.layers_sent.append(layer)
        yield from (emit(part) for part in (*pending_out, header))
        remaining = _padded(size)
        while remaining:
            piece = reader.exact(min(remaining, _PIECE))
            remaining -= len(piece)
            yield emit(piece)
