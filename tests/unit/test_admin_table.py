"""Both admin CLIs come from one table: the same commands, arguments, options and help.

``gpuhop admin`` (client.admin, over the API) and ``gpuhop-gateway admin``
(gateway.cli.directory, on storage) are built from ``client.admintable``; the
gateway adds only ``--config``. A refusal exits with the same code on both.
"""

from __future__ import annotations

import subprocess
import sys
import typing

import click
import pytest

from client import admintable
from client.admin import admin as client_admin
from client.errors import AdminRefused, NotFound
from gateway.cli.directory import admin as gateway_admin
from gateway.config import changes
from gateway.errors import ConfigManaged, DirectoryConflict, DirectoryInvalid, DirectoryNotFound

PATHS = [c.path for c in admintable.commands()]


def _command(root: click.Group, path: tuple[str, str]) -> click.Command:
    group = root.commands[path[0]]
    assert isinstance(group, click.Group)
    return group.commands[path[1]]


def _shape(cmd: click.Command) -> list[tuple[object, ...]]:
    return [
        (
            type(p).__name__,
            p.name,
            tuple(p.opts),
            p.required,
            p.multiple,
            repr(p.type),
            p.default,
            getattr(p, "is_flag", None),
            getattr(p, "help", None),
        )
        for p in cmd.params
    ]


def _paths(root: click.Group) -> set[tuple[str, str]]:
    return {
        (g, c)
        for g, group in root.commands.items()
        if isinstance(group, click.Group)
        for c in group.commands
    }


def test_the_table_has_every_admin_command_once() -> None:
    assert len(PATHS) == len(set(PATHS)) == 22
    assert _paths(client_admin) == _paths(gateway_admin) == set(PATHS)


@pytest.mark.parametrize("path", PATHS, ids=" ".join)
def test_both_sides_take_the_same_arguments(path: tuple[str, str]) -> None:
    ours, theirs = _command(client_admin, path), _command(gateway_admin, path)
    config, *rest = _shape(theirs)
    assert config[1:3] == ("config_path", ("--config",))
    assert _shape(ours) == rest
    assert ours.help == theirs.help
    flags = [p for p in ours.params if isinstance(p, click.Option) and p.is_flag]
    assert all(p.default is False for p in flags)  # unset, a flag is False, not None
    assert client_admin.commands[path[0]].help == gateway_admin.commands[path[0]].help


def test_every_change_in_the_table_is_a_directory_change() -> None:
    events = {cls.event for cls in typing.get_args(changes.Change)}
    assert {c.change for c in admintable.commands() if c.change} == events
    listings = [c for c in admintable.commands() if not c.change]
    assert all(c.name == "ls" and c.columns for c in listings)


@pytest.mark.parametrize(
    ("gateway_error", "client_error"),
    [
        (DirectoryInvalid, AdminRefused),
        (DirectoryConflict, AdminRefused),
        (ConfigManaged, AdminRefused),
        (DirectoryNotFound, NotFound),
    ],
)
def test_a_refusal_exits_alike_on_both_sides(gateway_error: type, client_error: type) -> None:
    assert gateway_error.exit_code == client_error.exit_code


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: admintable.owner("", ""), "give exactly one of --user or --team"),
        (lambda: admintable.owner("a", "b"), "give exactly one of --user or --team"),
        (lambda: admintable.labels(["gpu"]), "--label wants KEY=VALUE, got 'gpu'"),
        (lambda: admintable.labels(["=x"]), "--label wants KEY=VALUE, got '=x'"),
    ],
)
def test_flag_checks_are_one_line(call: typing.Callable[[], object], message: str) -> None:
    with pytest.raises(admintable.FlagError) as caught:
        call()
    assert str(caught.value) == message


def test_flag_values_as_both_sides_send_them() -> None:
    assert admintable.owner("", "ml") == ("team", "ml")
    assert admintable.labels(["zone=a", "tier="]) == {"zone": "a", "tier": ""}
    assert admintable.forward_ports(["8080", "9000-9010"]) == [8080, "9000-9010"]


def test_the_client_side_imports_no_gateway_module() -> None:
    code = (
        "import sys, client.admin, client.admintable; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'gateway'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
