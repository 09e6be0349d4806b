"""Environments on hosts, for the TUI: which hosts have each one, and pushing it there.

Both go through the gateway's ``gpuhop-env`` command over one SSH connection,
as ``gpuhop env status`` and ``gpuhop env push`` do (``client.envs.remote``):
``images`` tells what each host holds; ``push`` thins the local image against
them and the gateway fans it out. A host has an environment *in sync* when the
image tagged ``gpuhop/NAME`` there carries the fingerprint computed here from
``images/NAME/``; *drift* when it carries another; *missing* when there is
none. Both need the local Docker engine: pushing sends the image built there
(``gpuhop env build NAME``), and the fingerprint a build stamps names the base
image's ID in that engine, so without it a comparison would only say "drift"
(``engine_error`` says why it cannot be reached, and the screen says so instead
of guessing). And both need ``gpuhop login`` (the SSH certificate).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from client.envs.build import LABEL_FINGERPRINT, env_ref
from client.envs.remote import GatewayConnect, HostImages, host_images, push_via_gateway
from client.envs.sync import Progress, PushReport
from client.errors import ClientError
from client.services.gateway import gateway_connector
from client.settings import load_settings
from client.tui.envs import EnvRow

HostState = Literal["in sync", "drift", "missing", "error"]


class EnvBackend(Protocol):
    """What the Environments screen needs; the app builds one lazily, tests inject theirs."""

    async def host_images(self, hosts: Sequence[str]) -> dict[str, HostImages]: ...

    async def push(
        self, name: str, hosts: Sequence[str], progress: Callable[[Progress], None]
    ) -> PushReport: ...

    def resolve_base(self, ref: str) -> str:
        """A base image's ID in the local engine (blocking); ``ClientError`` when it cannot."""
        ...

    def engine_error(self) -> str:
        """Why the local Docker engine cannot be used, or "" when it answers (blocking).

        >>> backend.engine_error()  # doctest: +SKIP
        'no Docker engine at unix:///var/run/docker.sock: the socket does not exist (...)'
        """
        ...


@dataclass
class GatewayEnvBackend:
    """The real thing: the gateway over SSH, and the local Docker engine for pushes."""

    connect_gateway: GatewayConnect
    docker_url: str = ""  # "" = DOCKER_HOST, else the default socket
    _docker: Any = None

    def _local(self) -> Any:
        """A docker-py client for the local engine (made once; blocking)."""
        if self._docker is None:
            import os

            from client.envs.engine import connect

            default = "unix:///var/run/docker.sock"
            self._docker = connect(self.docker_url or os.environ.get("DOCKER_HOST") or default)
        return self._docker

    def engine_error(self) -> str:
        try:
            self._local()
        except ClientError as exc:
            return str(exc)
        return ""

    def resolve_base(self, ref: str) -> str:
        import docker

        try:
            return str(self._local().api.inspect_image(ref)["Id"])
        except docker.errors.DockerException as exc:
            raise ClientError(f"base {ref}: {exc}") from None

    async def host_images(self, hosts: Sequence[str]) -> dict[str, HostImages]:
        conn = await self.connect_gateway()
        try:
            return await host_images(conn, list(dict.fromkeys(hosts)))
        finally:
            conn.close()

    async def push(
        self, name: str, hosts: Sequence[str], progress: Callable[[Progress], None]
    ) -> PushReport:
        import asyncio

        from client.envs.engine import DockerEngine

        local = DockerEngine(await asyncio.to_thread(self._local), "local")
        return await push_via_gateway(
            local,
            env_ref(name),
            list(hosts),
            connect_gateway=self.connect_gateway,
            progress=progress,
            check=False,
        )


def default_backend() -> EnvBackend:
    """From the client's login (``gpuhop login``); ``ClientError`` says what is missing."""
    return GatewayEnvBackend(gateway_connector(load_settings()))


def host_states(
    envs: Sequence[EnvRow], remote: Mapping[str, HostImages]
) -> dict[str, dict[str, HostState]]:
    """Per environment, per host: in sync, drift, missing (or error: why the host is unknown)."""
    out: dict[str, dict[str, HostState]] = {}
    for env in envs:
        states: dict[str, HostState] = {}
        for host, info in remote.items():
            if info.error:
                states[host] = "error"
                continue
            image = info.tagged(env_ref(env.name))
            if image is None:
                states[host] = "missing"
            elif image.labels.get(LABEL_FINGERPRINT) == env.fingerprint:
                states[host] = "in sync"
            else:
                states[host] = "drift"
        out[env.name] = states
    return out
