"""The client's one exception tree.

    ClientError                 exit 1 unless a subclass says otherwise
    ├── UsageError              bad flags or arguments (exit 2)
    ├── GatewayUnavailable      the gateway could not be reached (exit 69, EX_UNAVAILABLE)
    ├── CredentialsError        no usable login (exit 78, EX_CONFIG)
    │   ├── NotLoggedIn         no token: run ``gpuhop login`` or set GPUHOP_GATEWAY/GPUHOP_TOKEN
    │   ├── NoKeyring           no OS keyring backend: use the environment variables
    │   └── TokenRejected       the gateway refused the token (expired, revoked, unknown)
    ├── HostNotFound            no such host, or none free in the region asked (exit 68, EX_NOHOST)
    ├── PolicyDenied            the gateway's policy refused the request (exit 77, EX_NOPERM)
    ├── AdminRefused            an admin change was refused: invalid, duplicate, in use or
    │                           declared in the gateway's config file (exit 65, EX_DATAERR)
    ├── NotFound                ``gpuhop admin``: no such user, key, role, ... (exit 66)
    ├── HostLost                the host could not be reached, or stopped answering (exit 75)
    ├── SendFailed              the work directory could not be sent (exit 74, EX_IOERR)
    ├── JobTimedOut             ``gpuhop run --timeout`` passed; the job was killed (exit 124)
    ├── RunInterrupted          SIGINT/SIGTERM; the job was killed (exit 128 + signal)
    └── EnvError                environments: build, sync, run (client/envs)
        ├── EnvNotFound         no such environment or image (exit 66)
        ├── EnvSpecError        malformed env.toml / devcontainer.json (exit 65)
        ├── DockerUnavailable   no Docker engine at that address (exit 69)
        ├── BuildFailed         a build step failed; names the step
        ├── SyncFailed          an image did not arrive intact; the old one stays
        ├── GpuRuntimeMissing   GPUs asked of an engine without the NVIDIA runtime
        └── JobCancelled        a container job was cancelled (exit 130)

The CLI maps each to one line on stderr and its exit code.
"""

from __future__ import annotations


class ClientError(Exception):
    exit_code = 1


class UsageError(ClientError):
    exit_code = 2


class GatewayUnavailable(ClientError):
    """The gateway's API or SSH front did not answer (exit 69, EX_UNAVAILABLE)."""

    exit_code = 69


class CredentialsError(ClientError):
    """No usable login: the one line says what to do (exit 78, EX_CONFIG)."""

    exit_code = 78


class NotLoggedIn(CredentialsError):
    """Neither a stored login nor GPUHOP_GATEWAY/GPUHOP_TOKEN."""


class NoKeyring(CredentialsError):
    """The OS has no keyring backend; CI and headless machines use the environment."""


class TokenRejected(CredentialsError):
    """The gateway answered 401: the token is unknown, expired or revoked."""


class HostNotFound(ClientError):
    """No such host, or no allowed host with free GPUs where asked (exit 68, EX_NOHOST)."""

    exit_code = 68


class PolicyDenied(ClientError):
    """The gateway's policy refused the request (exit 77, EX_NOPERM)."""

    exit_code = 77


class AdminRefused(ClientError):
    """The gateway refused an admin change; the line says why (exit 65, EX_DATAERR)."""

    exit_code = 65


class NotFound(ClientError):
    """``gpuhop admin``: the user, key, role, team, ... does not exist (exit 66, EX_NOINPUT)."""

    exit_code = 66


class HostLost(ClientError):
    """The host could not be reached, or the link to it went silent mid-job (exit 75).

    EX_TEMPFAIL: retrying later, or elsewhere, may work.
    """

    exit_code = 75


class SendFailed(ClientError):
    """The work directory could not be read or unpacked on the host (exit 74, EX_IOERR)."""

    exit_code = 74


class JobTimedOut(ClientError):
    """``gpuhop run --timeout`` passed; the job's processes were killed (exit 124)."""

    exit_code = 124


class RunInterrupted(ClientError):
    """SIGINT or SIGTERM stopped ``gpuhop run``; the job was killed (exit 128 + signal)."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


class EnvError(ClientError):
    """An environment (images/<name>) could not be built, synced or run."""


class EnvNotFound(EnvError):
    """No such environment directory, devcontainer or built image (exit 66, EX_NOINPUT)."""

    exit_code = 66


class EnvSpecError(EnvError):
    """An environment's files are malformed (exit 65, EX_DATAERR)."""

    exit_code = 65


class DockerUnavailable(EnvError):
    """No Docker engine answered at the address given (exit 69, EX_UNAVAILABLE)."""

    exit_code = 69


class BuildFailed(EnvError):
    """``docker build`` failed; the message names the failing step."""


class SyncFailed(EnvError):
    """An image did not arrive intact on a host; the host keeps its previous image."""


class GpuRuntimeMissing(EnvError):
    """GPUs were asked for on an engine without the NVIDIA container runtime."""


class JobCancelled(EnvError):
    """A container job was cancelled; its container was removed (exit 130)."""

    exit_code = 130
