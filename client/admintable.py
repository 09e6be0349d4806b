"""The admin command table: every ``admin`` command once, for both CLIs built from it.

``gpuhop admin …`` (client.admin, over the API) and ``gpuhop-gateway admin …``
(gateway.cli.directory, straight on storage) are both made by :func:`build`
from :data:`TABLE`, so a command, its arguments, options and help exist on
both sides or on neither. Each entry names the directory change it makes by
its audit event (``admin.user.add``: ``gateway.config.changes``) or the
listing it prints; each side supplies one handler per command path.

Pure (click and the standard library only) so the client, which never imports
the gateway, owns it, and the gateway may import it (as it does
``client.durations``). Bad flags the table can see are :class:`FlagError`
here; each side turns them into its usage error (exit 2, one line).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

Handler = Callable[..., None]


class FlagError(ValueError):
    """A flag's value is wrong (one line); each CLI shows it as its usage error."""


Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


@dataclass(frozen=True, slots=True)
class Arg:
    """A positional argument, given as its parameter name (shown upper-case)."""

    name: str


@dataclass(frozen=True, slots=True)
class Opt:
    """An option: ``--flag`` stored as ``dest``."""

    flag: str
    dest: str
    help: str = ""
    type: click.ParamType[Any] | None = None
    default: Any = None
    multiple: bool = False
    required: bool = False
    is_flag: bool = False
    show_default: bool = False


@dataclass(frozen=True, slots=True)
class Command:
    """One ``admin GROUP NAME`` command: the change it makes, or the listing it prints."""

    group: str
    name: str
    help: str
    params: tuple[Arg | Opt, ...] = ()
    change: str = ""  # the audit event of the change, "" for a listing
    columns: tuple[str, ...] = ()  # a listing's table header

    @property
    def path(self) -> tuple[str, str]:
        return (self.group, self.name)


@dataclass(frozen=True, slots=True)
class Group:
    name: str
    help: str
    commands: tuple[Command, ...] = field(default=())


JSON = Opt("--json", "as_json", "A JSON list, for scripts.", is_flag=True)
NON_NEGATIVE = click.IntRange(min=0)
MONEY = click.FloatRange(min=0)
OWNER = (
    Opt("--user", "user", "The user it limits...", default=""),
    Opt("--team", "team", "...or the team.", default=""),
)


def _ls(group: str, help: str, columns: tuple[str, ...]) -> Command:
    return Command(group, "ls", help, (JSON,), columns=columns)


USERS = Group(
    "users",
    "Users: ls, add, rm.",
    (
        _ls(
            "users",
            "Every user, with team, roles, keys and source.",
            ("USER", "TEAM", "ROLES", "KEYS", "SOURCE"),
        ),
        Command(
            "users",
            "add",
            "Add user NAME; with --key they can log in through the gateway at once.",
            (
                Arg("name"),
                Opt("--team", "team", "A declared team (`admin teams ls`).", default=""),
                Opt("--role", "roles", "Role to grant; repeatable.", multiple=True),
                Opt("--key", "keys", "Public key line or .pub file; repeatable.", multiple=True),
            ),
            change="admin.user.add",
        ),
        Command(
            "users",
            "rm",
            "Remove user NAME with their keys and roles; their open sessions end.",
            (Arg("name"),),
            change="admin.user.remove",
        ),
    ),
)

KEYS = Group(
    "keys",
    "Users' SSH public keys: add, rm.",
    (
        Command(
            "keys",
            "add",
            "Register KEY (a public key line, or a .pub file) to USER.",
            (Arg("user"), Arg("key")),
            change="admin.key.add",
        ),
        Command(
            "keys",
            "rm",
            "Unregister KEY (SHA256:... fingerprint, key line or .pub file) from USER.",
            (Arg("user"), Arg("key")),
            change="admin.key.remove",
        ),
    ),
)

ROLES = Group(
    "roles",
    "Roles: ls, add, rm, grant, revoke.",
    (
        _ls(
            "roles",
            "Every role, what it grants and who holds it.",
            ("ROLE", "HOSTS", "ACCOUNTS", "MODES", "USERS", "SOURCE"),
        ),
        Command(
            "roles",
            "add",
            "Add role NAME, as a [[roles]] entry in the gateway's config would.",
            (
                Arg("name"),
                Opt(
                    "--hosts",
                    "hosts",
                    "Host selector: '*', name:HOST, region:REGION, label:K=V; repeatable.",
                    multiple=True,
                    required=True,
                ),
                Opt(
                    "--account", "accounts", "Remote account ('*' any); repeatable.", multiple=True
                ),
                Opt(
                    "--mode", "modes", type=click.Choice(["passthrough", "recorded"]), multiple=True
                ),
                Opt("--max-gpus", "max_gpus", "0: no limit.", type=NON_NEGATIVE, default=0),
                Opt(
                    "--forwarding",
                    "forwarding",
                    "Allow editor port forwards (needs --forward-port).",
                    is_flag=True,
                ),
                Opt(
                    "--forward-port",
                    "forward_ports",
                    "Port or LOW-HIGH range; repeatable.",
                    multiple=True,
                ),
                Opt(
                    "--agent-forwarding",
                    "agent_forwarding",
                    "Allow ssh -A (relayed per session, audited).",
                    is_flag=True,
                ),
                Opt(
                    "--remote-forwarding",
                    "remote_forwarding",
                    "Allow ssh -R on the forward ports.",
                    is_flag=True,
                ),
            ),
            change="admin.role.add",
        ),
        Command(
            "roles",
            "rm",
            "Remove role NAME (refused while anyone holds it).",
            (Arg("name"),),
            change="admin.role.remove",
        ),
        Command(
            "roles",
            "grant",
            "Grant ROLE to USER (applies to their next session).",
            (Arg("user"), Arg("role")),
            change="admin.role.grant",
        ),
        Command(
            "roles",
            "revoke",
            "Revoke ROLE from USER (sessions only it allowed end).",
            (Arg("user"), Arg("role")),
            change="admin.role.revoke",
        ),
    ),
)

TEAMS = Group(
    "teams",
    "Teams: ls, add, rm.",
    (
        _ls("teams", "Every team and its members.", ("TEAM", "MEMBERS", "SOURCE")),
        Command("teams", "add", "Declare team NAME.", (Arg("name"),), change="admin.team.add"),
        Command(
            "teams",
            "rm",
            "Remove team NAME (refused while it has members or a budget).",
            (Arg("name"),),
            change="admin.team.remove",
        ),
    ),
)

DATASETS = Group(
    "datasets",
    "Data sets and where they may be processed: ls, add, rm.",
    (
        _ls(
            "datasets",
            "Every data set and where it may be processed.",
            ("DATASET", "REGIONS", "COUNTRIES", "SOURCE"),
        ),
        Command(
            "datasets",
            "add",
            "Declare data set NAME; `gpuhop run --data NAME` then runs only where it may.",
            (
                Arg("name"),
                Opt("--region", "regions", "Region it may be processed in.", multiple=True),
                Opt("--country", "countries", "Country (ISO alpha-2) likewise.", multiple=True),
            ),
            change="admin.dataset.add",
        ),
        Command(
            "datasets", "rm", "Remove data set NAME.", (Arg("name"),), change="admin.dataset.remove"
        ),
    ),
)

BUDGETS = Group(
    "budgets",
    "Spending limits per user or team: ls, set, rm.",
    (
        _ls("budgets", "Every budget.", ("OWNER", "DAILY", "MONTHLY", "SOURCE")),
        Command(
            "budgets",
            "set",
            "Set (or replace) the limits of one user or one team.",
            (
                *OWNER,
                Opt("--daily", "daily", "USD per UTC day.", type=MONEY),
                Opt("--monthly", "monthly", "USD per UTC month.", type=MONEY),
            ),
            change="admin.budget.set",
        ),
        Command(
            "budgets",
            "rm",
            "Remove the limits of one user or one team.",
            OWNER,
            change="admin.budget.remove",
        ),
    ),
)

HOSTS = Group(
    "hosts",
    "Hosts: ls, add (host key fetched and confirmed, or pinned), rm.",
    (
        _ls(
            "hosts",
            "Every host, where it is and its source.",
            ("HOST", "REGION", "ADDRESS", "SOURCE"),
        ),
        Command(
            "hosts",
            "add",
            "Add host NAME behind the gateway.\n\n"
            "Without --host-key the gateway fetches the key the host presents; it is\n"
            "pinned when it matches --fingerprint, with --yes, or once you confirm it\n"
            "(compare with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the host).",
            (
                Arg("name"),
                Opt("--region", "region", required=True),
                Opt("--address", "address", "Where the gateway connects.", required=True),
                Opt("--port", "port", type=click.IntRange(1, 65535), default=22, show_default=True),
                Opt(
                    "--host-key",
                    "host_key",
                    "Pin this key line (the host is not contacted).",
                    default="",
                ),
                Opt(
                    "--fingerprint", "fingerprint", "SHA256:... the host must present.", default=""
                ),
                Opt("--yes", "yes", "Pin whatever key the host presents now.", is_flag=True),
                Opt("--gpu-model", "gpu_model", default=""),
                Opt("--gpu-count", "gpu_count", type=NON_NEGATIVE, default=0),
                Opt("--price", "price_per_gpu_hour", "Per GPU-hour.", type=MONEY, default=0.0),
                Opt("--egress", "egress_per_gb", "Per GB out.", type=MONEY, default=0.0),
                Opt("--label", "labels", "KEY=VALUE; repeatable.", multiple=True),
            ),
            change="admin.host.add",
        ),
        Command(
            "hosts",
            "rm",
            "Remove host NAME (refused while a role names it); sessions on it end.",
            (Arg("name"),),
            change="admin.host.remove",
        ),
    ),
)

TABLE: tuple[Group, ...] = (USERS, KEYS, ROLES, TEAMS, DATASETS, BUDGETS, HOSTS)
ADMIN_HELP = "Users, keys, roles, teams, data sets, budgets and hosts of the gateway's directory."


def commands() -> list[Command]:
    """Every command of the table, in order."""
    return [c for g in TABLE for c in g.commands]


def _param(p: Arg | Opt) -> click.Parameter:
    if isinstance(p, Arg):
        return click.Argument([p.name])
    return click.Option(
        [p.flag, p.dest],
        help=p.help or None,
        type=p.type,
        default=False if p.is_flag and p.default is None else p.default,
        multiple=p.multiple,
        required=p.required,
        is_flag=p.is_flag,
        show_default=p.show_default,
    )


def flag_errors_as(error: Callable[[str], Exception]) -> Decorator:
    """Wrap a handler so that a :class:`FlagError` is raised again as ``error(message)``."""

    def wrap(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def checked(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            except FlagError as exc:
                raise error(str(exc)) from None

        return checked

    return wrap


def build(
    help: str,
    handlers: Mapping[tuple[str, str], Handler],
    common: Sequence[click.Parameter] = (),
    wrap: Decorator = lambda f: f,
) -> click.Group:
    """The ``admin`` group: each table command runs ``wrap(handlers[path])``.

    ``common`` parameters (the gateway's ``--config``) come first on every
    command; a handler missing for a path is a KeyError at build time.
    """
    admin = click.Group("admin", help=help)
    for g in TABLE:
        group = click.Group(g.name, help=g.help)
        for c in g.commands:
            params = [*common, *(_param(p) for p in c.params)]
            group.add_command(
                click.Command(c.name, callback=wrap(handlers[c.path]), params=params, help=c.help)
            )
        admin.add_command(group)
    return admin


# -- what both sides make of the flags ---------------------------------------------------


def key_text(value: str) -> str:
    """A public key line, or the contents of the ``.pub`` file named instead."""
    path = Path(value).expanduser()
    if "\n" not in value and len(value) < 4096 and path.is_file():
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise FlagError(f"{path}: cannot read: {exc.strerror}") from None
    return value.strip()


def owner(user: str, team: str) -> tuple[str, str]:
    """``("user", NAME)`` or ``("team", NAME)``: exactly one of --user, --team."""
    if bool(user) == bool(team):
        raise FlagError("give exactly one of --user or --team")
    return ("user", user) if user else ("team", team)


def labels(pairs: Sequence[str]) -> dict[str, str]:
    """``--label KEY=VALUE`` pairs as a mapping."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise FlagError(f"--label wants KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def forward_ports(values: Sequence[str]) -> list[int | str]:
    """``--forward-port`` values: a port number, or a ``LOW-HIGH`` range left as text."""
    return [int(p) if p.strip().isdigit() else p for p in values]


def role_spec(flags: Mapping[str, Any]) -> dict[str, Any]:
    """``roles add`` flags as a ``[[roles]]`` entry (the API's body, the gateway's RoleConfig)."""
    spec: dict[str, Any] = {
        "name": flags["name"],
        "hosts": list(flags["hosts"]),
        "accounts": list(flags["accounts"]),
        "max_gpus": flags["max_gpus"],
        "forwarding": flags["forwarding"],
        "forward_ports": forward_ports(flags["forward_ports"]),
        "agent_forwarding": flags["agent_forwarding"],
        "remote_forwarding": flags["remote_forwarding"],
    }
    if flags["modes"]:
        spec["modes"] = list(flags["modes"])
    return spec


def money(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def render(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A listing as aligned columns."""
    all_rows = [list(header), *(list(r) for r in rows)]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(header))]
    for r in all_rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
