"""The gateway's one exception tree.

    GatewayError
    ├── ConfigError          a config file or value is wrong (one line: file, key, problem)
    │   └── DirectoryError   an admin change to users, keys, roles, ... was refused
    │       ├── DirectoryInvalid    the change is malformed or names what does not exist
    │       ├── DirectoryNotFound   no such user, key, role, ... to change or remove
    │       ├── DirectoryConflict   it exists already, is still in use, or raced another change
    │       └── ConfigManaged       the entry comes from the config file: change it there
    ├── StorageError         the audit/storage backend failed
    │   └── ChainBroken      the audit hash chain does not verify
    ├── KeyMaterialError     a key or certificate cannot be read, made or used
    ├── PolicyDenied         a request was denied by policy (carries the reason)
    └── UpstreamError        a host could not be reached or misbehaved

Third-party errors are translated where they enter (the adapter); each edge maps
a ``GatewayError`` exactly once: the CLI to an exit code and one line, the SSH
front to a channel-open failure or disconnect reason.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""

    exit_code = 1


class ConfigError(GatewayError):
    """A config file or value is wrong."""

    exit_code = 2


class DirectoryError(ConfigError):
    """An admin change to the directory was refused; ``code`` is the API error code.

    Exit codes are those ``gpuhop admin`` gives the same refusal over the API
    (``client.errors``: 65 refused, 66 no such entry), so both admin CLIs agree.
    """

    code = "invalid_request"
    status = 422
    exit_code = 65


class DirectoryInvalid(DirectoryError):
    """The change is malformed, or refers to something that does not exist."""


class DirectoryNotFound(DirectoryError):
    """The user, key, role, team, data set, budget or host to change does not exist."""

    code = "not_found"
    status = 404
    exit_code = 66


class DirectoryConflict(DirectoryError):
    """The entry exists already, is still referred to, or another change won a race."""

    code = "conflict"
    status = 409


class ConfigManaged(DirectoryError):
    """The entry is declared in the config file; admin commands may not change it."""

    code = "config_managed"
    status = 409


class StorageError(GatewayError):
    """The storage backend failed."""

    exit_code = 3


class ChainBroken(StorageError):
    """The audit hash chain does not verify."""

    exit_code = 4

    def __init__(self, message: str, event_id: int | None = None) -> None:
        super().__init__(message)
        self.event_id = event_id


class KeyMaterialError(GatewayError):
    """A key or certificate cannot be read, generated or used."""

    exit_code = 5


class PolicyDenied(GatewayError):
    """Policy refused a request; ``reason`` is shown to the user and audited."""

    exit_code = 6

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UpstreamError(GatewayError):
    """A regional host could not be reached or misbehaved."""

    exit_code = 7
