"""The ``gpuhop`` command surface: help everywhere, documented exit codes, usage errors."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from client.cli import COMMANDS as COMMANDS_TABLE
from client.cli import main
from client.tui.shell import ShellRequest, shell_command

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


@pytest.mark.parametrize("name", sorted(COMMANDS_TABLE))
def test_lazy_help_is_each_commands_own(name: str) -> None:
    """``gpuhop --help`` shows the table's line without importing; it must be the command's."""
    command = main.get_command(click.Context(main), name)
    assert command is not None and command.name == name
    stored = COMMANDS_TABLE[name][1]
    assert " ".join((command.help or "").split()).startswith(stored), (name, stored)
    assert stored in CliRunner().invoke(main, ["--help"], terminal_width=300).output


def test_help_imports_no_command() -> None:
    script = (
        "import sys\nfrom client.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = ('httpx', 'pydantic', 'rich', 'textual', 'docker', 'asyncssh', 'keyring')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy"
        " or m.startswith('client.commands')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout


def test_the_tuis_shell_argv_parses_with_the_lazy_groups_ssh_command() -> None:
    """The TUI runs ``gpuhop ssh --gpus N --env GPUHOP_ENV=E HOST`` without reading click's
    definition first; the real command (through the lazy group) takes it as meant."""
    argv = shell_command(ShellRequest("sg-1", "rita", gpus=2, env="base"), {}).argv
    assert argv[1:4] == ("-m", "client.cli", "ssh")
    command = main.get_command(click.Context(main), "ssh")
    assert command is not None
    ctx = command.make_context("ssh", list(argv[4:]))
    assert ctx.params["gpus"] == 2 and ctx.params["env"] == ("GPUHOP_ENV=base",)
    assert ctx.params["host"] == "sg-1" and ctx.params["command"] == ()
