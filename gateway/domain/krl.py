"""Key revocation lists (OpenSSH KRL) of removed users' certificates.

A certificate the gateway signed stays valid at hosts until it expires, even
after its user is removed; a host's ``RevokedKeys`` file closes that gap. This
module decides what is revoked and writes the KRL bytes (the format of
OpenSSH's PROTOCOL.krl) itself, so the gateway needs no ``ssh-keygen``.

Every certificate is revoked by the SHA-256 hash of its user's public key (a
KRL ``FINGERPRINT_SHA256`` section, read by OpenSSH 7.9 and later): that
refuses the key and every certificate over it, whichever CA signed it. An
entry is kept until the certificate it stands for has expired, so the list
stays as small as the certificates still alive. Pure: no I/O, no clock.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Collection, Iterable
from dataclasses import dataclass

KRL_MAGIC = b"SSHKRL\n\x00"
KRL_FORMAT_VERSION = 1
SECTION_FINGERPRINT_SHA256 = 5
MAX_ENTRIES = 100_000  # 3.2 MB of hashes; past that the oldest-expiring are kept


@dataclass(frozen=True, slots=True)
class IssuedCert:
    """What the audit log says about one certificate the gateway signed."""

    user: str
    fingerprint: str  # "SHA256:base64", as ``ssh-keygen -l`` prints it
    valid_before: float


def sha256_of(fingerprint: str) -> bytes:
    """The 32-byte digest in an OpenSSH ``SHA256:...`` fingerprint (ValueError if not one)."""
    algo, sep, b64 = fingerprint.partition(":")
    if algo != "SHA256" or not sep:
        raise ValueError(f"not a SHA256 fingerprint: {fingerprint!r}")
    try:
        digest = base64.b64decode(b64 + "=" * (-len(b64) % 4), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"not a SHA256 fingerprint: {fingerprint!r}") from exc
    if len(digest) != 32:
        raise ValueError(f"not a SHA256 fingerprint: {fingerprint!r}")
    return digest


def revoked_fingerprints(
    issued: Iterable[IssuedCert], users: Collection[str], now: float
) -> tuple[str, ...]:
    """Fingerprints of keys holding unexpired certificates of users no longer in ``users``."""
    keep: dict[str, float] = {}
    for cert in issued:
        if cert.user in users or cert.valid_before <= now:
            continue
        keep[cert.fingerprint] = max(keep.get(cert.fingerprint, 0.0), cert.valid_before)
    latest_first = sorted(keep, key=lambda fp: (-keep[fp], fp))[:MAX_ENTRIES]
    return tuple(sorted(latest_first))


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def build_krl(
    fingerprints: Iterable[str], *, version: int, generated: int, comment: str = "gpuhop"
) -> bytes:
    """A KRL revoking the keys with these SHA-256 fingerprints (bad ones raise ValueError)."""
    digests = sorted({sha256_of(fp) for fp in fingerprints})
    out = KRL_MAGIC + struct.pack(">IQQQ", KRL_FORMAT_VERSION, version, generated, 0)
    out += _string(b"") + _string(comment.encode())
    if digests:
        out += bytes([SECTION_FINGERPRINT_SHA256]) + _string(b"".join(map(_string, digests)))
    return out
