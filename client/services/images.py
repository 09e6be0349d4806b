"""Before a container job: the host must hold the image, the local build if there is one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from client.envs.build import env_ref
from client.envs.engine import DockerEngine, connect
from client.envs.remote import GatewayConnect, host_images, push_via_gateway
from client.errors import DockerUnavailable, EnvError, EnvNotFound


def image_ref(name: str) -> str:
    """``base`` -> the environment's ref; a ref with a tag or a registry stays as is."""
    return name if ":" in name or "/" in name else env_ref(name)


async def ensure_image(
    connect_gateway: GatewayConnect,
    docker_url: str,
    ref: str,
    host: str,
    notify: Callable[[str], None],
) -> None:
    """Push ``ref`` to ``host`` unless it already holds the local build (or, with no
    local build, any image by that name)."""
    local: DockerEngine | None = None
    local_id: str | None = None
    with contextlib.suppress(DockerUnavailable):
        local = DockerEngine(connect(docker_url), "local")
        local_id = await asyncio.to_thread(local.image_id, ref)
    conn = await connect_gateway()
    try:
        there = (await host_images(conn, [host]))[host]
    finally:
        conn.close()
        with contextlib.suppress(Exception):
            await conn.wait_closed()
    if there.error:
        raise EnvError(f"{host}: cannot list its images: {there.error}")
    held = there.tagged(ref)
    if held is not None and (local_id is None or held.image_id == local_id):
        return
    if local is None or local_id is None:
        raise EnvNotFound(f"{ref} is neither on {host} nor on the local engine: build it first")
    notify(f"pushing {ref} to {host}")
    await push_via_gateway(local, ref, [host], connect_gateway=connect_gateway)
