"""The OpenSSH config gpuhop writes, the Include it installs, and `Host *` warnings."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from client.identity import Paths, Profile
from client.sshconf import (
    GATEWAY_ALIAS,
    HostEntry,
    config_text,
    include_line,
    install,
    overriding_blocks,
    warning_for,
)
from tests.conftest import require

PROFILE = Profile(
    url="https://gw.example:8080",
    user="rita",
    ssh_host="gw.example",
    ssh_port=2222,
    host_key="ssh-ed25519 AAAA",
    host_ca_key="ssh-ed25519 BBBB",
    host_keys={"sg-a100-1": "ssh-ed25519 CCCC"},
    accounts=("root",),
)


def _text(tmp_path: Path) -> str:
    hosts = [HostEntry("sg-a100-1", "root"), HostEntry("my-h100-2", "ubuntu")]
    return config_text(PROFILE, Paths(tmp_path / "data"), hosts)


def test_config_has_gateway_and_one_block_per_host(tmp_path: Path) -> None:
    text = _text(tmp_path)
    assert f"Host {GATEWAY_ALIAS}\n  HostName gw.example\n  Port 2222\n  User rita\n" in text
    for name, account in (("sg-a100-1", "root"), ("my-h100-2", "ubuntu")):
        block = text.split(f"Host {name}\n", 1)[1].split("\nHost ", 1)[0]
        assert f"ProxyJump {GATEWAY_ALIAS}" in block and f"User {account}" in block
        assert f"IdentityFile {tmp_path / 'data' / 'id_ed25519'}" in block
        assert f"CertificateFile {tmp_path / 'data' / 'id_ed25519-cert.pub'}" in block
        assert f"UserKnownHostsFile {tmp_path / 'data' / 'known_hosts'}" in block
        assert "ServerAliveInterval 5" in block and "ServerAliveCountMax 3" in block
        assert "StrictHostKeyChecking yes" in block
    assert "~" not in text  # ssh expands ~ from the password database, not $HOME


def test_openssh_accepts_the_config(tmp_path: Path) -> None:
    require("ssh")
    path = tmp_path / "cfg"
    path.write_text(_text(tmp_path))
    result = subprocess.run(
        ["ssh", "-G", "-F", str(path), "sg-a100-1"], capture_output=True, text=True, timeout=10
    )
    assert result.returncode == 0, result.stderr
    settings = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
    assert settings["proxyjump"] == GATEWAY_ALIAS
    assert settings["user"] == "root"
    assert settings["serveraliveinterval"] == "5" and settings["serveralivecountmax"] == "3"


def test_hostile_names_are_refused(tmp_path: Path) -> None:
    from client.errors import ClientError

    with pytest.raises(ClientError):
        config_text(PROFILE, Paths(tmp_path), [HostEntry("x\n  ProxyCommand evil", "root")])


def test_install_puts_one_include_at_the_top(tmp_path: Path) -> None:
    managed = tmp_path / "data" / "ssh_config"
    config = tmp_path / "home" / ".ssh" / "config"
    config.parent.mkdir(parents=True)
    config.write_text("Host old\n  User me\n")
    config.chmod(0o644)
    path, changed = install(managed, config)
    assert (path, changed) == (config, True)
    text = config.read_text()
    assert text.splitlines()[1] == include_line(managed)
    assert text.endswith("Host old\n  User me\n")
    assert stat.S_IMODE(config.stat().st_mode) == 0o644
    assert install(managed, config) == (config, False)
    assert config.read_text() == text


def test_install_creates_a_private_config(tmp_path: Path) -> None:
    config = tmp_path / "home" / ".ssh" / "config"
    install(tmp_path / "m", config)
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700


WILD_BEFORE = """\
Host *
  User someone
  IdentityFile ~/.ssh/id_other
  ServerAliveInterval 60
Include {managed}
Host *
  ProxyJump elsewhere
"""


def test_host_star_before_the_include_is_found(tmp_path: Path) -> None:
    managed = tmp_path / "m"
    text = WILD_BEFORE.format(managed=managed)
    assert overriding_blocks(text, managed) == [(1, ["user", "serveraliveinterval"])]
    # Printed (no Include yet): every Host * block counts.
    assert [n for n, _ in overriding_blocks(text, None)] == [1, 6]


@pytest.mark.parametrize(
    "text",
    [
        "Host *\n  IdentityFile ~/.ssh/x\n  ForwardAgent no\n",  # adds up / not ours
        "Host other\n  User x\n",  # not a wildcard
        "# Host *\n#  User x\n",
        "",
    ],
)
def test_harmless_configs_get_no_warning(tmp_path: Path, text: str) -> None:
    config = tmp_path / "config"
    config.write_text(text)
    assert warning_for(config, None) is None


def test_match_all_counts_as_wildcard(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text("Match all\n  User=x\n")
    warning = warning_for(config, None)
    assert warning is not None and "user" in warning and "config:1" in warning
    assert warning.count("\n") == 0
