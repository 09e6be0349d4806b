"""Start-up and reload of an in-process gateway: one composition root, one runtime.

A start-up that fails at its last step closes everything it had opened (ports
free again, no task left running, the database usable by the next start); a
directory change or a key reload swaps one snapshot that every reader sees.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import httpx
import pytest

from gateway.adapters.keys import ensure_private_key, public_line
from gateway.adapters.storage import Scope
from gateway.config import changes as ch
from gateway.config.directory import HostConfig
from gateway.config.loader import Settings
from gateway.edges.http.metrics import InstrumentedAuditStore
from gateway.server import Gateway
from gateway.services.directory import Actor
from gateway.services.runtime import Runtime

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBk9mlM6jN2KcHl7jbCIBq3ZoUr5ZgP2F6FA6y8m7DnE"


def _settings(root: Path) -> Settings:
    return Settings(
        gateway={
            "ssh_host": "127.0.0.1",
            "ssh_port": 0,
            "api_host": "127.0.0.1",
            "api_port": 0,
            "storage_url": "sqlite:///gpuhop.db",
            "recordings_dir": "recordings",
            "drain_timeout_s": 1.0,
        },
        regions=[{"name": "sg", "country": "SG"}],
        roles=[{"name": "ops", "hosts": ["*"], "accounts": ["root"]}],
        users=[{"name": "ops", "roles": ["ops"]}],
    ).resolved(root)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _other_tasks() -> set[asyncio.Task[object]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    gw = Gateway(_settings(tmp_path))
    await gw.startup()
    try:
        yield gw
    finally:
        await gw.shutdown(drain_s=1.0)


async def test_a_start_failing_at_its_last_step_closes_what_it_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path)
    before = _other_tasks()
    append = InstrumentedAuditStore.append
    opened: list[Gateway] = []

    async def failing(
        self: InstrumentedAuditStore, kind: str, actor: str, data: Mapping[str, object]
    ) -> object:
        if kind == "gateway.start":  # the last step: everything else is running
            gw = opened[0]
            assert gw.port and gw.api_port and not _port_free(gw.port)
            raise OSError("disk full")
        return await append(self, kind, actor, data)

    monkeypatch.setattr(InstrumentedAuditStore, "append", failing)
    gw = Gateway(settings)
    opened.append(gw)
    with pytest.raises(OSError, match="disk full"):
        await gw.startup()
    assert _port_free(gw.port) and _port_free(gw.api_port)
    for _ in range(50):  # cancelled tasks finish on the next turns of the loop
        if _other_tasks() <= before:
            break
        await asyncio.sleep(0.02)
    assert _other_tasks() <= before
    monkeypatch.setattr(InstrumentedAuditStore, "append", append)
    again = Gateway(settings)  # the database and the keys were closed and kept
    await again.startup()
    try:
        assert again.runtime is not None
        assert again.runtime.current.keys.user_ca.public_line == gw.ctx.user_ca.public_line
    finally:
        await again.shutdown(drain_s=1.0)


async def test_a_directory_change_is_one_swap_every_reader_sees(gateway: Gateway) -> None:
    ref = gateway.runtime
    assert ref is not None
    before = ref.current
    seen: list[tuple[Runtime, bool, bool]] = []

    def reader_check(_old: Runtime, new: Runtime) -> None:
        seen.append((new, gateway.ctx.inventory is new.inventory, ref.current is new))

    ref.on_change(reader_check)
    host = HostConfig(name="sg-9", region="sg", address="127.0.0.1", port=1, host_key=HOST_KEY)
    await gateway.directory.apply(ch.AddHost(host), Actor("ops"))
    after = ref.current
    assert after is not before and after.keys is before.keys
    assert seen == [(after, True, True)]
    assert gateway.ctx.inventory.host("sg-9") is not None
    assert gateway.live.inventory.host("sg-9") is not None
    info = await _gateway_info(gateway)
    assert "sg-9" in info["host_keys"]


async def test_a_key_reload_is_one_swap_every_reader_sees(gateway: Gateway) -> None:
    ref = gateway.runtime
    assert ref is not None
    before = ref.current
    g = gateway.settings.gateway
    g.user_ca_key.rename(g.user_ca_key.with_name("user_ca.old"))
    g.host_key.unlink()
    gateway.reload_keys()
    after = ref.current
    assert after.view is before.view and after.keys is not before.keys
    new_host_key = public_line(ensure_private_key(g.host_key, ""))
    assert after.keys.host_key_lines[0] == new_host_key
    assert gateway.ctx.user_ca is after.keys.user_ca
    assert gateway.ctx.user_ca.public_line != before.keys.user_ca.public_line
    assert gateway.ctx.host_certificate("sg-1")[0] is after.keys.host_keys[0]
    info = await _gateway_info(gateway)
    assert info["host_key"] == new_host_key


async def _gateway_info(gateway: Gateway) -> dict[str, object]:
    _, secret = await gateway.storage.tokens.create("ops", Scope.ADMIN, "test", 600)
    async with httpx.AsyncClient(trust_env=False, timeout=10.0) as client:
        r = await client.get(
            f"http://127.0.0.1:{gateway.api_port}/v1/gateway",
            headers={"Authorization": f"Bearer {secret}"},
        )
    r.raise_for_status()
    data: dict[str, object] = r.json()
    return data
