"""The runtime reference: one snapshot, swapped whole, read by every holder."""

from __future__ import annotations

import asyncio

from gateway.adapters.audit.memory import MemoryAuditStore
from gateway.adapters.storage import open_storage
from gateway.config.loader import Settings
from gateway.services.directoryview import DirectoryView
from gateway.services.runtime import Runtime
from tests.fakeruntime import front_context, key_ring, runtime_of

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBk9mlM6jN2KcHl7jbCIBq3ZoUr5ZgP2F6FA6y8m7DnE"
WITH_HOST = Settings(
    regions=[{"name": "sg", "country": "SG"}],
    hosts=[{"name": "sg-1", "region": "sg", "address": "10.0.0.1", "host_key": HOST_KEY}],
)


def test_listeners_see_the_new_snapshot_already_current_in_order() -> None:
    ref = runtime_of()
    first = ref.current
    seen: list[tuple[str, Runtime, Runtime, Runtime]] = []
    ref.on_change(lambda old, new: seen.append(("a", old, new, ref.current)))
    ref.on_change(lambda old, new: seen.append(("b", old, new, ref.current)))
    second = first.with_view(DirectoryView.build(WITH_HOST))
    ref.replace(second)
    assert ref.current is second
    assert seen == [("a", first, second, second), ("b", first, second, second)]


def test_a_swap_keeps_what_it_does_not_change() -> None:
    ref = runtime_of(WITH_HOST)
    keys = key_ring()
    before = ref.current
    ref.replace(before.with_keys(keys))
    assert ref.current.keys is keys
    assert ref.current.view is before.view
    assert [h.name for h in ref.current.inventory.hosts] == ["sg-1"]
    assert before.keys is not keys  # the old snapshot is never changed in place


async def test_changed_wakes_a_waiter_and_answers_at_once_when_already_newer() -> None:
    ref = runtime_of()
    first = ref.current
    waiter = asyncio.get_running_loop().create_task(ref.changed(first))
    await asyncio.sleep(0)
    assert not waiter.done()
    second = first.with_keys(key_ring())
    ref.replace(second)
    assert await asyncio.wait_for(waiter, 5) is second
    assert await asyncio.wait_for(ref.changed(first), 5) is second


async def test_front_context_reads_the_reference_at_each_use() -> None:
    ref = runtime_of()
    storage = await open_storage("memory://")
    ctx = front_context(ref, MemoryAuditStore(), storage.sessions)
    await storage.close()
    old_ca = ctx.user_ca
    assert ctx.inventory.host("sg-1") is None
    ref.replace(ref.current.with_view(DirectoryView.build(WITH_HOST)).with_keys(key_ring()))
    assert ctx.inventory.host("sg-1") is not None
    assert ctx.user_ca is ref.current.keys.user_ca is not old_ca
    key, cert = ctx.host_certificate("sg-1")
    assert key is ref.current.keys.host_keys[0]
    assert cert.signing_key.public_data == ref.current.keys.host_ca.public_data
