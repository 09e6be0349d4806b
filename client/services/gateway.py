"""One SSH connection to the gateway, as the plain user, for environment commands."""

from __future__ import annotations

import asyncssh

from client import identity
from client.envs.remote import GatewayConnect
from client.settings import ClientSettings
from client.sshconn import connect


def gateway_connector(settings: ClientSettings) -> GatewayConnect:
    """An async factory for connections to the gateway (``ClientError`` without a login)."""
    profile = identity.ready(settings)
    paths = identity.paths_of(settings)

    async def connect_gateway() -> asyncssh.SSHClientConnection:
        return await connect(profile, paths, settings, profile.user)

    return connect_gateway
