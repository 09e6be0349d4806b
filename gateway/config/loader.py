"""Gateway configuration: one TOML file, loaded once at start-up and passed down.

The file has a ``[gateway]`` table (listeners, key files, limits:
``gateway.config.process``) and the directory tables ``[[regions]]``,
``[[hosts]]``, ``[[roles]]`` and ``[[users]]`` (``gateway.config.directory``).
Any ``[gateway]`` field can be overridden from the environment as
``GPUHOP_GATEWAY__<FIELD>`` (e.g. ``GPUHOP_GATEWAY__SSH_PORT=2300``); the
directory tables cannot, because a half-overridden list of hosts is a trap.
``GPUHOP_GATEWAY__`` is the gateway's whole namespace: the bare
``GPUHOP_GATEWAY`` (and every other ``GPUHOP_*`` name) belongs to the client,
which reads ``GPUHOP_GATEWAY`` as the API's URL, so one shell may export both.

Everything is validated here so that a mistake stops start-up with one line
naming the file, the key and the problem (``ConfigError``), instead of
surfacing as a refused connection later. Relative paths, including a relative
SQLite database, are resolved against the config file's directory so the
gateway behaves the same whatever directory it is started from.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, Field, SecretStr, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from gateway.config.directory import (
    BudgetConfig,
    DatasetConfig,
    HostConfig,
    RegionConfig,
    RoleConfig,
    UserConfig,
)
from gateway.config.fields import COUNTRY, fail
from gateway.config.process import GatewaySettings
from gateway.domain.inventory.hosts import Inventory
from gateway.domain.inventory.keys import parse_public_key
from gateway.domain.models import Region
from gateway.errors import ConfigError

ENV_PREFIX = "GPUHOP_"


class _GatewayEnvSource(EnvSettingsSource):
    """Environment overrides for ``[gateway]`` only, from ``GPUHOP_GATEWAY__<FIELD>``."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        # Never the bare GPUHOP_GATEWAY (the client's URL): no value here makes
        # prepare_field_value gather the nested GPUHOP_GATEWAY__* names only.
        return None, field_name, field_name == "gateway"

    def prepare_field_value(
        self, field_name: str, field: FieldInfo, value: Any, value_is_complex: bool
    ) -> Any:
        if field_name != "gateway":
            return None
        return super().prepare_field_value(field_name, field, value, value_is_complex)


class Settings(BaseSettings):
    """The whole config file. Build it with ``load_settings``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
    )

    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    """The ``[gateway]`` table."""
    regions: tuple[RegionConfig, ...] = ()
    """The ``[[regions]]`` tables."""
    hosts: tuple[HostConfig, ...] = ()
    """The ``[[hosts]]`` tables."""
    roles: tuple[RoleConfig, ...] = ()
    """The ``[[roles]]`` tables."""
    users: tuple[UserConfig, ...] = ()
    """The ``[[users]]`` tables."""
    datasets: tuple[DatasetConfig, ...] = ()
    """The ``[[datasets]]`` tables: where each data set may be processed."""
    budgets: tuple[BudgetConfig, ...] = ()
    """The ``[[budgets]]`` tables: spending limits per user or team."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first: it overrides the file.
        return _GatewayEnvSource(settings_cls), init_settings

    @model_validator(mode="after")
    def _references_exist(self) -> Settings:
        _check_references(self)
        return self

    def inventory(self) -> Inventory:
        """The frozen domain inventory this config declares."""
        countries = {r.name: r.country for r in self.regions}
        return Inventory(
            hosts=tuple(h.to_host(countries[h.region]) for h in self.hosts),
            regions=tuple(Region(r.name, r.country, r.display) for r in self.regions),
            roles=tuple(r.to_role() for r in self.roles),
            users=tuple(u.to_user() for u in self.users),
        )

    def resolved(self, base: Path) -> Settings:
        """A copy with relative paths (and a relative SQLite file) made absolute under ``base``."""
        gw = self.gateway
        update: dict[str, object] = {
            name: _under(base, getattr(gw, name))
            for name in (
                "host_key",
                "user_ca_key",
                "host_ca_key",
                "upstream_key",
                "audit_checkpoint_key",
                "audit_anchor_file",
                "upstream_ca_key",
                "recordings_dir",
            )
        }
        if gw.catalog is not None:
            update["catalog"] = _under(base, gw.catalog)
        update["storage_url"] = SecretStr(_sqlite_under(base, gw.storage_url.get_secret_value()))
        return self.model_copy(update={"gateway": gw.model_copy(update=update)})


def _under(base: Path, path: Path) -> Path:
    path = path.expanduser()
    return path if path.is_absolute() else base / path


def _sqlite_under(base: Path, url: str) -> str:
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return url
    file, sep, query = url.removeprefix(prefix).partition("?")
    if not file or file == ":memory:" or file.startswith("/"):
        return url
    return f"{prefix}{_under(base, Path(file))}{sep}{query}"


def _check_references(s: Settings) -> None:
    """Unique names and references that resolve; each failure names its key path."""
    regions = _unique("regions", [r.name for r in s.regions])
    hosts = _unique("hosts", [h.name for h in s.hosts])
    roles = _unique("roles", [r.name for r in s.roles])
    _unique("users", [u.name for u in s.users])
    listeners = {(s.gateway.ssh_host, s.gateway.ssh_port), (s.gateway.api_host, s.gateway.api_port)}
    endpoints: dict[tuple[str, int], int] = {}
    for i, host in enumerate(s.hosts):
        if host.region not in regions:
            fail(f"hosts[{i}].region", f"unknown region {host.region!r}{_declared(regions)}")
        endpoint = (host.address, host.port)
        if endpoint in listeners:
            fail(f"hosts[{i}].port", f"{host.address}:{host.port} is the gateway's own listener")
        if endpoint in endpoints:
            fail(f"hosts[{i}].port", f"same address and port as hosts[{endpoints[endpoint]}]")
        endpoints[endpoint] = i
        for j, token in enumerate(host.residency):
            if not COUNTRY.fullmatch(token) and token not in regions:
                fail(f"hosts[{i}].residency[{j}]", f"unknown region {token!r}{_declared(regions)}")
    for i, role in enumerate(s.roles):
        for j, selector in enumerate(role.hosts):
            kind, sep, value = selector.partition(":")
            if not sep and selector != "*":
                kind, value = "name", selector
            known = {"name": hosts, "region": regions}.get(kind)
            if known is not None and value not in known:
                fail(f"roles[{i}].hosts[{j}]", f"unknown {_NOUN[kind]} {value!r}{_declared(known)}")
    owners: dict[bytes, str] = {}
    for i, user in enumerate(s.users):
        for j, role_name in enumerate(user.roles):
            if role_name not in roles:
                fail(f"users[{i}].roles[{j}]", f"unknown role {role_name!r}{_declared(roles)}")
        for j, line in enumerate(user.keys):
            blob = parse_public_key(line).blob
            if blob in owners:
                fail(f"users[{i}].keys[{j}]", f"key is already registered to user {owners[blob]}")
            owners[blob] = user.name


_NOUN = {"name": "host", "region": "region"}


def _unique(table: str, names: list[str]) -> set[str]:
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            fail(f"{table}[{i}].name", f"duplicate name {name!r} (also {table}[{seen[name]}])")
        seen[name] = i
    return set(names)


def _declared(names: set[str]) -> str:
    return f" (declared: {', '.join(sorted(names))})" if names else " (none declared)"


def load_settings(path: Path) -> Settings:
    """Read and validate the TOML config at ``path``; raise ConfigError with one line otherwise.

    Environment overrides (``GPUHOP_GATEWAY__*``) are applied, then relative
    paths are resolved against the file's directory.
    """
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {_toml_problem(exc)}") from None
    unknown = sorted(set(data) - set(Settings.model_fields))
    if unknown:
        raise ConfigError(f"{path}: {unknown[0]}: {_unknown_key(unknown[0], Settings)}")
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}") from None
    except SettingsError as exc:
        raise ConfigError(f"{path}: environment: {_one_line(str(exc))}") from None
    return settings.resolved(path.absolute().parent)


_TOML_WHERE = re.compile(
    r"(?P<msg>.*) \((?:at line (?P<line>\d+), column \d+|at end of document)\)"
)


def _toml_problem(exc: tomllib.TOMLDecodeError) -> str:
    text = _one_line(str(exc))
    found = _TOML_WHERE.fullmatch(text)
    if found is None:
        return f"invalid TOML: {text}"
    where = f"line {found['line']}" if found["line"] else "end of file"
    return f"{where}: {found['msg']}"


def _describe(exc: ValidationError) -> str:
    """``key.path: problem`` for the first error, counting the rest on the same line."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = tuple(first["loc"])
    ctx = first.get("ctx") or {}
    where = _key_path(loc)
    if "key" in ctx:
        key = str(ctx["key"])
        where = f"{where}.{key}" if where else key
    env = _env_source(loc)
    if env:
        where += f" (from {env})"
    problem = _problem(first, loc)
    more = len(errors) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{where or '(top level)'}: {problem}{tail}"


def _problem(error: ErrorDetails, loc: tuple[int | str, ...]) -> str:
    if error["type"] == "extra_forbidden" and loc:
        return _unknown_key(str(loc[-1]), _model_at(loc[:-1]))
    msg = error["msg"]
    for noise in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(noise)
    return _one_line(msg)


def _unknown_key(key: str, model: type[BaseModel] | None) -> str:
    if model is None:
        return "unknown key"
    close = difflib.get_close_matches(key, list(model.model_fields), n=1)
    return f"unknown key; did you mean {close[0]!r}?" if close else "unknown key"


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The config model class found at ``loc`` (for listing the keys it allows)."""
    model: Any = Settings
    for part in loc:
        if isinstance(part, int):
            continue
        is_model = isinstance(model, type) and issubclass(model, BaseModel)
        field = model.model_fields.get(part) if is_model else None
        if field is None:
            return None
        model = field.annotation
        while not (isinstance(model, type) and issubclass(model, BaseModel)):
            args = [a for a in get_args(model) if a is not Ellipsis]
            if not args:
                return None
            model = args[0]
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _key_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "[key]":
            continue
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
            path += f".{part}" if path else part
        else:
            path += f"[{part!r}]"
    return path


def _env_source(loc: tuple[int | str, ...]) -> str:
    """The environment variable a ``[gateway]`` value came from, if any."""
    if len(loc) < 2 or loc[0] != "gateway":
        return ""
    name = f"{ENV_PREFIX}GATEWAY__{str(loc[1]).upper()}"
    return name if name in {n.upper() for n in os.environ} else ""


def _one_line(text: str) -> str:
    return " ".join(text.split())
