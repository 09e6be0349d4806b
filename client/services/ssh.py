"""A shell on a host through the gateway with OpenSSH: the login, the config, the argv."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from client import identity, sshconf
from client.errors import HostNotFound
from client.identity import Profile
from client.settings import ClientSettings


def ssh_ready(settings: ClientSettings, host: str | None = None) -> Profile:
    """A current certificate, and ``host`` among the pinned hosts (refreshed once if not)."""
    profile = identity.ready(settings)
    if host is not None and host not in profile.host_keys:
        profile = identity.ready(settings, refresh=True)  # the inventory may have grown
        if host not in profile.host_keys:
            raise HostNotFound(f"unknown host {host}; `gpuhop hosts` lists them")
    return profile


def write_ssh_config(settings: ClientSettings, profile: Profile) -> Path:
    """The gpuhop-managed OpenSSH config: the gateway and every host behind it."""
    paths = identity.paths_of(settings)
    entries = [sshconf.HostEntry(n, profile.default_account) for n in sorted(profile.host_keys)]
    text = sshconf.config_text(
        profile,
        paths,
        entries,
        connect_timeout_s=settings.connect_timeout_s,
        keepalive_s=settings.keepalive_interval_s,
        keepalive_count=settings.keepalive_count_max,
    )
    return sshconf.write_config(paths, text)


def session_variables(gpus: int, env: Iterable[tuple[str, str]]) -> dict[str, str]:
    """What the session asks of the gateway: ``env`` as given, ``GPUHOP_GPUS`` from
    ``gpus`` (which wins over an ``env`` one) when above 0."""
    out = dict(env)
    if gpus > 0:
        out["GPUHOP_GPUS"] = str(gpus)
    return out


def setenv_option(variables: Mapping[str, str]) -> str:
    """``-oSetEnv=...`` carrying ``variables``; a pair holding a blank or a quote is
    double-quoted the way OpenSSH's config parser reads it back.

    >>> setenv_option({"GPUHOP_GPUS": "2", "MSG": "a b"})
    '-oSetEnv=GPUHOP_GPUS=2 "MSG=a b"'
    """
    return "-oSetEnv=" + " ".join(_quoted(f"{k}={v}") for k, v in variables.items())


def _quoted(pair: str) -> str:
    if not any(c.isspace() or c in "\"'\\" for c in pair):
        return pair
    return '"' + pair.replace("\\", "\\\\").replace('"', '\\"') + '"'


def ssh_argv(
    binary: str,
    config: Path,
    host: str,
    command: tuple[str, ...],
    account: str = "",
    variables: Mapping[str, str] | None = None,
) -> list[str]:
    """``ssh -F CONFIG [-l ACCOUNT] [-oSetEnv=...] HOST [COMMAND...]``."""
    argv = [binary, "-F", str(config)]
    if account:
        argv += ["-l", account]
    if variables:
        argv.append(setenv_option(variables))
    return [*argv, host, *command]
