"""The client's one exception tree.

    ClientError                 exit 1 unless a subclass says otherwise
    ├── UsageError              bad flags or arguments (exit 2)
    └── GatewayUnavailable      the gateway could not be reached (exit 69, EX_UNAVAILABLE)

The CLI maps each to one line on stderr and its exit code.
"""

from __future__ import annotations


class ClientError(Exception):
    exit_code = 1


class UsageError(ClientError):
    exit_code = 2


class GatewayUnavailable(ClientError):
    exit_code = 69
