"""The ``gpuhop`` command surface: help everywhere, documented exit codes, usage errors."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from client.cli import main

COMMANDS = ["login", "logout", "hosts", "ssh", "ssh-config", "run", "demo"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output


def test_run_help_documents_every_exit_code() -> None:
    result = CliRunner().invoke(main, ["run", "-h"])
    for code in ("68", "69", "74", "75", "77", "78", "124", "130", "128+N"):
        assert code in result.output, code


def test_run_needs_a_command() -> None:
    result = CliRunner().invoke(main, ["run", "--host", "sg-1"])
    assert result.exit_code == 2


@pytest.mark.parametrize(
    "args",
    [
        ["run", "--host", "a", "--region", "b", "--", "true"],
        ["run", "--host", "a", "--timeout", "soon", "--", "true"],
        ["run", "--host", "a", "-e", "1BAD=x", "--", "true"],
        ["run", "--host", "a", "-e", "NOEQUALS", "--", "true"],
    ],
)
def test_usage_errors_are_exit_2_and_one_line(args: list[str]) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("gpuhop: ") and result.output.count("\n") == 1


def test_not_logged_in_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    import keyring.core

    monkeypatch.setattr(keyring.core, "_keyring_backend", None)
    result = CliRunner().invoke(main, ["hosts"])
    assert result.exit_code == 78
    assert result.output.count("\n") == 1 and "GPUHOP_TOKEN" in result.output
