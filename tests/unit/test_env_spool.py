"""The staged push's spool: bounded by its slowest reader, and by having readers at all."""

from __future__ import annotations

import asyncio

from gateway.services.envstage import Spool, StagePolicy


def test_the_spool_is_full_once_ahead_of_its_slowest_reader() -> None:
    async def scenario() -> None:
        spool = Spool(ahead=10)
        rooms: list[int] = []
        spool.on_room = lambda: rooms.append(spool.size)
        spool.reader("far-1")
        spool.reader("far-2")
        try:
            spool.append(b"x" * 9)
            assert not spool.full
            spool.append(b"x")
            assert spool.full  # 10 bytes ahead of both
            spool.advance("far-1", 8)
            assert spool.full and rooms == []  # far-2 is still at 0
            spool.advance("far-2", 4)
            assert not spool.full and rooms == [10]
            spool.drop("far-2")
            assert spool.readers == 1 and not spool.full
        finally:
            spool.close()

    asyncio.run(scenario())


def test_a_spool_without_readers_keeps_nothing() -> None:
    async def scenario() -> None:
        spool = Spool(ahead=10)
        spool.reader("far-1")
        spool.append(b"abc")
        spool.drop("far-1")
        spool.append(b"x" * 1000)  # nobody will read it: not written, never full
        assert spool.size == 3 and not spool.full
        spool.close()

    asyncio.run(scenario())


def test_the_policy_never_lets_the_spool_starve_its_channels() -> None:
    policy = StagePolicy(connections=2, per_connection=4, chunk_size=8, spool_ahead=1)
    assert policy.ahead == 2 * 4 * 8
    assert StagePolicy(spool_ahead=1 << 40).ahead == 1 << 40
