"""Thin docker-save archives: layer identification and the streaming tar filter."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import pytest

from client.envs.archive import ThinStats, chain_ids, identify_layer_json, thin_archive
from client.envs.fake import FakeEngine

# A real layer json from Docker 20.10's `docker save` (lower layer, zero config).
REAL_JSON = (
    b'{"id":"a4dd3548b7d4ca5d7daa7a3dae259b7f6d147c0b8b7dedb51d98446499305480",'
    b'"parent":"ccca3f3bd795502c5d61bb3515a4b55f46e4b4905a04e728435ed7330ffa2686",'
    b'"created":"1970-01-01T00:00:00Z","container_config":{"Hostname":"","Domainname":"",'
    b'"User":"","AttachStdin":false,"AttachStdout":false,"AttachStderr":false,"Tty":false,'
    b'"OpenStdin":false,"StdinOnce":false,"Env":null,"Cmd":null,"Image":"","Volumes":null,'
    b'"WorkingDir":"","Entrypoint":null,"OnBuild":null,"Labels":null},"os":"linux"}'
)
REAL_DIFF_IDS = (
    "sha256:3a247a31927511421b89942b0aa830aaa27d8e364bbba279731fcc8a2ed7e469",
    "sha256:e5029185caac655819475b7c673921c894eb9d1e216d88613f2fd105dd2d401a",
    "sha256:edbe25fa62e0007f99d7d1bbe9c56934de8228bd0ebe078be28b25efbc61dd4d",
    "sha256:93bf5d76e57dc6c9bf5fc8fd46ded985b171f5adc81781d546ca640d477ef160",
)


def _members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_chain_ids_follow_the_oci_definition() -> None:
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    expected = "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    assert chain_ids([a, b]) == (a, expected)
    assert chain_ids([]) == ()


def test_identifies_a_real_docker_layer_directory() -> None:
    assert identify_layer_json(REAL_JSON, chain_ids(REAL_DIFF_IDS)) == 2


def test_unknown_encodings_are_not_guessed() -> None:
    tampered = REAL_JSON.replace(b'"os":"linux"', b'"os":"windows"').replace(b"1970", b"1971")
    assert identify_layer_json(tampered, chain_ids(REAL_DIFF_IDS)) is None
    assert identify_layer_json(b"not json", chain_ids(REAL_DIFF_IDS)) is None


@pytest.mark.parametrize("layout", ["legacy", "oci"])
@pytest.mark.parametrize("chunk", [1, 511, 513, 65536])
def test_drops_exactly_the_layers_present(layout: str, chunk: int) -> None:
    engine = FakeEngine("local", layout=layout)  # type: ignore[arg-type]
    layers = [b"B" * 3000, b"M" * 50_000, b"T" * 700]
    engine.add_image("app:1", layers)
    diff_ids = engine.diff_ids("app:1")
    full = b"".join(engine.save("app:1"))
    pieces = [full[i : i + chunk] for i in range(0, len(full), chunk)]
    stats = ThinStats()
    thin = b"".join(thin_archive(pieces, diff_ids, chain_ids(diff_ids)[:2], stats))
    assert stats.complete and stats.bytes_in == len(full) and stats.bytes_out == len(thin)
    assert stats.layers_skipped == list(diff_ids[:2]) or sorted(stats.layers_skipped) == sorted(
        diff_ids[:2]
    )
    assert stats.layers_sent == [diff_ids[2]]
    assert stats.unidentified == 0
    kept = _members(thin)
    assert b"M" * 50_000 not in kept.values() and b"T" * 700 in kept.values()
    assert "manifest.json" in kept
    # Every other entry is byte-identical.
    whole = _members(full)
    assert {k: v for k, v in whole.items() if k in kept} == kept
    # Thinning again changes nothing.
    again = b"".join(thin_archive([thin], diff_ids, chain_ids(diff_ids)[:2]))
    assert again == thin


def test_a_shared_layer_file_is_kept_while_any_position_needs_it() -> None:
    engine = FakeEngine("local", layout="oci")
    engine.add_image("dup:1", [b"x" * 1000, b"same" * 100, b"y" * 10, b"same" * 100])
    diff_ids = engine.diff_ids("dup:1")
    chains = chain_ids(diff_ids)
    full = b"".join(engine.save("dup:1"))
    # The target holds positions 0-2 but not 3, which reads the same blob as 1.
    thin = b"".join(thin_archive([full], diff_ids, chains[:3]))
    assert b"same" * 100 in _members(thin).values()


def test_a_truncated_source_raises_instead_of_ending_quietly() -> None:
    engine = FakeEngine("local")
    engine.add_image("app:1", [b"a" * 5000])
    full = b"".join(engine.save("app:1"))
    with pytest.raises(ValueError, match="ended"):
        b"".join(thin_archive([full[:3000]], engine.diff_ids("app:1"), []))


def test_long_names_with_pax_headers_pass_through() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (
            ("d" * 150 + "/file", b"hello"),
            ("manifest.json", json.dumps([]).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    assert b"".join(thin_archive([data], [], [])) == data
