"""TokenStore on a real SQLite file: secrets, hashing, expiry, revocation, listing."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.adapters.storage import (
    Scope,
    Storage,
    TokenExpired,
    TokenRejected,
    TokenRevoked,
    open_storage,
)
from gateway.adapters.storage.tokens import LAST_USED_EVERY_S


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def storage(tmp_path: Path, clock: Clock) -> AsyncIterator[Storage]:
    s = await open_storage(f"sqlite:///{tmp_path / 'gw.db'}", clock=clock)
    yield s
    await s.close()


async def test_create_returns_secret_once_and_stores_only_its_hash(
    storage: Storage, tmp_path: Path
) -> None:
    token, secret = await storage.tokens.create("alice", Scope.USER, "laptop", 3600)
    assert secret.startswith("gph_") and len(secret) == 47
    assert token.user == "alice" and token.scope is Scope.USER and token.name == "laptop"
    assert token.expires_at == token.created_at + 3600
    with sqlite3.connect(tmp_path / "gw.db") as db:
        rows = db.execute("SELECT token_hash FROM api_tokens").fetchall()
        dump = "\n".join(db.iterdump())
    assert rows == [(hashlib.sha256(secret.encode()).hexdigest(),)]
    assert secret not in dump


async def test_verify_accepts_a_live_token(storage: Storage) -> None:
    token, secret = await storage.tokens.create("alice", Scope.CI, "runner", 60)
    found = await storage.tokens.verify(secret)
    assert found.id == token.id and found.scope is Scope.CI


@pytest.mark.parametrize(
    "secret",
    ["", "gph_", "gph_short", "ghp_" + "a" * 43, "gph_" + "a" * 42 + "!", "gph_" + "a" * 44],
)
async def test_verify_rejects_malformed_secrets(storage: Storage, secret: str) -> None:
    with pytest.raises(TokenRejected) as info:
        await storage.tokens.verify(secret)
    assert type(info.value) is TokenRejected and info.value.code == "token_unknown"


async def test_verify_rejects_an_unknown_well_formed_secret(storage: Storage) -> None:
    await storage.tokens.create("alice", Scope.USER, "laptop", 60)
    with pytest.raises(TokenRejected) as info:
        await storage.tokens.verify("gph_" + "A" * 43)
    assert info.value.code == "token_unknown" and info.value.token is None


async def test_expiry_is_exact(storage: Storage, clock: Clock) -> None:
    token, secret = await storage.tokens.create("alice", Scope.USER, "laptop", 100)
    clock.now += 99.999
    await storage.tokens.verify(secret)
    clock.now = token.expires_at
    with pytest.raises(TokenExpired) as info:
        await storage.tokens.verify(secret)
    assert info.value.code == "token_expired"
    assert info.value.token is not None and info.value.token.id == token.id


async def test_revoke_is_immediate_idempotent_and_wins_over_expiry(
    storage: Storage, clock: Clock
) -> None:
    token, secret = await storage.tokens.create("alice", Scope.USER, "laptop", 100)
    revoked = await storage.tokens.revoke(token.id)
    assert revoked is not None and revoked.revoked_at == clock.now
    with pytest.raises(TokenRevoked):
        await storage.tokens.verify(secret)
    clock.now += 1000
    again = await storage.tokens.revoke(token.id)
    assert again is not None and again.revoked_at == revoked.revoked_at
    with pytest.raises(TokenRevoked):  # revoked and expired: revoked is the reason given
        await storage.tokens.verify(secret)
    assert await storage.tokens.revoke("0" * 16) is None


async def test_last_used_is_stamped_at_most_once_a_minute(storage: Storage, clock: Clock) -> None:
    token, secret = await storage.tokens.create("alice", Scope.USER, "laptop", 3600)
    assert token.last_used_at is None
    first = await storage.tokens.verify(secret)
    assert first.last_used_at == clock.now
    clock.now += LAST_USED_EVERY_S - 1
    assert (await storage.tokens.verify(secret)).last_used_at == first.last_used_at
    clock.now += 1
    assert (await storage.tokens.verify(secret)).last_used_at == clock.now
    stored = await storage.tokens.get(token.id)
    assert stored is not None and stored.last_used_at == clock.now


async def test_list_and_get(storage: Storage, clock: Clock) -> None:
    a1, _ = await storage.tokens.create("alice", Scope.USER, "one", 60)
    clock.now += 1
    b1, _ = await storage.tokens.create("bob", Scope.ADMIN, "ops", 60)
    clock.now += 1
    a2, _ = await storage.tokens.create("alice", Scope.CI, "two", 60)
    assert [t.id for t in await storage.tokens.list()] == [a1.id, b1.id, a2.id]
    assert [t.id for t in await storage.tokens.list("alice")] == [a1.id, a2.id]
    assert await storage.tokens.list("nobody") == []
    assert await storage.tokens.get(b1.id) == b1
    assert await storage.tokens.get("missing") is None


async def test_token_state(storage: Storage, clock: Clock) -> None:
    token, _ = await storage.tokens.create("alice", Scope.USER, "x", 10)
    assert token.state(clock.now) == "active"
    assert token.state(clock.now + 10) == "expired"
    revoked = await storage.tokens.revoke(token.id)
    assert revoked is not None and revoked.state(clock.now) == "revoked"


@pytest.mark.parametrize(
    ("user", "scope", "name", "ttl"),
    [
        ("", Scope.USER, "x", 60),
        ("alice", Scope.USER, "", 60),
        ("alice", Scope.USER, "x" * 65, 60),
        ("alice", Scope.USER, "bad\nname", 60),
        ("alice", Scope.USER, "x", 0),
        ("alice", "root", "x", 60),
    ],
)
async def test_create_rejects_bad_input(
    storage: Storage, user: str, scope: Scope, name: str, ttl: float
) -> None:
    with pytest.raises(ValueError):
        await storage.tokens.create(user, scope, name, ttl)
    assert await storage.tokens.list() == []


async def test_tokens_survive_reopen(tmp_path: Path, clock: Clock) -> None:
    url = f"sqlite:///{tmp_path / 'gw.db'}"
    first = await open_storage(url, clock=clock)
    token, secret = await first.tokens.create("alice", Scope.USER, "laptop", 60)
    await first.close()
    second = await open_storage(url, clock=clock)
    try:
        assert (await second.tokens.verify(secret)).id == token.id
    finally:
        await second.close()


async def test_memory_store_behaves_the_same(clock: Clock) -> None:
    storage = await open_storage("memory://", clock=clock)
    try:
        token, secret = await storage.tokens.create("alice", Scope.USER, "laptop", 60)
        assert (await storage.tokens.verify(secret)).id == token.id
        clock.now += 60
        with pytest.raises(TokenExpired):
            await storage.tokens.verify(secret)
    finally:
        await storage.close()
