"""A private PostgreSQL server on loopback, for tests and benches.

``PgServer`` runs ``initdb`` (trust auth) in a fresh directory under /tmp, starts
the server with ``pg_ctl -w`` on a free loopback port (Unix socket in that
directory, nothing on other addresses), and stops it with ``pg_ctl -m fast``.
As root it runs the server binaries as the ``postgres`` user, which PostgreSQL
requires; as any other user it runs them directly.

``GPUHOP_TEST_STORAGE=postgres`` makes the integration fixtures give every
gateway stack a database of its own on one such server; it is read once, at
import, because the autouse fixture in tests/conftest.py scrubs ``GPUHOP_*``.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from gpuhop_sim.ports import free_loopback_port

STORAGE_BACKEND = os.environ.get("GPUHOP_TEST_STORAGE", "sqlite").strip().lower() or "sqlite"
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def find_bindir() -> Path | None:
    """The newest PostgreSQL server bindir (``/usr/lib/postgresql/*/bin``), or one on PATH."""
    candidates = glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")
    candidates.sort(key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if candidates:
        return Path(candidates[-1]).parent
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).parent
    return None


def require_postgres() -> Path:
    """The server bindir; skip when PostgreSQL is missing, fail instead under ``CI=true``."""
    found = find_bindir()
    if found is None:
        from tests.conftest import missing_peer

        missing_peer("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("running as root needs a 'postgres' user to run the server", pytrace=False)
    return found


class PgServer:
    """One PostgreSQL cluster in a temp directory; ``start`` / ``stop`` / ``restart``."""

    def __init__(self, bindir: Path, *, port: int = 0, max_connections: int = 300) -> None:
        self.bindir = bindir
        self.port = port or free_loopback_port()
        self.max_connections = max_connections
        self.root = Path(tempfile.mkdtemp(prefix="gpuhop-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._as_postgres = os.geteuid() == 0
        self._databases = 0
        if self._as_postgres:
            shutil.chown(self.root, "postgres")
        self._pg("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                 "--no-instructions", timeout=120)  # fmt: skip

    def _pg(self, tool: str, *args: str, timeout: float = 60) -> str:
        cmd = [str(self.bindir / tool), *args]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, timeout=timeout, cwd=self.root)
        if done.returncode != 0:
            out = (done.stdout + done.stderr).decode(errors="replace").strip()
            raise RuntimeError(f"{tool} failed ({done.returncode}): {out}\n{self.log_tail()}")
        return done.stdout.decode(errors="replace")

    def log_tail(self, n: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        return ""

    def start(self) -> PgServer:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
            f" -c max_connections={self.max_connections} -c fsync=on -c synchronous_commit=on"
        )
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options,
                 "-w", "-t", "60", "start")  # fmt: skip
        return self

    def stop(self) -> None:
        """Stop at once (``-m fast``: clients are disconnected, committed data stays)."""
        if (self.data / "postmaster.pid").exists():
            self._pg("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def restart(self, down_s: float = 0.0) -> None:
        """Stop, stay down ``down_s`` seconds, start again on the same port."""
        self.stop()
        time.sleep(down_s)
        self.start()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        """A storage URL for ``database`` (trust auth: no password)."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def conninfo(self, database: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={database}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its storage URL."""
        import psycopg
        from psycopg import sql

        if name is None:
            self._databases += 1
            name = f"gpuhop_{os.getpid()}_{self._databases}"
        if not _NAME.fullmatch(name):
            raise ValueError(f"not a plain database name: {name!r}")
        with psycopg.connect(self.conninfo(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def __enter__(self) -> PgServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_postgres() -> PgServer:
    """Start a private server (skipping, or failing under CI, when PostgreSQL is missing)."""
    bindir = require_postgres()
    last: Exception | None = None
    for _ in range(3):  # the free port may be taken between choosing and binding it
        server = PgServer(bindir)
        try:
            return server.start()
        except RuntimeError as exc:
            last = exc
            server.close()
    raise RuntimeError(f"PostgreSQL would not start: {last}")


def read_audit_events(url: str, kind: str | None = None) -> list[dict[str, Any]]:
    """Audit rows as ``GatewayStack.audit_events`` gives them: id, kind, actor, then data."""
    import psycopg

    from gateway.adapters.audit.pgconn import conninfo_of

    info, _ = conninfo_of(url)
    query = "SELECT id, kind, actor, data FROM audit_events"
    with psycopg.connect(info, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('audit_events')").fetchone() == (None,):
            return []
        if kind:
            rows = conn.execute(query + " WHERE kind = %s ORDER BY id", (kind,)).fetchall()
        else:
            rows = conn.execute(query + " ORDER BY id").fetchall()
    return [{"id": r[0], "kind": r[1], "actor": r[2], **json.loads(r[3])} for r in rows]
