"""A gateway in front of real OpenSSH hosts, for integration tests and benches.

``GatewayStack`` writes a config (user CA, users, roles, two sshd hosts), runs
``gpuhop-gateway serve`` as a real subprocess, and builds OpenSSH command lines
that reach hosts through it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.adapters.keys import UserCA, ensure_private_key, public_line
from gpuhop_sim.sshd import SshdHost

KEX = "curve25519-sha256"

# Set by tests/integration/conftest.py under GPUHOP_TEST_STORAGE=postgres:
# makes an empty PostgreSQL database and returns its storage URL.
database_factory: Callable[[], str] | None = None


def new_storage_url(root: Path) -> str:
    """A storage URL for a new gateway: ``root/gpuhop.db``, or a fresh PostgreSQL database."""
    factory = database_factory
    return factory() if factory else f"sqlite:///{root / 'gpuhop.db'}"


@dataclass
class StackUser:
    name: str
    key: Path
    cert: Path | None = None


@dataclass
class GatewayStack:
    root: Path
    hosts: dict[str, SshdHost] = field(default_factory=dict)
    users: dict[str, StackUser] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    api_port: int = 0
    extra_gateway: str = ""
    host_addresses: dict[str, tuple[str, int]] = field(default_factory=dict)
    storage_url: str = ""  # chosen on first use; see database_url

    @property
    def config(self) -> Path:
        return self.root / "gateway.toml"

    @property
    def database_url(self) -> str:
        """The storage URL: the SQLite file ``database``, or a PostgreSQL database of its own."""
        if not self.storage_url:
            self.storage_url = new_storage_url(self.root)
        return self.storage_url

    @property
    def database(self) -> Path:
        return self.root / "gpuhop.db"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    def ca(self) -> UserCA:
        return UserCA.from_paths(self.root / "keys" / "user_ca")

    def upstream_ca(self) -> UserCA:
        """The CA of the gateway's own logins to hosts (never used for users)."""
        return UserCA.from_paths(self.root / "keys" / "upstream_ca", comment="gpuhop upstream CA")

    def host_ca_lines(self) -> str:
        """What a host puts in TrustedUserCAKeys: the user CA and the upstream CA."""
        return f"{self.ca().public_line}\n{self.upstream_ca().public_line}"

    def host_principals(self, accounts: Sequence[str]) -> list[str]:
        """``ACCOUNT@HOST`` for every account on every host added so far."""
        return [f"{a}@{h}" for h in self.hosts for a in accounts]

    def add_host(self, name: str, gpus: int = 4, model: str = "NVIDIA A100-SXM4-80GB") -> SshdHost:
        host = SshdHost(
            name=name,
            directory=self.root / "hosts" / name,
            gpus=gpus,
            gpu_model=model,
            user_ca_pub=self.host_ca_lines(),
            authorized_keys=[],
        )
        host.start()
        self.hosts[name] = host
        self.host_addresses[name] = ("127.0.0.1", host.port)
        return host

    def add_user(
        self, name: str, *, cert: bool = True, accounts: Sequence[str] = ("root",)
    ) -> StackUser:
        key_path = self.root / "keys" / name
        key = ensure_private_key(key_path, f"{name}@test")
        user = StackUser(name, key_path)
        if cert:
            principals = self.host_principals(accounts)
            issued = self.ca().sign(key, user=name, accounts=principals, validity_s=3600)
            user.cert = key_path.with_name(name + "-cert.pub")
            user.cert.write_text(issued.openssh_line() + "\n")
        self.users[name] = user
        return user

    def write_config(self, roles: str, user_roles: dict[str, list[str]]) -> None:
        regions = {"sg": "SG", "my": "MY", "ae": "AE"}
        lines = [
            "[gateway]",
            'ssh_host = "127.0.0.1"',
            "ssh_port = 0",
            "api_port = 0",
            f'storage_url = "{self.database_url}"',
            'host_key = "keys/gateway_host_ed25519"',
            'user_ca_key = "keys/user_ca"',
            'host_ca_key = "keys/host_ca"',
            'upstream_key = "keys/gateway_upstream"',
            'upstream_ca_key = "keys/upstream_ca"',
            'recordings_dir = "recordings"',
            "drain_timeout_s = 5.0",
            "auth_max_failures = 50",
            self.extra_gateway,
            "",
        ]
        for region, country in regions.items():
            lines += ["[[regions]]", f'name = "{region}"', f'country = "{country}"', ""]
        for name, host in self.hosts.items():
            address, port = self.host_addresses[name]
            lines += [
                "[[hosts]]",
                f'name = "{name}"',
                f'region = "{name.split("-")[0]}"',
                f'address = "{address}"',
                f"port = {port}",
                f'host_key = "{host.host_key_line}"',
                'gpu_model = "NVIDIA A100-SXM4-80GB"',
                "gpu_count = 4",
                "price_per_gpu_hour = 2.5",
                "",
            ]
        lines.append(roles)
        for name, roles_of in user_roles.items():
            # Certificate users log in with their certificate only; others with their key.
            user = self.users[name]
            key = ensure_private_key(user.key, "")
            keys = [] if user.cert is not None else [public_line(key)]
            lines += [
                "[[users]]",
                f'name = "{name}"',
                f"roles = {json.dumps(roles_of)}",
                f"keys = {json.dumps(keys)}",
                "",
            ]
        self.config.write_text("\n".join(lines))

    def start_gateway(self, *extra: str, timeout: float = 20.0) -> int:
        ready = self.root / "ready.json"
        ready.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(self.config)]
        with (self.root / "gateway.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [*cmd, "--ready-file", str(ready), *extra], stdout=log, stderr=log
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready.exists():
                info = json.loads(ready.read_text())
                self.port = int(info["ssh_port"])
                self.api_port = int(info.get("api_port", 0))
                self._write_known_hosts()
                return self.port
            if self.proc.poll() is not None:
                raise RuntimeError("gateway exited: " + self.log_tail())
            time.sleep(0.05)
        raise RuntimeError("gateway not ready: " + self.log_tail())

    def log_tail(self, n: int = 20) -> str:
        path = self.root / "gateway.log"
        return (
            "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""
        )

    def stop_gateway(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        code = self.proc.returncode
        self.proc = None
        return code

    def _write_known_hosts(self) -> None:
        gw = ensure_private_key(self.root / "keys" / "gateway_host_ed25519", "")
        host_ca = ensure_private_key(self.root / "keys" / "host_ca", "")
        lines = [f"[127.0.0.1]:{self.port} {public_line(gw)}"]
        lines.append(f"@cert-authority {','.join(self.hosts)} {public_line(host_ca)}")
        for name, host in self.hosts.items():
            lines.append(f"{name} {host.host_key_line}")
            lines.append(f"[127.0.0.1]:{host.port} {host.host_key_line}")
        self.known_hosts.write_text("\n".join(lines) + "\n")

    def plain_known_hosts(self) -> Path:
        """known_hosts without ``@cert-authority`` lines, which paramiko cannot read."""
        path = self.root / "known_hosts.plain"
        lines = self.known_hosts.read_text().splitlines()
        path.write_text("".join(line + "\n" for line in lines if not line.startswith("@")))
        return path

    def ssh_options(self, user: StackUser) -> list[str]:
        opts = [
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"KexAlgorithms={KEX}",
            "-o",
            "ConnectTimeout=10",
            "-i",
            str(user.key),
        ]
        if user.cert is not None:
            opts += ["-o", f"CertificateFile={user.cert}"]
        return opts

    def ssh_config(self, user: StackUser) -> Path:
        """An OpenSSH config for ``user``: ``ssh -F FILE -J gw account@host`` works."""
        path = self.root / f"ssh_config.{user.name}"
        lines = [
            "Host gw",
            "  HostName 127.0.0.1",
            f"  Port {self.port}",
            f"  User {user.name}",
            "Host *",
            "  BatchMode yes",
            "  IdentitiesOnly yes",
            f"  IdentityFile {user.key}",
            f"  UserKnownHostsFile {self.known_hosts}",
            "  StrictHostKeyChecking yes",
            f"  KexAlgorithms {KEX}",
            "  ConnectTimeout 10",
        ]
        if user.cert is not None:
            lines.append(f"  CertificateFile {user.cert}")
        text = "\n".join(lines) + "\n"
        if not path.exists() or path.read_text() != text:
            tmp = path.with_name(f"{path.name}.{os.getpid()}.{time.monotonic_ns()}")
            tmp.write_text(text)
            tmp.replace(path)  # atomic: concurrent ssh processes never see half a file
        return path

    def jump_command(
        self, user: StackUser, host: str, *command: str, account: str = "root", tty: bool = False
    ) -> list[str]:
        """Real ``ssh -J gw account@host command`` through the gateway."""
        cfg = self.ssh_config(user)
        return [
            "ssh",
            "-F",
            str(cfg),
            "-J",
            "gw",
            "-tt" if tty else "-T",
            f"{account}@{host}",
            *command,
        ]

    def gateway_command(self, user: StackUser, *command: str) -> list[str]:
        return [
            "ssh",
            *self.ssh_options(user),
            "-p",
            str(self.port),
            f"{user.name}@127.0.0.1",
            *command,
        ]

    def run(
        self, cmd: list[str], timeout: float = 30.0, **kw: Any
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(cmd, capture_output=True, timeout=timeout, **kw)

    def audit_events(self, kind: str | None = None) -> list[dict[str, Any]]:
        if self.database_url.startswith("postgresql"):
            from tests.integration.pg import read_audit_events

            return read_audit_events(self.database_url, kind)
        import sqlite3

        if not self.database.exists():
            return []
        con = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
            if "audit_events" not in tables:
                return []
            q = "SELECT id, kind, actor, data FROM audit_events"
            rows = con.execute(
                q + (" WHERE kind = ?" if kind else "") + " ORDER BY id", (kind,) if kind else ()
            ).fetchall()
        finally:
            con.close()
        return [{"id": r[0], "kind": r[1], "actor": r[2], **json.loads(r[3])} for r in rows]

    def wait_audit_events(
        self,
        kind: str,
        where: Callable[[dict[str, Any]], object] = lambda e: True,
        count: int = 1,
        timeout: float = 10.0,
    ) -> list[dict[str, Any]]:
        """Events of ``kind`` matching ``where``, read again until ``count`` are there or
        ``timeout`` passes (events written just after what the test saw may lag)."""
        deadline = time.monotonic() + timeout
        found = [e for e in self.audit_events(kind) if where(e)]
        while len(found) < count and time.monotonic() < deadline:
            time.sleep(0.05)
            found = [e for e in self.audit_events(kind) if where(e)]
        return found

    def close(self) -> None:
        self.stop_gateway(
            signal.SIGKILL if os.environ.get("GPUHOP_FAST_TEARDOWN") else signal.SIGTERM
        )
        for host in self.hosts.values():
            host.stop()


def read_until(fd: int, needle: bytes, timeout: float = 15.0) -> bytes:
    """Read a pty until ``needle`` shows up, EOF, or ``timeout`` seconds."""
    import select

    buf = b""
    deadline = time.monotonic() + timeout
    while needle not in buf and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
    return buf
