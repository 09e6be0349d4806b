"""Tokens minted with a token: capped by its expiry, revoked with it, never after it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.adapters.storage import Scope, Storage, TokenRejected, open_storage
from gateway.adapters.storage.tokens import TokenRevoked


@pytest.fixture
async def storage() -> AsyncIterator[Storage]:
    s = await open_storage("memory://")
    try:
        yield s
    finally:
        await s.close()


async def test_a_child_expires_no_later_than_its_parent(storage: Storage) -> None:
    parent, _ = await storage.tokens.create("alice", Scope.USER, "laptop", 3600)
    child, secret = await storage.tokens.create(
        "alice", Scope.CI, "runner", 365 * 86400, parent=parent
    )
    assert child.expires_at == parent.expires_at and child.parent_id == parent.id
    stored = await storage.tokens.verify(secret)
    assert stored.expires_at == parent.expires_at and stored.parent_id == parent.id
    short, _ = await storage.tokens.create("alice", Scope.CI, "short", 60, parent=parent)
    assert short.expires_at < parent.expires_at  # a shorter ttl is kept


async def test_revoking_revokes_every_descendant_and_nothing_else(storage: Storage) -> None:
    tokens = storage.tokens
    root, _ = await tokens.create("alice", Scope.USER, "root", 3600)
    a, a_secret = await tokens.create("alice", Scope.USER, "a", 3600, parent=root)
    b, b_secret = await tokens.create("alice", Scope.CI, "b", 3600, parent=a)
    c, c_secret = await tokens.create("alice", Scope.CI, "c", 3600, parent=b)
    other, other_secret = await tokens.create("alice", Scope.USER, "other", 3600)
    tree = await tokens.revoke_tree(a.id)
    assert tree is not None
    top, minted = tree
    assert top.id == a.id and top.revoked_at is not None
    assert {t.id for t in minted} == {b.id, c.id}
    for secret in (a_secret, b_secret, c_secret):
        with pytest.raises(TokenRevoked):
            await tokens.verify(secret)
    assert (await tokens.verify(other_secret)).id == other.id
    root_now = await tokens.get(root.id)
    assert root_now is not None and root_now.revoked_at is None
    again = await tokens.revoke_tree(a.id)  # idempotent: nothing more to revoke
    assert again is not None and again[1] == []


async def test_a_revoked_parent_mints_nothing(storage: Storage) -> None:
    parent, _ = await storage.tokens.create("alice", Scope.USER, "laptop", 3600)
    await storage.tokens.revoke(parent.id)
    with pytest.raises(TokenRejected) as caught:
        await storage.tokens.create("alice", Scope.CI, "late", 3600, parent=parent)
    assert caught.value.code == "token_revoked"
    assert [t.id for t in await storage.tokens.list()] == [parent.id]


async def test_metrics_tokens_are_stored(storage: Storage) -> None:
    _, secret = await storage.tokens.create("prometheus", Scope.METRICS, "scrape", 60)
    assert (await storage.tokens.verify(secret)).scope is Scope.METRICS
