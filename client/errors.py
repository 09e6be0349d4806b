"""The client's one exception tree.

    ClientError                 exit 1 unless a subclass says otherwise
    ├── UsageError              bad flags or arguments (exit 2)
    ├── GatewayUnavailable      the gateway could not be reached (exit 69, EX_UNAVAILABLE)
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
    exit_code = 69


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
