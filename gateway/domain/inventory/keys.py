"""OpenSSH public key lines: parse, check and compare them without any SSH library.

Config pins host keys and registers user keys as one-line OpenSSH text
("ssh-ed25519 AAAA... comment"). Two lines name the same key when their decoded
wire blobs are equal, whatever the comment or base64 padding, so lookups compare
blobs. The checks here catch copy-paste damage at config load (a truncated
line, a type token that does not match the blob, a legacy algorithm) instead of
at the first connection.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from gateway.errors import KeyMaterialError

# Key types accepted in config. ssh-rsa is the RSA *key* format (used with the
# rsa-sha2-* signature algorithms), accepted at >= 2048 bits; ssh-dss is not.
_ED25519 = {"ssh-ed25519", "sk-ssh-ed25519@openssh.com"}
_ECDSA = {
    "ecdsa-sha2-nistp256": 65,
    "ecdsa-sha2-nistp384": 97,
    "ecdsa-sha2-nistp521": 133,
    "sk-ecdsa-sha2-nistp256@openssh.com": 65,
}
_RSA = "ssh-rsa"
KNOWN_ALGORITHMS: frozenset[str] = frozenset({*_ED25519, *_ECDSA, _RSA})
_MIN_RSA_BITS = 2048


@dataclass(frozen=True, slots=True)
class PublicKey:
    """One public key: its type token, wire-format blob and free-text comment."""

    algorithm: str
    blob: bytes
    comment: str = ""

    @property
    def data(self) -> str:
        """The base64 key data as OpenSSH writes it."""
        return base64.b64encode(self.blob).decode("ascii")

    @property
    def line(self) -> str:
        """``algorithm data`` without the comment: the canonical form."""
        return f"{self.algorithm} {self.data}"

    @property
    def fingerprint(self) -> str:
        """``SHA256:...`` as ``ssh-keygen -l`` prints it."""
        return fingerprint(self.blob)


def fingerprint(blob: bytes) -> str:
    """The OpenSSH SHA256 fingerprint of a wire-format public key blob."""
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii")
    return "SHA256:" + digest.rstrip("=")


def parse_public_key(text: str) -> PublicKey:
    """Parse ``"<algorithm> <base64> [comment]"``; raise KeyMaterialError when it is not one.

    Options before the type (``from="..." ssh-ed25519 ...``) are not accepted:
    access rules belong in roles, not in key lines.
    """
    parts = text.strip().split(maxsplit=2)
    if len(parts) < 2:
        raise KeyMaterialError("expected '<algorithm> <base64 key> [comment]'")
    algorithm, data = parts[0], parts[1]
    if algorithm not in KNOWN_ALGORITHMS:
        known = ", ".join(sorted(KNOWN_ALGORITHMS))
        raise KeyMaterialError(f"unsupported key type {algorithm!r} (supported: {known})")
    blob = decode_blob(data)
    check_blob(algorithm, blob)
    return PublicKey(algorithm, blob, parts[2].strip() if len(parts) == 3 else "")


def decode_blob(data: str) -> bytes:
    """Decode the base64 part of a key line strictly (no stray characters)."""
    try:
        blob = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyMaterialError(f"key data is not valid base64: {exc}") from None
    if not blob:
        raise KeyMaterialError("key data is empty")
    return blob


def blob_algorithm(blob: bytes) -> str:
    """The key type named inside a wire-format blob (its first string)."""
    fields = _split_fields(blob)
    try:
        return fields[0].decode("ascii")
    except UnicodeDecodeError:
        raise KeyMaterialError("key blob does not start with a key type name") from None


def check_blob(algorithm: str, blob: bytes) -> None:
    """Check a blob's structure matches ``algorithm`` (the type token must agree)."""
    fields = _split_fields(blob)
    if fields[0] != algorithm.encode("ascii"):
        inner = fields[0].decode("ascii", "replace")
        raise KeyMaterialError(f"key type {algorithm!r} does not match the key data ({inner!r})")
    body = fields[1:]
    if algorithm in _ED25519:
        expected = 2 if algorithm.startswith("sk-") else 1
        if len(body) != expected or len(body[0]) != 32:
            raise KeyMaterialError(f"malformed {algorithm} key data")
    elif algorithm in _ECDSA:
        expected = 3 if algorithm.startswith("sk-") else 2
        curve = algorithm.removeprefix("sk-").split("-")[2].split("@")[0]
        if (
            len(body) != expected
            or body[0] != curve.encode("ascii")
            or len(body[1]) != _ECDSA[algorithm]
            or body[1][:1] != b"\x04"
        ):
            raise KeyMaterialError(f"malformed {algorithm} key data")
    else:
        if len(body) != 2:
            raise KeyMaterialError("malformed ssh-rsa key data")
        bits = int.from_bytes(body[1], "big").bit_length()
        if bits < _MIN_RSA_BITS:
            raise KeyMaterialError(f"RSA key has {bits} bits; at least {_MIN_RSA_BITS} required")


def _split_fields(blob: bytes) -> list[bytes]:
    """Split an SSH wire blob into its length-prefixed strings; all bytes must be used."""
    fields: list[bytes] = []
    pos = 0
    while pos < len(blob):
        if pos + 4 > len(blob):
            raise KeyMaterialError("key data is truncated")
        size = int.from_bytes(blob[pos : pos + 4], "big")
        pos += 4
        if pos + size > len(blob):
            raise KeyMaterialError("key data is truncated")
        fields.append(blob[pos : pos + size])
        pos += size
    if not fields:
        raise KeyMaterialError("key data is empty")
    return fields
