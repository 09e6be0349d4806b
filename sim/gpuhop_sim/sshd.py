"""A simulated GPU host: a real OpenSSH ``sshd`` on a loopback port.

Each host runs ``sshd -D -e -f <dir>/sshd_config`` as its own process with its
own host key, authorized keys and/or trusted user CA, and puts the fake
``nvidia-smi`` first on its sessions' PATH. ``stop()`` ends the server *and*
every session it started, so nothing outlives a test.

    with SshdHost("sg-1", tmp_path / "sg-1", gpus=2, gpu_model="H100",
                  user_ca_pub=ca_line) as host:
        ...  # ssh -p host.port root@127.0.0.1 nvidia-smi -L
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from gpuhop_sim import procs
from gpuhop_sim.gpustate import FakeGpu, write_state
from gpuhop_sim.host import HostDir, SimHostError, known_hosts_line
from gpuhop_sim.keys import run_keygen
from gpuhop_sim.ports import free_loopback_port, wait_for_banner

START_TIMEOUT = 10.0
_PORT_ATTEMPTS = 5
# Options newer OpenSSH releases know; each is kept only if this sshd accepts it.
# PerSourcePenalties (9.8+) would otherwise lock 127.0.0.1 out after tests that
# fail authentication on purpose.
_OPTIONAL = ("PerSourcePenalties no",)
_accepted_optional: dict[str, tuple[str, ...]] = {}
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def sshd_path() -> str | None:
    """The OpenSSH server binary (sshd needs an absolute path to re-exec), if installed."""
    for candidate in (shutil.which("sshd"), "/usr/sbin/sshd", "/usr/local/sbin/sshd"):
        if candidate and os.path.isabs(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _quote(value: object) -> str:
    """Quote one sshd_config argument (paths may hold spaces)."""
    text = str(value)
    if '"' in text or "\n" in text:
        raise SimHostError(f"cannot put {text!r} in sshd_config")
    return f'"{text}"'


def _ensure_privsep_dir() -> None:
    """sshd refuses to start without its privilege-separation directory."""
    with contextlib.suppress(OSError):
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)


class SshdHost:
    """One simulated host served by OpenSSH; see the module docstring."""

    def __init__(
        self,
        name: str,
        directory: Path,
        gpus: int = 1,
        gpu_model: str = "H100",
        user_ca_pub: str | None = None,
        authorized_keys: Sequence[str] = (),
        port: int = 0,
        extra_env: Mapping[str, str] | None = None,
        extra_config: Sequence[str] = (),
        scoped_principals: bool = True,
    ) -> None:
        self.name = name
        self.directory = Path(directory)
        self.files = HostDir(self.directory)
        self.gpus, self.gpu_model = gpus, gpu_model
        self.user_ca_pub = user_ca_pub
        self.authorized_keys = list(authorized_keys)
        self.extra_env = dict(extra_env or {})  # more session variables, e.g. DOCKER_HOST
        self.extra_config = list(extra_config)  # more sshd_config lines, e.g. HostCertificate
        # A certificate opens ACCOUNT here only with the principal ACCOUNT@NAME (docs/hosts.md).
        self.scoped_principals = scoped_principals
        self._want_port = port
        self._port = port
        self._gpus_set = False
        self._proc: subprocess.Popen[bytes] | None = None

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
        return self.directory / "sshd.log"

    @property
    def config_path(self) -> Path:
        return self.directory / "sshd_config"

    @property
    def gpu_state_path(self) -> Path:
        return self.files.gpu_state

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def authorize(self, key_line: str) -> None:
        """Trust one more client key (sshd reads the file at each login)."""
        self.files.authorize(key_line)

    def set_gpus(self, gpus: Sequence[FakeGpu]) -> None:
        """Change what ``nvidia-smi`` reports from the next call on."""
        self.directory.mkdir(parents=True, exist_ok=True)
        write_state(self.files.gpu_state, gpus)
        self._gpus_set = True

    def start(self) -> SshdHost:
        """Start sshd; returns once it greets with an SSH banner (raises ``SimHostError``)."""
        if self.running:
            return self
        sshd = sshd_path()
        if sshd is None:
            raise SimHostError("OpenSSH sshd is not installed")
        _ensure_privsep_dir()
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
        self._make_host_key()
        attempts = 1 if self._want_port else _PORT_ATTEMPTS
        log, port = "", self._want_port
        for _ in range(attempts):
            port = self._want_port or free_loopback_port()
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            if self._try_start(sshd, port):
                return self
            log = self._log_since(offset)
            if "Address already in use" not in log:
                break  # only a lost race for the port is worth another try
        tail = "\n".join(log.splitlines()[-20:])
        raise SimHostError(f"sshd for {self.name} did not start on 127.0.0.1:{port}:\n{tail}")

    def _try_start(self, sshd: str, port: int) -> bool:
        self._write_config(sshd, port)
        proc = self._launch(sshd)
        if wait_for_banner(
            "127.0.0.1", port, timeout=START_TIMEOUT, alive=lambda: proc.poll() is None
        ):
            # A restarted host comes back on the same port, as a real one would.
            self._proc, self._port, self._want_port = proc, port, port
            return True
        self._end(proc)
        return False

    def stop(self) -> None:
        """End sshd and every session process it started (no orphans remain)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            self._end(proc)
        with contextlib.suppress(FileNotFoundError):
            (self.directory / "sshd.pid").unlink()

    def __enter__(self) -> SshdHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _make_host_key(self) -> None:
        """Generate once; a restarted host keeps its key, as a real one does."""
        if self.files.host_key.exists():
            return
        run_keygen("-t", "ed25519", "-N", "", "-C", self.name, "-f", str(self.files.host_key))

    def _config(self, port: int, optional: Sequence[str]) -> str:
        variables = {**self.files.session_env(), **self.extra_env}
        env = " ".join(_quote(f"{k}={v}") for k, v in variables.items())
        lines = [
            "ListenAddress 127.0.0.1",
            f"Port {port}",
            f"HostKey {_quote(self.files.host_key)}",
            f"PidFile {_quote(self.directory / 'sshd.pid')}",
            f"AuthorizedKeysFile {_quote(self.files.authorized_keys)}",
            "UsePAM no",
            "StrictModes no",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "MaxStartups 500:30:1000",
            "MaxSessions 1000",
            "Subsystem sftp internal-sftp",
            "AllowTcpForwarding yes",
            "ClientAliveInterval 15",
            "ClientAliveCountMax 4",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            "LogLevel VERBOSE",
            # What a gpuhop host needs: leased GPUs reach the session as environment.
            "AcceptEnv LANG LC_* CUDA_VISIBLE_DEVICES CUDA_DEVICE_ORDER GPUHOP_*",
            f"SetEnv {env}",
            *optional,
            *self.extra_config,
        ]
        lines.append(f"RevokedKeys {_quote(self.files.revoked_keys)}")
        if self.user_ca_pub is not None:
            lines.append(f"TrustedUserCAKeys {_quote(self.files.user_ca)}")
            if self.scoped_principals:
                if not _SAFE_NAME.fullmatch(self.name):
                    raise SimHostError(f"host name {self.name!r} cannot name principals")
                lines += [
                    f"AuthorizedPrincipalsCommand /bin/echo %u@{self.name}",
                    "AuthorizedPrincipalsCommandUser nobody",
                ]
        return "\n".join(lines) + "\n"

    def _write_config(self, sshd: str, port: int) -> None:
        if sshd not in _accepted_optional:
            kept = tuple(o for o in _OPTIONAL if self._config_ok(sshd, port, (o,)))
            _accepted_optional[sshd] = kept
        self.config_path.write_text(self._config(port, _accepted_optional[sshd]))

    def _config_ok(self, sshd: str, port: int, optional: Sequence[str]) -> bool:
        self.config_path.write_text(self._config(port, optional))
        test = subprocess.run(
            [sshd, "-t", "-f", str(self.config_path)], capture_output=True, timeout=10
        )
        return test.returncode == 0

    def _launch(self, sshd: str) -> subprocess.Popen[bytes]:
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                [sshd, "-D", "-e", "-f", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _end(self, proc: subprocess.Popen[bytes]) -> None:
        marker = self.files.session_env()["GPUHOP_FAKE_GPUS"]
        if proc.poll() is None:
            # A stopped listener forks no new sessions while its tree is collected.
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGSTOP)
        procs.freeze_and_kill(
            lambda: procs.descendants(proc.pid) | procs.with_env("GPUHOP_FAKE_GPUS", marker)
        )
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
                os.kill(proc.pid, signal.SIGCONT)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def _log_since(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""
