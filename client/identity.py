"""The client's SSH identity for one gateway: key, certificate, known_hosts, profile.

Everything lives in the user data dir (``platformdirs.user_data_dir("gpuhop")``,
or ``GPUHOP_DATA_DIR``), directory mode 0700::

    id_ed25519, id_ed25519.pub   the client key (made once, private half 0600)
    id_ed25519-cert.pub          a short-lived certificate from POST /v1/certificates
    known_hosts                  the gateway's host key, the host CA (@cert-authority)
                                 and each inventory host's pinned key
    profile.json                 gateway URL, SSH endpoint, user, accounts, cert expiry

:func:`ready` is what every command calls first. When the certificate has at
least ``renew_before_s`` left it touches neither the network nor the keyring,
so ``gpuhop run`` starts fast; otherwise it asks the API (credentials from the
environment or the keyring) and rewrites the files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from client import credentials
from client.errors import ClientError, PolicyDenied
from client.settings import ClientSettings, Secret

if TYPE_CHECKING:
    from client.api.clients import Client
    from client.api.models import Me

WILDCARDS = frozenset({"", "0.0.0.0", "::", "[::]"})
PROFILE_VERSION = 1


@dataclass(frozen=True)
class Paths:
    root: Path

    @property
    def key(self) -> Path:
        return self.root / "id_ed25519"

    @property
    def public_key(self) -> Path:
        return self.root / "id_ed25519.pub"

    @property
    def cert(self) -> Path:
        return self.root / "id_ed25519-cert.pub"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @property
    def profile(self) -> Path:
        return self.root / "profile.json"

    @property
    def ssh_config(self) -> Path:
        return self.root / "ssh_config"


@dataclass(frozen=True)
class Profile:
    """What the client knows about its gateway, from the last API round."""

    url: str
    user: str
    ssh_host: str
    ssh_port: int
    host_key: str
    host_ca_key: str
    host_keys: Mapping[str, str] = field(default_factory=dict)
    accounts: tuple[str, ...] = ()
    cert_valid_before: int = 0
    token_hash: str = ""
    gateway_keys: tuple[str, ...] = ()  # more keys to trust for the gateway (rotation)

    @property
    def default_account(self) -> str:
        """The remote account used unless one is named: the first concrete one granted."""
        return next((a for a in self.accounts if a not in ("*", self.user)), "") or next(
            (a for a in self.accounts if a != "*"), self.user
        )

    def cert_seconds_left(self, now: float | None = None) -> float:
        return self.cert_valid_before - (time.time() if now is None else now)


def paths_of(settings: ClientSettings) -> Paths:
    return Paths(settings.data_dir)


def token_hash(token: Secret) -> str:
    return hashlib.sha256(token.get().encode()).hexdigest()[:16]


def load_profile(paths: Paths) -> Profile | None:
    """The stored profile, or None when there is none (or it is unreadable)."""
    try:
        data = json.loads(paths.profile.read_text())
    except (OSError, ValueError):
        return None
    try:
        if data.get("version") != PROFILE_VERSION:
            return None
        return Profile(
            url=str(data["url"]),
            user=str(data["user"]),
            ssh_host=str(data["ssh_host"]),
            ssh_port=int(data["ssh_port"]),
            host_key=str(data["host_key"]),
            host_ca_key=str(data["host_ca_key"]),
            host_keys={str(k): str(v) for k, v in dict(data.get("host_keys", {})).items()},
            accounts=tuple(str(a) for a in data.get("accounts", [])),
            cert_valid_before=int(data.get("cert_valid_before", 0)),
            token_hash=str(data.get("token_hash", "")),
            gateway_keys=tuple(str(k) for k in data.get("gateway_keys", [])),
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _usable(profile: Profile, paths: Paths, settings: ClientSettings) -> bool:
    if settings.gateway_url is not None and settings.gateway_url != profile.url:
        return False
    if settings.token is not None and token_hash(settings.token) != profile.token_hash:
        return False
    if profile.cert_seconds_left() < settings.renew_before_s:
        return False
    return paths.cert.exists() and paths.key.exists() and paths.known_hosts.exists()


def ready(settings: ClientSettings, *, refresh: bool = False) -> Profile:
    """A profile with a certificate valid for at least ``renew_before_s``.

    Renews through the API only when needed (or when ``refresh``).
    """
    paths = paths_of(settings)
    profile = load_profile(paths)
    if not refresh and profile is not None and _usable(profile, paths, settings):
        return profile
    creds = credentials.resolve(settings)
    with open_api(creds.url, creds.token, settings) as api:
        return enroll(api, settings, creds.token)


def open_api(url: str, token: Secret, settings: ClientSettings) -> Client:
    from client.api.clients import Client

    return Client(url, token, timeout=settings.http_timeout_s)


def enroll(api: Client, settings: ClientSettings, token: Secret, me: Me | None = None) -> Profile:
    """Ask the gateway who we are and where it is, certify our key, write every file."""
    paths = paths_of(settings)
    me = me or api.me()
    if not me.in_inventory:
        raise PolicyDenied(
            f"{me.user} has no SSH access on this gateway (not in its inventory); "
            "ask an admin to add the user"
        )
    info = api.gateway()
    public_line = ensure_key(paths)
    cert = api.sign_certificate(public_line)
    ssh_host = info.ssh_host
    if ssh_host in WILDCARDS:
        ssh_host = _url_host(api.base_url)
    profile = Profile(
        url=api.base_url,
        user=me.user,
        ssh_host=ssh_host,
        ssh_port=info.ssh_port,
        host_key=info.host_key,
        host_ca_key=info.host_ca_key,
        host_keys=dict(info.host_keys),
        accounts=tuple(me.accounts),
        cert_valid_before=cert.valid_before,
        token_hash=token_hash(token),
        gateway_keys=tuple(k for k in info.gateway_keys if k != info.host_key),
    )
    write_private(paths.cert, cert.certificate.strip() + "\n", mode=0o644)
    write_private(paths.known_hosts, known_hosts_text(profile), mode=0o644)
    write_private(paths.profile, json.dumps(_profile_json(profile), indent=2) + "\n")
    return profile


def forget(paths: Paths) -> list[Path]:
    """Remove the certificate, profile and known_hosts (the key stays); return what went."""
    gone = []
    for path in (paths.cert, paths.profile, paths.known_hosts):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            gone.append(path)
    return gone


def ensure_key(paths: Paths) -> str:
    """The client key's public line, generating an ed25519 key (mode 0600) when missing."""
    # Here, not at the top: importing client.sshconn loads asyncssh, which only key
    # generation needs (``gpuhop hosts`` and the TUI should not pay for it).
    from client.sshconn import asyncssh

    if paths.key.exists() and paths.public_key.exists():
        return paths.public_key.read_text().strip()
    _ensure_dir(paths.root)
    if paths.key.exists():
        key = asyncssh.read_private_key(str(paths.key))
    else:
        key = asyncssh.generate_private_key("ssh-ed25519")
        try:
            fd = os.open(paths.key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another gpuhop process made it first
            return ensure_key(paths)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key.export_private_key("openssh"))
    algorithm, blob = key.export_public_key("openssh").decode().split()[:2]
    line = f"{algorithm} {blob}"
    write_private(paths.public_key, f"{line} gpuhop\n", mode=0o644)
    return f"{line} gpuhop"


def known_hosts_text(profile: Profile) -> str:
    """known_hosts for the gateway, the hosts behind it, and recorded jumps (host CA)."""
    gateway = host_pattern(profile.ssh_host, profile.ssh_port)
    lines = [f"{gateway} {key}" for key in (profile.host_key, *profile.gateway_keys)]
    names = sorted(profile.host_keys)
    if names and profile.host_ca_key:
        lines.append(f"@cert-authority {','.join(names)} {profile.host_ca_key}")
    lines += [f"{name} {profile.host_keys[name]}" for name in names if profile.host_keys[name]]
    return "\n".join(lines) + "\n"


def host_pattern(host: str, port: int) -> str:
    """How known_hosts spells ``host`` on ``port``."""
    return host if port == 22 else f"[{host}]:{port}"


def write_private(path: Path, text: str, mode: int = 0o600) -> None:
    """Write atomically (readers never see half a file) with ``mode``."""
    _ensure_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, mode)
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _ensure_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ClientError(f"cannot create {path}: {exc.strerror}") from None


def _url_host(url: str) -> str:
    netloc = url.partition("://")[2].split("/", 1)[0].rsplit("@", 1)[-1]
    if netloc.startswith("["):
        return netloc[1:].split("]", 1)[0]
    return netloc.rsplit(":", 1)[0] if ":" in netloc else netloc


def _profile_json(profile: Profile) -> dict[str, Any]:
    return {
        "version": PROFILE_VERSION,
        "url": profile.url,
        "user": profile.user,
        "ssh_host": profile.ssh_host,
        "ssh_port": profile.ssh_port,
        "host_key": profile.host_key,
        "host_ca_key": profile.host_ca_key,
        "host_keys": dict(profile.host_keys),
        "accounts": list(profile.accounts),
        "cert_valid_before": profile.cert_valid_before,
        "token_hash": profile.token_hash,
        "gateway_keys": list(profile.gateway_keys),
    }
