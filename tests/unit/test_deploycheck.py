"""scripts/deploycheck checks every path-valued gateway setting, not a hand-kept subset."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gateway.config.process import GatewaySettings

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from deploycheck.common import GATEWAY_PATH_KEYS, Failed, gateway_paths


def test_every_path_setting_is_checked() -> None:
    paths = {name for name, f in GatewaySettings.model_fields.items() if f.annotation is Path}
    assert set(GATEWAY_PATH_KEYS) == paths


def test_a_config_that_leaves_a_key_at_its_relative_default_fails(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    lines = [f'{k} = "/srv/{k}"' for k in GATEWAY_PATH_KEYS if k != "upstream_ca_key"]
    config.write_text("[gateway]\n" + "\n".join(lines) + "\n")
    with pytest.raises(Failed, match="does not set upstream_ca_key"):
        gateway_paths(config)
    config.write_text(config.read_text() + 'upstream_ca_key = "/srv/u"\n')
    assert gateway_paths(config)["upstream_ca_key"] == "/srv/u"
