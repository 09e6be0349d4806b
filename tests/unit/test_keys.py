"""The gateway's own host key: staged, offered, promoted (rotation)."""

from __future__ import annotations

from pathlib import Path

import asyncssh
import pytest

from gateway.adapters import keys
from gateway.errors import KeyMaterialError


def test_a_staged_host_key_is_offered_after_the_current_one_then_promoted(tmp_path: Path) -> None:
    path = tmp_path / "gateway_host_ed25519"
    first = keys.gateway_host_keys(path, "gw")
    assert len(first) == 1  # made on first use, nothing staged
    with pytest.raises(KeyMaterialError, match="no staged host key"):
        keys.promote_next_key(path)
    staged = keys.stage_next_key(path, "gw")
    assert keys.stage_next_key(path, "gw").public_data == staged.public_data  # made once
    offered = keys.gateway_host_keys(path, "gw")
    assert [k.public_data for k in offered] == [first[0].public_data, staged.public_data]

    old = keys.promote_next_key(path, now=1_700_000_000)
    assert old.name == "gateway_host_ed25519.old-1700000000"
    assert keys.load_private_key(old).public_data == first[0].public_data
    assert [k.public_data for k in keys.gateway_host_keys(path, "gw")] == [staged.public_data]
    pub = path.with_name(path.name + ".pub").read_text()
    assert pub.split()[1] == keys.public_line(staged).split()[1]
    assert not keys.next_key_path(path).exists()


def test_offered_host_keys_replace_the_tables_new_connections_use() -> None:
    """asyncssh internals the reload relies on: options keep per-algorithm and all-key tables."""
    import asyncio

    import asyncssh

    from gateway.adapters.sshcompat import offer_host_keys

    a = asyncssh.generate_private_key("ssh-ed25519")
    b = asyncssh.generate_private_key("ssh-ed25519")

    async def build() -> asyncssh.SSHServerConnectionOptions:
        return await asyncssh.SSHServerConnectionOptions.construct(
            None, server_host_keys=[a], send_server_host_keys=True
        )

    options = asyncio.run(build())
    before = options.server_host_keys
    offer_host_keys(options, [b, a])
    assert options.server_host_keys is not before  # live connections keep the old table
    assert options.server_host_keys[b"ssh-ed25519"].public_data == b.public_data
    assert set(options.all_server_host_keys) == {a.public_data, b.public_data}


def test_user_certificates_permit_agent_forwarding_only_when_asked() -> None:
    ca = keys.UserCA([asyncssh.generate_private_key("ssh-ed25519")])
    key = asyncssh.generate_private_key("ssh-ed25519")
    plain = ca.sign(key, user="u", accounts=["root@sg-1"], validity_s=60)
    agent = ca.sign(
        key, user="u", accounts=["root@sg-1"], validity_s=60, permit_agent_forwarding=True
    )
    assert b"permit-agent-forwarding" not in plain.cert.public_data  # the signed blob
    assert b"permit-agent-forwarding" in agent.cert.public_data
