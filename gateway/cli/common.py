"""What every ``gpuhop-gateway`` command shares: the ``--config`` option and one-line errors.

Every command maps a :class:`~gateway.errors.GatewayError` to one line on
stderr and its exit code; nothing prints a traceback for a bad input.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from gateway.config.loader import Settings, load_settings
from gateway.errors import GatewayError

F = TypeVar("F", bound=Callable[..., Any])


def config_option(*, required: bool = True) -> Callable[[F], F]:
    """``--config FILE`` (env ``GPUHOP_CONFIG``); optional where another option can stand in."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(path_type=Path, dir_okay=False),
        envvar="GPUHOP_CONFIG",
        required=required,
        help="Gateway config file (TOML). Env: GPUHOP_CONFIG.",
    )


CONFIG_OPTION = config_option()


def _fail(message: str, code: int) -> None:
    click.echo(f"gpuhop-gateway: error: {message}", err=True)
    sys.exit(code)


def one_line_errors(func: F) -> F:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except GatewayError as exc:
            _fail(str(exc), exc.exit_code)
        except OSError as exc:
            _fail(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "), 1)
        return None

    return wrapper  # type: ignore[return-value]


def load(config_path: Path) -> Settings:
    """The settings in ``config_path``, with logging set up as they say."""
    settings = load_settings(config_path)
    from gateway.adapters.logs import configure

    configure(settings.gateway.log_level, settings.gateway.log_format)
    return settings


def reload(pid: int | None) -> None:
    """Make gateway ``pid`` reload its config and keys (SIGHUP); nothing when ``pid`` is None."""
    if pid is not None:
        try:
            os.kill(pid, signal.SIGHUP)
        except OSError as exc:
            raise GatewayError(f"cannot signal gateway pid {pid}: {exc.strerror}") from None
