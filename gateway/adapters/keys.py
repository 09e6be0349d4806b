"""Key material: the gateway's host key, its user CA, and user certificates.

Keys are ed25519 and generated on first start when missing (mode 0600, with a
``.pub`` beside). Several CA keys may be trusted at once so a CA can rotate:
the first one signs, all of them verify, and old certificates stay valid until
they expire.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

from gateway.domain.models import Host
from gateway.errors import KeyMaterialError

CERT_KEY_ID_PREFIX = "gpuhop:"


def ensure_private_key(path: Path, comment: str) -> asyncssh.SSHKey:
    """Load the ed25519 key at ``path``, generating it (and ``path.pub``) when missing."""
    if path.exists():
        return load_private_key(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = asyncssh.generate_private_key("ssh-ed25519", comment=comment)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key.export_private_key())
        path.with_name(path.name + ".pub").write_bytes(key.export_public_key())
    except OSError as exc:
        raise KeyMaterialError(f"{path}: cannot create key: {exc.strerror}") from exc
    return key


ROTATED_MARK = ".old-"
NEXT_SUFFIX = ".next"


def next_key_path(path: Path) -> Path:
    """Where the key that will replace ``path`` waits while clients learn it."""
    return path.with_name(path.name + NEXT_SUFFIX)


def stage_next_key(path: Path, comment: str) -> asyncssh.SSHKey:
    """Make (or load) the gateway's next host key, ``NAME.next``.

    A staged key is announced to clients (OpenSSH ``UpdateHostKeys``, the
    ``hostkeys-00@openssh.com`` extension, and ``gpuhop login``'s known_hosts)
    but not yet used in key exchange, so clients trust it before it is needed.
    """
    return ensure_private_key(next_key_path(path), comment)


def promote_next_key(path: Path, now: float | None = None) -> Path:
    """The staged key becomes the host key; the old one is kept as ``NAME.old-EPOCH``.

    Returns where the old key went. Connections made before keep their key
    exchange; new ones use the promoted key once the gateway reloads.
    """
    staged = next_key_path(path)
    if not staged.exists():
        raise KeyMaterialError(f"{staged}: no staged host key; run 'hostkey stage' first")
    load_private_key(staged)  # refuse a damaged file before moving anything
    try:
        old = _retire(path, now)
        _move_key(staged, path)
    except OSError as exc:
        raise KeyMaterialError(f"{path}: cannot promote the staged key: {exc.strerror}") from exc
    return old


def gateway_host_keys(path: Path, comment: str) -> list[asyncssh.SSHKey]:
    """The host key the gateway uses (made when missing), then a staged next key if any."""
    keys = [ensure_private_key(path, comment)]
    if next_key_path(path).exists():
        keys.append(load_private_key(next_key_path(path)))
    return keys


def rotate_key(path: Path, comment: str, now: float | None = None) -> Path:
    """Replace the key at ``path`` with a new one; the old one is kept beside it as
    ``NAME.old-EPOCH`` (with its ``.pub``) so what it signed stays valid until it
    expires. Returns the old key's new path."""
    try:
        old = _retire(path, now)
    except OSError as exc:
        raise KeyMaterialError(f"{path}: cannot rotate: {exc.strerror}") from exc
    ensure_private_key(path, comment)
    return old


def _move_key(src: Path, dst: Path) -> None:
    """Rename a private key and, when there is one, its ``.pub`` beside it."""
    src.rename(dst)
    pub = src.with_name(src.name + ".pub")
    if pub.exists():
        pub.rename(dst.with_name(dst.name + ".pub"))


def _retire(path: Path, now: float | None) -> Path:
    """Move the key at ``path`` aside as ``NAME.old-EPOCH``; return where it went."""
    stamp = int(now if now is not None else time.time())
    old = path.with_name(f"{path.name}{ROTATED_MARK}{stamp}")
    _move_key(path, old)
    return old


def previous_keys(path: Path, keep_s: float, now: float | None = None) -> list[Path]:
    """Rotated-out keys of ``path`` younger than ``keep_s`` seconds, newest first.

    A user CA rotated out stays trusted for the longest certificate validity, so
    every certificate it signed can still be used until it expires.
    """
    t = now if now is not None else time.time()
    found: list[tuple[int, Path]] = []
    for candidate in path.parent.glob(f"{path.name}{ROTATED_MARK}*"):
        stamp = candidate.name[len(path.name) + len(ROTATED_MARK) :]
        if stamp.isdigit() and t - int(stamp) < keep_s:
            found.append((int(stamp), candidate))
    return [p for _, p in sorted(found, reverse=True)]


def load_private_key(path: Path) -> asyncssh.SSHKey:
    try:
        return asyncssh.read_private_key(str(path))
    except FileNotFoundError as exc:
        raise KeyMaterialError(f"{path}: no such key file") from exc
    except (OSError, asyncssh.KeyImportError) as exc:
        raise KeyMaterialError(f"{path}: not a usable private key ({exc})") from exc


def parse_public_key(line: str) -> asyncssh.SSHKey:
    """Parse one OpenSSH public key line (``ssh-ed25519 AAAA... comment``)."""
    try:
        return asyncssh.import_public_key(line.strip())
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise KeyMaterialError(f"not an OpenSSH public key: {exc}") from exc


def public_line(key: asyncssh.SSHKey) -> str:
    """The key's public half as one OpenSSH line, without a comment."""
    algo, blob = key.export_public_key("openssh").decode().split()[:2]
    return f"{algo} {blob}"


def key_id_user(key_id: str) -> str | None:
    """The gpuhop user named by a certificate key id ``gpuhop:USER:SERIAL``."""
    if not key_id.startswith(CERT_KEY_ID_PREFIX):
        return None
    parts = key_id.split(":")
    return parts[1] if len(parts) == 3 and parts[1] else None


@dataclass(frozen=True, slots=True)
class IssuedCert:
    cert: asyncssh.SSHCertificate
    key_id: str
    serial: int
    principals: tuple[str, ...]
    valid_after: int
    valid_before: int

    def openssh_line(self) -> str:
        return self.cert.export_certificate("openssh").decode().strip()


class UserCA:
    """The gateway's user certificate authority, with rotation.

    ``keys[0]`` signs; every key in ``keys`` is trusted for verification.
    """

    def __init__(self, keys: Sequence[asyncssh.SSHKey]) -> None:
        if not keys:
            raise KeyMaterialError("user CA: no keys")
        self._signer = keys[0]
        self._trusted = {public_line(k) for k in keys}

    @classmethod
    def from_paths(
        cls, signer: Path, extra_trusted: Iterable[Path] = (), comment: str = "gpuhop user CA"
    ) -> UserCA:
        keys = [ensure_private_key(signer, comment)]
        keys += [load_private_key(p) for p in extra_trusted]
        return cls(keys)

    @property
    def public_line(self) -> str:
        return public_line(self._signer)

    def trusted_lines(self) -> tuple[str, ...]:
        return tuple(sorted(self._trusted))

    def trusted_lines_current_first(self) -> tuple[str, ...]:
        rest = sorted(self._trusted - {self.public_line})
        return (self.public_line, *rest)

    def trusts(self, key: asyncssh.SSHKey) -> bool:
        return public_line(key) in self._trusted

    def sign(
        self,
        user_key: asyncssh.SSHKey,
        *,
        user: str,
        accounts: Sequence[str],
        validity_s: int,
        now: float | None = None,
        permit_agent_forwarding: bool = False,
    ) -> IssuedCert:
        """Sign a short-lived user certificate.

        Principals are the gpuhop user name (for the gateway) plus ``accounts``,
        the host-scoped principals ``ACCOUNT@HOST`` (see
        ``gateway.domain.policy.passthrough.host_principal``) the certificate may open
        on hosts, which trust this CA through ``TrustedUserCAKeys`` and map
        logins with ``AuthorizedPrincipals*``. The
        key id ``gpuhop:USER:SERIAL`` names the user so the gateway and the
        hosts' own logs can tell who it was. ``permit-agent-forwarding`` is off
        unless asked for (see ``gateway.domain.policy.passthrough.passthrough_agent_forwarding``);
        X11 forwarding and user rc files are always off.
        """
        if validity_s <= 0:
            raise KeyMaterialError("certificate validity must be positive")
        if not user:
            raise KeyMaterialError("certificate needs a user")
        start = int(now if now is not None else time.time()) - 60  # tolerate clock skew
        end = start + 60 + validity_s
        serial = secrets.randbits(63)
        key_id = f"{CERT_KEY_ID_PREFIX}{user}:{serial}"
        principals = tuple(dict.fromkeys([user, *accounts]))
        cert = self._signer.generate_user_certificate(
            user_key,
            key_id,
            serial=serial,
            principals=list(principals),
            valid_after=start,
            valid_before=end,
            permit_x11_forwarding=False,
            permit_agent_forwarding=permit_agent_forwarding,
            permit_user_rc=False,
        )
        return IssuedCert(cert, key_id, serial, principals, start, end)


class HostCertificates:
    """Host certificates for inventory names, from the gateway's host CA.

    In recorded mode the gateway answers ``ssh -J gw sg-1`` itself; it proves
    it may speak for ``sg-1`` with a certificate for that name, which users
    trust through one ``@cert-authority`` line. Certificates are cached and
    renewed a day before they expire.
    """

    VALIDITY_S = 7 * 86400

    def __init__(self, ca: asyncssh.SSHKey, host_key: asyncssh.SSHKey) -> None:
        self._ca = ca
        self._key = host_key
        self._cache: dict[str, tuple[asyncssh.SSHCertificate, float]] = {}

    @property
    def ca_line(self) -> str:
        return public_line(self._ca)

    def __call__(self, name: str) -> tuple[asyncssh.SSHKey, asyncssh.SSHCertificate]:
        now = time.time()
        cached = self._cache.get(name)
        if cached is None or cached[1] - now < 86400:
            end = now + self.VALIDITY_S
            cert = self._ca.generate_host_certificate(
                self._key,
                f"gpuhop-host:{name}",
                principals=[name],
                valid_after=int(now) - 300,
                valid_before=int(end),
            )
            cached = self._cache[name] = (cert, end)
        return self._key, cached[0]


def host_trust(
    host: Host,
) -> tuple[list[asyncssh.SSHKey], list[asyncssh.SSHKey], list[asyncssh.SSHKey]]:
    """asyncssh ``known_hosts`` for a host: its pinned key and/or the CA it names.

    Never trust on first use: a host with neither cannot be reached.
    """
    try:
        keys = [asyncssh.import_public_key(host.host_key)] if host.host_key else []
        cas = [asyncssh.import_public_key(host.host_ca)] if host.host_ca else []
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise KeyMaterialError(f"{host.name}: pinned host key or CA unusable: {exc}") from exc
    if not keys and not cas:
        raise KeyMaterialError(f"{host.name}: no pinned host key and no host CA")
    return keys, cas, []


@dataclass(frozen=True, slots=True)
class KeyRing:
    """The gateway's keys: who it trusts (user CA) and how it proves who it is."""

    user_ca: UserCA
    host_keys: tuple[asyncssh.SSHKey, ...]  # the one in use first, then a staged next key
    host_ca: asyncssh.SSHKey
    upstream_key: asyncssh.SSHKey
    upstream_ca: UserCA  # the gateway's own logins to hosts; never the user CA
    host_certificates: HostCertificates = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "host_certificates", HostCertificates(self.host_ca, self.host_keys[0])
        )

    @property
    def host_key_lines(self) -> tuple[str, ...]:
        return tuple(public_line(k) for k in self.host_keys)

    @property
    def host_ca_line(self) -> str:
        return public_line(self.host_ca)
