"""An in-memory ``ImageEngine`` that saves and loads real ``docker save`` tar streams.

It follows Docker's loader where it matters to sync: ``load`` reads the whole
archive before changing anything, registers layer ``i`` only if its chain ID is
missing (and then needs its ``layer.tar``), stores the config under
``sha256(config)`` and moves tags last. ``save`` writes the legacy layout
(Docker ≤ 24, v1 layer directories in name order) or the OCI layout (Docker 25+).

    engine = FakeEngine("sg-1")
    engine.add_image("app:1", [b"base layer", b"app layer"])
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from client.envs.archive import chain_ids, go_json
from client.errors import EnvNotFound, SyncFailed

_ZERO_CONFIG = {
    "Hostname": "",
    "Env": None,
    "Cmd": None,
    "Image": "",
    "Labels": None,
}


@dataclass
class _Image:
    config: bytes
    diff_ids: tuple[str, ...]


@dataclass
class FakeEngine:
    """See the module docstring; ``loads`` counts bytes each ``load`` received."""

    name: str
    layout: Literal["legacy", "oci"] = "legacy"
    layers: dict[str, bytes] = field(default_factory=dict)  # chain ID -> layer tar bytes
    images: dict[str, _Image] = field(default_factory=dict)  # image ID -> image
    tags: dict[str, str] = field(default_factory=dict)  # ref -> image ID
    loads: list[int] = field(default_factory=list)

    def add_image(self, ref: str, layer_data: Sequence[bytes], label: str = "") -> str:
        """Create an image from raw layer contents; returns its ID."""
        diff_ids = tuple("sha256:" + hashlib.sha256(d).hexdigest() for d in layer_data)
        for chain, data in zip(chain_ids(diff_ids), layer_data, strict=True):
            self.layers[chain] = data
        config = json.dumps(
            {"rootfs": {"type": "layers", "diff_ids": list(diff_ids)}, "label": label},
            sort_keys=True,
        ).encode()
        image_id = "sha256:" + hashlib.sha256(config).hexdigest()
        self.images[image_id] = _Image(config, diff_ids)
        self.tags[ref] = image_id
        return image_id

    def _resolve(self, ref: str) -> str | None:
        return ref if ref in self.images else self.tags.get(ref)

    def image_id(self, ref: str) -> str | None:
        return self._resolve(ref)

    def diff_ids(self, ref: str) -> tuple[str, ...]:
        image_id = self._resolve(ref)
        if image_id is None:
            raise EnvNotFound(f"{self.name}: no image {ref}")
        return self.images[image_id].diff_ids

    def layer_sizes(self, ref: str) -> tuple[int, ...] | None:
        return tuple(len(self.layers[c]) for c in chain_ids(self.diff_ids(ref)))

    def present_chains(self) -> frozenset[str]:
        chains: set[str] = set()
        for image in self.images.values():
            chains.update(chain_ids(image.diff_ids))
        return frozenset(chains)

    def tag(self, image_id: str, ref: str) -> None:
        if image_id not in self.images:
            raise EnvNotFound(f"{self.name}: no image {image_id}")
        self.tags[ref] = image_id

    # ------------------------------------------------------------------ save

    def save(self, ref: str) -> Iterator[bytes]:
        image_id = self._resolve(ref)
        if image_id is None:
            raise EnvNotFound(f"{self.name}: no image {ref}")
        image = self.images[image_id]
        files: dict[str, bytes] = {}
        config_name = image_id.removeprefix("sha256:") + ".json"
        if self.layout == "oci":
            config_name = "blobs/sha256/" + image_id.removeprefix("sha256:")
        files[config_name] = image.config
        paths: list[str] = []
        parent = ""
        chains = chain_ids(image.diff_ids)
        for i, (diff_id, chain) in enumerate(zip(image.diff_ids, chains, strict=True)):
            if self.layout == "oci":
                path = "blobs/sha256/" + diff_id.removeprefix("sha256:")
            else:
                v1: dict[str, object] = {"container_config": _ZERO_CONFIG, "created": "1970"}
                if i == len(chains) - 1:
                    v1["os"] = "linux"
                body = {**v1, "layer_id": chain, **({"parent": parent} if parent else {})}
                text = ",".join(f"{go_json(k)}:{go_json(v)}" for k, v in sorted(body.items()))
                v1_id = hashlib.sha256(("{" + text + "}").encode()).hexdigest()
                doc = {"id": v1_id, **({"parent": parent[7:]} if parent else {}), **v1}
                if i < len(chains) - 1:
                    doc["os"] = "linux"  # added after the ID, as Docker does
                files[f"{v1_id}/VERSION"] = b"1.0"
                files[f"{v1_id}/json"] = json.dumps(doc).encode()
                path = f"{v1_id}/layer.tar"
                parent = f"sha256:{v1_id}"
            files[path] = self.layers[chain]
            paths.append(path)
        repo_tags = [r for r, i in self.tags.items() if i == image_id and r == ref]
        manifest = [{"Config": config_name, "RepoTags": repo_tags, "Layers": paths}]
        files["manifest.json"] = json.dumps(manifest).encode()
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for name in sorted(files):
                info = tarfile.TarInfo(name)
                info.size = len(files[name])
                tar.addfile(info, io.BytesIO(files[name]))
        # Python pads to 10 KiB records; Go's writer (Docker's) stops after two zero blocks.
        data = buf.getvalue().rstrip(b"\0")
        data += bytes(-len(data) % 512 + 1024)
        for start in range(0, len(data), 64 * 1024):
            yield data[start : start + 64 * 1024]

    # ------------------------------------------------------------------ load

    def load(self, chunks: Iterable[bytes]) -> None:
        received = bytearray()
        for chunk in chunks:  # an exception here leaves the engine untouched
            received += chunk
        self.loads.append(len(received))
        try:
            with tarfile.open(fileobj=io.BytesIO(bytes(received)), mode="r:") as tar:
                files = {
                    m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
                    for m in tar.getmembers()
                    if m.isfile()
                }
        except tarfile.TarError as e:
            raise SyncFailed(f"{self.name}: docker load failed: {e}") from None
        if "manifest.json" not in files:
            raise SyncFailed(f"{self.name}: docker load failed: no manifest.json")
        new_layers: dict[str, bytes] = {}
        staged: list[tuple[str, _Image, list[str]]] = []
        for entry in json.loads(files["manifest.json"]):
            config = files[entry["Config"]]
            diff_ids = tuple(json.loads(config)["rootfs"]["diff_ids"])
            for chain, path in zip(chain_ids(diff_ids), entry["Layers"], strict=True):
                if chain in self.layers or chain in new_layers:
                    continue
                if path not in files:
                    raise SyncFailed(f"{self.name}: docker load failed: open {path}: no such file")
                new_layers[chain] = files[path]
            image_id = "sha256:" + hashlib.sha256(config).hexdigest()
            staged.append((image_id, _Image(config, diff_ids), list(entry.get("RepoTags") or [])))
        self.layers.update(new_layers)
        for image_id, image, refs in staged:
            self.images[image_id] = image
            for ref in refs:
                self.tags[ref] = image_id
