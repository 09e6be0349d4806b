"""The sync engine against in-memory engines that load real tar streams."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pytest

from client.envs.archive import chain_ids
from client.envs.engine import ImageEngine
from client.envs.fake import FakeEngine
from client.envs.sync import LINK, Progress, push, tee
from client.errors import EnvNotFound, SyncFailed

BASE = b"b" * 20_000
DEPS = b"d" * 200_000


def _engines(n: int, layout: str = "legacy") -> tuple[FakeEngine, list[FakeEngine]]:
    source = FakeEngine("local", layout=layout)  # type: ignore[arg-type]
    source.add_image("app:1", [BASE, DEPS, b"top v1"])
    return source, [FakeEngine(f"host-{i}") for i in range(n)]


def test_fake_engine_is_an_image_engine() -> None:
    engine: ImageEngine = FakeEngine("x")
    assert engine.present_chains() == frozenset()


@pytest.mark.parametrize("layout", ["legacy", "oci"])
def test_first_push_then_a_one_layer_change(layout: str) -> None:
    source, (host,) = _engines(1, layout)
    first = push(source, "app:1", [host])
    assert first.targets[0].status == "loaded"
    assert host.image_id("app:1") == source.image_id("app:1")
    assert first.link_bytes > len(DEPS)

    top = b"t" * 30_000
    source.add_image("app:1", [BASE, DEPS, top])
    second = push(source, "app:1", [host])
    assert host.image_id("app:1") == source.image_id("app:1")
    assert second.targets[0].layers_sent == (source.diff_ids("app:1")[2],)
    assert len(top) < second.link_bytes <= 1.5 * len(top)

    third = push(source, "app:1", [host])
    assert third.targets[0].status == "current" and third.link_bytes == 0


def test_an_image_under_another_name_is_only_tagged() -> None:
    source, (host,) = _engines(1)
    push(source, "app:1", [host])
    source.tag(source.image_id("app:1") or "", "app:stable")
    report = push(source, "app:stable", [host])
    assert report.targets[0].status == "tagged" and report.link_bytes == 0
    assert host.image_id("app:stable") == source.image_id("app:1")


def test_fan_out_reads_each_missing_layer_once() -> None:
    source, hosts = _engines(2)
    push(source, "app:1", hosts)
    new = b"n" * 300_000
    source.add_image("app:1", [BASE, DEPS, new])
    seen: list[Progress] = []
    report = push(source, "app:1", hosts, progress=seen.append)
    assert all(h.image_id("app:1") == source.image_id("app:1") for h in hosts)
    assert len(new) < report.link_bytes <= 1.05 * len(new)
    assert [t.status for t in report.targets] == ["loaded", "loaded"]
    assert sum(t.bytes_sent for t in report.targets) >= 2 * len(new)
    links = [p for p in seen if p.target == LINK]
    assert links and links[-1].done and links[-1].sent == report.link_bytes


def test_fan_out_thins_each_branch_for_its_own_host() -> None:
    source, (warm, cold) = _engines(2)
    push(source, "app:1", [warm])
    report = push(source, "app:1", [warm, cold])
    by_name = {t.target: t for t in report.targets}
    assert by_name["host-0"].status == "current"
    assert by_name["host-1"].bytes_sent > len(DEPS)

    source.add_image("app:1", [BASE, DEPS, b"z" * 5000])
    fresh = FakeEngine("host-2")
    report = push(source, "app:1", [warm, fresh])
    by_name = {t.target: t for t in report.targets}
    # The link carries the union (everything, for the fresh host) once; the warm
    # host's branch is thinned down to the one new layer.
    assert report.link_bytes > len(DEPS)
    assert by_name["host-0"].bytes_sent < 20_000 < len(DEPS) < by_name["host-2"].bytes_sent


class _CutOff(Exception):
    pass


def _cut(chunks: Iterable[bytes], limit: int) -> Iterator[bytes]:
    sent = 0
    for chunk in chunks:
        if sent + len(chunk) > limit:
            raise _CutOff
        sent += len(chunk)
        yield chunk


def test_a_cut_off_push_leaves_the_old_image_and_a_retry_completes() -> None:
    source, (host,) = _engines(1)
    push(source, "app:1", [host])
    old = host.image_id("app:1")
    source.add_image("app:1", [BASE, DEPS, b"q" * 80_000])
    real_load = host.load
    host.load = lambda chunks: real_load(_cut(chunks, 40_000))  # type: ignore[method-assign]
    with pytest.raises(SyncFailed, match="host-0"):
        push(source, "app:1", [host])
    assert host.image_id("app:1") == old
    host.load = real_load  # type: ignore[method-assign]
    push(source, "app:1", [host])
    assert host.image_id("app:1") == source.image_id("app:1")


def test_one_failing_host_does_not_stop_the_others() -> None:
    source, (good, bad) = _engines(2)

    def refuse(chunks: Iterable[bytes]) -> None:
        next(iter(chunks))
        raise SyncFailed("host-1: docker load failed: disk full")

    bad.load = refuse  # type: ignore[method-assign]
    report = push(source, "app:1", [good, bad], check=False)
    assert [t.status for t in report.targets] == ["loaded", "failed"]
    assert "disk full" in (report.targets[1].error or "")
    assert good.image_id("app:1") == source.image_id("app:1")


def test_missing_local_image_is_one_clear_error() -> None:
    source, hosts = _engines(1)
    with pytest.raises(EnvNotFound, match="no local image nope:1"):
        push(source, "nope:1", hosts)


def test_tee_aborts_every_branch_when_the_source_fails() -> None:
    got: list[list[bytes]] = [[], []]
    outcome: list[str] = []

    def consumer(i: int):  # type: ignore[no-untyped-def]
        def consume(chunks: Iterator[bytes]) -> None:
            try:
                for c in chunks:
                    got[i].append(c)
            except Exception as e:
                outcome.append(type(e).__name__)
                raise
            outcome.append("complete")

        return consume

    def source() -> Iterator[bytes]:
        yield b"a"
        yield b"b"
        raise OSError("source died")

    with pytest.raises(OSError, match="source died"):
        tee(source(), [consumer(0), consumer(1)])
    assert got == [[b"a", b"b"], [b"a", b"b"]]
    assert outcome == ["_Aborted", "_Aborted"]


def test_present_chains_cover_every_prefix() -> None:
    source, _ = _engines(0)
    assert source.present_chains() == frozenset(chain_ids(source.diff_ids("app:1")))
