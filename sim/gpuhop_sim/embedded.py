"""A simulated GPU host served by asyncssh, for machines without OpenSSH sshd.

``EmbeddedHost`` has the same directory layout, keys, fake ``nvidia-smi`` and
API as ``SshdHost``: it trusts the same user CA (a ``cert-authority`` entry)
and authorized keys, runs exec requests with ``/bin/sh -c``, shells in a pty,
serves sftp, and forwards direct-tcpip to loopback only. It runs on its own
event loop thread so synchronous callers use it exactly like ``SshdHost``.
``make_host`` picks whichever the machine supports.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import time
from collections.abc import Sequence
from pathlib import Path

import asyncssh

from gpuhop_sim import procs
from gpuhop_sim.embedded_session import report_exit, run_in_pty, run_piped
from gpuhop_sim.gpustate import FakeGpu, write_state
from gpuhop_sim.host import HostDir, SimHost, SimHostError, known_hosts_line, principals_for
from gpuhop_sim.loopthread import LoopThread
from gpuhop_sim.ports import is_loopback
from gpuhop_sim.sshd import SshdHost, sshd_path

# Explicit lists: asyncssh's defaults still offer SHA-1 and ssh-rsa.
ALGORITHMS: dict[str, list[str]] = {
    "kex_algs": ["curve25519-sha256", "curve25519-sha256@libssh.org", "ecdh-sha2-nistp256"],
    "encryption_algs": [
        "chacha20-poly1305@openssh.com",
        "aes128-gcm@openssh.com",
        "aes256-gcm@openssh.com",
        "aes128-ctr",
        "aes256-ctr",
    ],
    "mac_algs": ["hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com"],
    "signature_algs": [
        "ssh-ed25519",
        "ecdsa-sha2-nistp256",
        "rsa-sha2-512",
        "rsa-sha2-256",
    ],
    "compression_algs": ["none"],
}


class _Server(asyncssh.SSHServer):
    def __init__(self, host: EmbeddedHost) -> None:
        self._host = host
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._host.connections.add(conn)
        self._host.log(f"connection from {conn.get_extra_info('peername')}")

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._host.connections.discard(self._conn)

    def begin_auth(self, username: str) -> bool:
        # Keys are chosen per login: with scoped principals a certificate must name
        # USERNAME@HOST, as OpenSSH's AuthorizedPrincipalsCommand makes sshd ask.
        keys = self._host.client_keys(username)
        if self._conn is not None and keys is not None:
            self._conn.set_authorized_keys(keys)
        return True

    def auth_completed(self) -> None:
        self._host.log("authenticated")

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> bool:
        allowed = is_loopback(dest_host)
        self._host.log(f"direct-tcpip {dest_host}:{dest_port} {'ok' if allowed else 'refused'}")
        return allowed

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        return False


class EmbeddedHost:
    """One simulated host served in-process by asyncssh; same API as ``SshdHost``."""

    def __init__(
        self,
        name: str,
        directory: Path,
        gpus: int = 1,
        gpu_model: str = "H100",
        user_ca_pub: str | None = None,
        authorized_keys: Sequence[str] = (),
        port: int = 0,
        scoped_principals: bool = True,
    ) -> None:
        self.name = name
        self.scoped_principals = scoped_principals
        self.directory = Path(directory)
        self.files = HostDir(self.directory)
        self.gpus, self.gpu_model = gpus, gpu_model
        self.user_ca_pub = user_ca_pub
        self.authorized_keys = list(authorized_keys)
        self._port = port
        self._gpus_set = False
        self._thread: LoopThread | None = None
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self.connections: set[asyncssh.SSHServerConnection] = set()
        self._children: set[int] = set()
        self._sessions: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        return self._port

    @property
    def host_key_line(self) -> str:
        return self.files.host_key_line()

    @property
    def known_hosts_line(self) -> str:
        return known_hosts_line(self._port, self.host_key_line)

    @property
    def log_path(self) -> Path:
        return self.directory / "embedded.log"

    @property
    def gpu_state_path(self) -> Path:
        return self.files.gpu_state

    @property
    def running(self) -> bool:
        return self._acceptor is not None

    def log(self, line: str) -> None:
        with self.log_path.open("a") as f:
            f.write(f"{time.strftime('%H:%M:%S')} {line}\n")

    def authorize(self, key_line: str) -> None:
        """Trust one more client key, for connections accepted from now on."""
        self.files.authorize(key_line)
        if self._thread is not None and self._acceptor is not None:
            acceptor, keys = self._acceptor, self.client_keys()
            self._thread.call(lambda: acceptor.update(authorized_client_keys=keys))

    def set_gpus(self, gpus: Sequence[FakeGpu]) -> None:
        """Change what ``nvidia-smi`` reports from the next call on."""
        self.directory.mkdir(parents=True, exist_ok=True)
        write_state(self.files.gpu_state, gpus)
        self._gpus_set = True

    def start(self) -> EmbeddedHost:
        """Listen on 127.0.0.1; returns once the port is bound (raises ``SimHostError``)."""
        if self.running:
            return self
        # Fresh idle GPUs on first start, unless set_gpus came first; a restart keeps them.
        self.files.prepare(
            self.name,
            self.gpus,
            self.gpu_model,
            self.user_ca_pub,
            self.authorized_keys,
            reset_gpus=not self._gpus_set,
        )
        self._gpus_set = True
        thread = LoopThread(f"sim-{self.name}")
        thread.start()
        try:
            self._acceptor = thread.run(self._listen())
        except (OSError, asyncssh.Error) as exc:
            thread.stop()
            raise SimHostError(f"embedded host {self.name} did not start: {exc}") from exc
        self._thread = thread
        self._port = self._acceptor.get_port()
        self.log(f"listening on 127.0.0.1:{self._port}")
        return self

    def stop(self) -> None:
        """Close the listener and connections and kill every process sessions started."""
        thread, acceptor = self._thread, self._acceptor
        self._thread = self._acceptor = None
        if thread is None or acceptor is None:
            return
        try:
            thread.run(self._close(acceptor), timeout=15)
        finally:
            self._kill_children()  # again, in case closing failed part-way
            thread.stop()

    def __enter__(self) -> EmbeddedHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _host_key(self) -> asyncssh.SSHKey:
        path = self.files.host_key
        if path.exists():
            return asyncssh.read_private_key(str(path))
        key = asyncssh.generate_private_key("ssh-ed25519", comment=self.name)
        key.write_private_key(str(path))
        path.chmod(0o600)
        key.write_public_key(str(path.with_suffix(".pub")))
        return key

    def client_keys(self, username: str = "") -> asyncssh.SSHAuthorizedKeys | None:
        """Plain keys plus the CAs; None (nobody may log in) when there are neither.

        With scoped principals a certificate opens ``username`` only if it names
        ``username@NAME``; without a username (before any login) no CA is trusted.
        """
        lines = [line for line in self.files.authorized_keys.read_text().splitlines() if line]
        cas = [ca for ca in (self.user_ca_pub or "").splitlines() if ca.strip()]
        for ca in cas:
            if not self.scoped_principals:
                lines.append(f"cert-authority {ca.strip()}")
            elif username and '"' not in username and "," not in username:
                scoped = principals_for(username, self.name)
                lines.append(f'cert-authority,principals="{scoped}" {ca.strip()}')
        return asyncssh.import_authorized_keys("\n".join(lines) + "\n") if lines else None

    async def _listen(self) -> asyncssh.SSHAcceptor:
        return await asyncssh.listen(
            "127.0.0.1",
            self._port,
            server_factory=lambda: _Server(self),
            server_host_keys=[self._host_key()],
            authorized_client_keys=self.client_keys(),
            process_factory=self._session,
            sftp_factory=asyncssh.SFTPServer,
            allow_scp=True,
            encoding=None,
            line_editor=False,
            config=None,
            keepalive_interval=15,
            **ALGORITHMS,
        )

    async def _close(self, acceptor: asyncssh.SSHAcceptor) -> None:
        """Stop accepting, kill session processes, let their handlers finish, drop clients."""
        acceptor.close()
        self._kill_children()
        if self._sessions:
            await asyncio.wait(self._sessions, timeout=5)
        for conn in list(self.connections):
            conn.abort()
        await acceptor.wait_closed()

    def _kill_children(self) -> None:
        marker = str(self.files.gpu_state)
        procs.freeze_and_kill(
            lambda: (
                set(self._children)
                | {d for pid in self._children for d in procs.descendants(pid)}
                | procs.with_env("GPUHOP_FAKE_GPUS", marker)
            )
        )
        self._children.clear()

    async def _session(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        task.add_done_callback(self._sessions.discard)
        if process.subsystem:
            process.stderr.write(f"subsystem {process.subsystem} not supported\n".encode())
            process.exit(1)
            return
        user = process.get_extra_info("username") or getpass.getuser()
        env = {
            **self.files.session_env(),
            "USER": user,
            "LOGNAME": user,
            "SHELL": "/bin/sh",
            "LANG": "C.UTF-8",
        }
        term = process.get_terminal_type()
        command = process.command
        if command is not None:
            argv = ["/bin/sh", "-c", command]
        else:
            argv = ["/bin/sh", "-i"] if term else ["/bin/sh"]
        self.log(f"{'exec ' + command if command is not None else 'shell'} (pty={bool(term)})")
        run = run_in_pty if term else run_piped
        if term:
            env["TERM"] = term
        pids: list[int] = []

        def started(pid: int) -> None:
            pids.append(pid)
            self._children.add(pid)

        try:
            returncode = await run(process, argv, env, str(self.files.home), started)
        except OSError as exc:
            process.stderr.write(f"{exc}\n".encode())
            returncode = 127
        finally:
            self._children.difference_update(pids)  # reaped: the pid may be reused
        self.log(f"exit {returncode}")
        with contextlib.suppress(OSError, asyncssh.Error):
            report_exit(process, returncode)


def make_host(
    name: str,
    directory: Path,
    gpus: int = 1,
    gpu_model: str = "H100",
    user_ca_pub: str | None = None,
    authorized_keys: Sequence[str] = (),
    port: int = 0,
    scoped_principals: bool = True,
) -> SimHost:
    """An ``SshdHost`` where OpenSSH's sshd is installed, else an ``EmbeddedHost``."""
    if sshd_path() is not None:
        return SshdHost(
            name,
            directory,
            gpus,
            gpu_model,
            user_ca_pub,
            authorized_keys,
            port,
            scoped_principals=scoped_principals,
        )
    return EmbeddedHost(
        name,
        directory,
        gpus,
        gpu_model,
        user_ca_pub,
        authorized_keys,
        port,
        scoped_principals=scoped_principals,
    )
