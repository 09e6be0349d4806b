"""The ``gpuhop-env`` wire: requests, the docker commands run on hosts, replies.

Pure (no SSH, no I/O) so it can be table-tested; the service that runs it is
:mod:`gateway.services.envpush`.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from typing import Literal

ENV_COMMAND = "gpuhop-env"
USAGE = (
    "usage: gpuhop-env images HOST... | load REF IMAGE_ID HOST... (archive on stdin)"
    " | tag IMAGE_ID REF HOST..."
)
_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$")
_IMAGE_ID = re.compile(r"^sha256:[0-9a-f]{64}$")

_INSPECT = (
    '{"id":{{json .Id}},"tags":{{json .RepoTags}},'
    '"layers":{{json .RootFS.Layers}},"labels":{{json .Config.Labels}}}'
)
IMAGES_SCRIPT = (
    "ids=$(docker image ls -q --no-trunc) || exit; "
    f'[ -z "$ids" ] || exec docker image inspect --format {shlex.quote(_INSPECT)} $ids'
)
LOAD_COMMAND = "exec docker load"  # exec: a KILL signal reaches docker itself

# Staged pushes (far hosts): the archive goes up in chunks over parallel channels
# into a staging directory per image, then one ``docker load`` reads them in order.
# A chunk is named ``INDEX-SHA256PREFIX`` and only appears under that name once
# all its bytes are there (written to a temporary name, size checked, renamed), so
# a directory listing is exactly what a retry need not send again. Directories
# left by pushes that never finished are removed after a day.
_STAGE_ROOT = '"${XDG_CACHE_HOME:-$HOME/.cache}/gpuhop/push"'
_STAGE_MAX_AGE_MIN = 24 * 60
_CHUNK_NAME = re.compile(r"^[0-9]{6}-[0-9a-f]{16}$")


def stage_key(image_id: str) -> str:
    """The staging directory's name for ``image_id`` (its first 24 hex digits)."""
    return image_id.removeprefix("sha256:")[:24]


def chunk_name(index: int, digest: str) -> str:
    """``000003-0123456789abcdef``: where chunk ``index`` (sha256 hex ``digest``) is kept."""
    return f"{index:06d}-{digest[:16]}"


def _stage_dir(image_id: str) -> str:
    return f"d={_STAGE_ROOT}/{stage_key(image_id)}"


def stage_list_script(image_id: str) -> str:
    """Make the staging directory, drop stale ones, print the chunks already complete."""
    key = stage_key(image_id)
    return (
        f"r={_STAGE_ROOT}; {_stage_dir(image_id)}; "
        f'mkdir -p "$d" || exit; '
        f'find "$r" -mindepth 1 -maxdepth 1 -type d ! -name {key} -mmin +{_STAGE_MAX_AGE_MIN}'
        " -exec rm -rf {} + 2>/dev/null; "
        'exec ls "$d"'
    )


def parse_chunk_list(output: bytes) -> frozenset[str]:
    """The complete chunk names in ``stage_list_script``'s output (temporaries ignored)."""
    names = output.decode("utf-8", "replace").split()
    return frozenset(n for n in names if _CHUNK_NAME.match(n))


def stage_chunk_command(image_id: str, name: str, size: int) -> str:
    """Write stdin to chunk ``name``; it appears under that name only if all ``size`` bytes came."""
    if not _CHUNK_NAME.match(name):
        raise ValueError(f"not a chunk name: {name!r}")
    return (
        f'{_stage_dir(image_id)}; t="$d/{name}.part.$$"; '
        f'if cat > "$t" && [ "$(wc -c < "$t")" -eq {int(size)} ]; '
        f'then exec mv -f "$t" "$d/{name}"; fi; '
        'rm -f "$t"; exit 1'
    )


STAGE_END = b"END\n"


def stage_load_command(image_id: str) -> str:
    """``docker load`` of the chunks whose names arrive on stdin, one a line, as they complete.

    The load runs while later chunks are still on their way. Only a final
    ``END`` line lets the archive end cleanly; stdin ending without it (the
    push was cut off), or a chunk that cannot be read, kills the whole process
    group, ``docker`` included, so a truncated archive never reaches the
    loader's end, and the chunks stay for a retry. After a load, good or bad,
    the directory is removed.
    """
    return (
        f'{_stage_dir(image_id)}; cd "$d" || exit; '
        "{ while read -r c; do "
        'case "$c" in END) exit 0;; [0-9]*-*) ;; *) kill -KILL 0;; esac; '
        'cat -- "$c" || kill -KILL 0; done; kill -KILL 0; } | docker load; s=$?; '
        'cd / && rm -rf "$d"; exit $s'
    )


Verb = Literal["images", "load", "tag"]

MAX_HOSTS = 256  # hosts one request may name: bounds the fan-out and its audit rows


@dataclass(frozen=True, slots=True)
class EnvRequest:
    """A parsed ``gpuhop-env`` command line."""

    verb: Verb
    hosts: tuple[str, ...]
    ref: str = ""
    image_id: str = ""


def parse_request(args: str) -> EnvRequest:
    """``images H...`` / ``load REF ID H...`` / ``tag ID REF H...``; ``ValueError`` says why not."""
    try:
        words = shlex.split(args)
    except ValueError as exc:
        raise ValueError(f"{exc}; {USAGE}") from None
    first, rest = (words[0], words[1:]) if words else ("", [])
    ref = image_id = ""
    verb: Verb
    if first == "images":
        verb, hosts = "images", rest
    elif first == "load" and len(rest) >= 2:
        verb, ref, image_id, hosts = "load", rest[0], rest[1], rest[2:]
    elif first == "tag" and len(rest) >= 2:
        verb, image_id, ref, hosts = "tag", rest[0], rest[1], rest[2:]
    else:
        raise ValueError(f"unknown or incomplete request {first!r}; {USAGE}")
    if ref and not _REF.match(ref):
        raise ValueError(f"not an image reference: {ref!r}")
    if image_id and not _IMAGE_ID.match(image_id):
        raise ValueError(f"not an image ID (sha256:<64 hex>): {image_id!r}")
    if not hosts:
        raise ValueError(f"no hosts named; {USAGE}")
    if len(hosts) > MAX_HOSTS:
        raise ValueError(f"too many hosts named ({len(hosts)}); at most {MAX_HOSTS} per request")
    return EnvRequest(verb, tuple(dict.fromkeys(hosts)), ref, image_id)


def id_script(ref: str) -> str:
    """The host command that prints the image ID ``ref`` names."""
    return "exec docker image inspect --format '{{.Id}}' " + shlex.quote(ref)


def parse_images(output: bytes) -> list[dict[str, object]]:
    """``IMAGES_SCRIPT`` output (one JSON object a line) → images, each once, nulls as empties."""
    seen: dict[str, dict[str, object]] = {}
    for line in output.decode("utf-8", "replace").splitlines():
        if not line.strip():
            continue
        doc = json.loads(line)
        seen[str(doc["id"])] = {
            "id": str(doc["id"]),
            "tags": [str(t) for t in doc.get("tags") or ()],
            "layers": [str(layer) for layer in doc.get("layers") or ()],
            "labels": {str(k): str(v) for k, v in (doc.get("labels") or {}).items()},
        }
    return list(seen.values())


def as_bytes(value: object) -> bytes:
    """A process's stdout/stderr as asyncssh hands it over (bytes, str or None) as bytes."""
    if isinstance(value, bytes):
        return value
    return str(value or "").encode()


def loaded_report(
    host: str, ref: str, image_id: str, status: int | None, out: bytes, err: bytes, sent: int
) -> HostReport:
    """After a load: ``id_script(ref)``'s answer must be ``image_id``, else the host failed."""
    found = out.decode(errors="replace").strip()
    if status != 0 or found != image_id:
        have = found if status == 0 else docker_error(host, status, err)
        return HostReport(
            "failed", f"{host} has {have} as {ref} after loading, not {image_id}", bytes=sent
        )
    return HostReport("loaded", image_id=found, bytes=sent)


def docker_error(host: str, status: int | None, output: bytes) -> str:
    """One line for a failed docker command on ``host``."""
    if status == 127:
        return f"{host}: docker is not installed there"
    lines = [line.strip() for line in output.decode("utf-8", "replace").splitlines()]
    last = next((line for line in reversed(lines) if line), f"exit status {status}")
    return f"{host}: {last}"


@dataclass(frozen=True, slots=True)
class HostReport:
    """How one host ended; its ``wire`` form is what the client reads."""

    status: str  # ok (images), loaded, tagged, failed, refused, aborted
    error: str = ""
    image_id: str | None = None
    bytes: int = 0
    seconds: float = 0.0
    images: tuple[dict[str, object], ...] = ()

    def wire(self) -> dict[str, object]:
        out: dict[str, object] = {"status": self.status, "error": self.error}
        out.update(image_id=self.image_id, bytes=self.bytes, seconds=round(self.seconds, 3))
        if self.status == "ok":
            out["images"] = list(self.images)
        return out
