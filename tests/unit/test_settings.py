"""Config loading: the example loads, every mistake is one line naming file and key."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from gateway.config.directory import HostConfig, RegionConfig, RoleConfig, UserConfig
from gateway.config.loader import Settings, load_settings
from gateway.config.process import GatewaySettings
from gateway.domain.models import Mode
from gateway.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "gateway.toml"
KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKbsaD3em6GU/pUGOuUOvPqzah812/DqAkv5H1etMPlN a"
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAII0I5d3r82vegTHpD1TU+FXE3ultygwQ/9i8YSg8a4AR b"
KEY_C = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA4rvjnjHBt9MCKTTCSqLAI8S4digGjBcYKacs34ww99 c"
KEY_D = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPb4+RIzy8qFs5n/tSj3nTVu2+egcSW6oSmQL1wKEckQ d"

BASE = f"""\
[[regions]]
name = "sg"
country = "SG"

[[regions]]
name = "my"
country = "MY"

[[hosts]]
name = "sg-1"
region = "sg"
address = "127.0.0.1"
port = 2201
host_key = "{KEY_A}"

[[hosts]]
name = "my-1"
region = "my"
address = "127.0.0.1"
port = 2202
host_key = "{KEY_B}"

[[roles]]
name = "dev"
hosts = ["region:sg", "name:my-1"]
accounts = ["gpu"]

[[users]]
name = "alice"
roles = ["dev"]
keys = ["{KEY_C}"]
"""


@pytest.fixture(autouse=True)
def _no_gpuhop_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.upper().startswith("GPUHOP_"):
            monkeypatch.delenv(name)
    yield


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_example_loads() -> None:
    settings = load_settings(EXAMPLE)
    base = EXAMPLE.parent
    assert [r.name for r in settings.regions] == ["sg", "my", "ae"]
    assert [h.name for h in settings.hosts] == ["sg-a100-1", "my-h100-1", "ae-h200-1"]
    assert [r.name for r in settings.roles] == ["dev", "admin"]
    assert len(settings.users) == 2
    gw = settings.gateway
    assert gw.host_key == base / "keys" / "gateway_host_ed25519"
    assert gw.recordings_dir == base / "recordings"
    assert gw.storage_url.get_secret_value() == f"sqlite:///{base}/gpuhop.db"
    assert "gpuhop.db" not in repr(settings)

    inv = settings.inventory()
    my = inv.host("my-h100-1")
    assert my is not None and my.residency == ("MY",) and my.gpu_count == 8
    assert inv.roles_of("bob")[1].modes == (Mode.PASSTHROUGH, Mode.RECORDED)
    bob_key = settings.users[1].keys[0].rsplit(" ", 1)[0]
    bob = inv.user_for_key(bob_key)
    assert bob is not None and bob.name == "bob"


def test_defaults_and_base_config(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, BASE))
    gw = settings.gateway
    assert (gw.ssh_host, gw.ssh_port, gw.api_port) == ("127.0.0.1", 2222, 8080)
    assert (gw.window, gw.max_packet, gw.workers) == (8 * 1024 * 1024, 262144, 1)
    assert (gw.log_level, gw.log_format) == ("info", "console")
    assert settings.roles[0].modes == (Mode.PASSTHROUGH, Mode.RECORDED)
    assert settings.inventory().hosts[0].residency == ("SG",)


def test_every_field_is_documented() -> None:
    models: list[type[BaseModel]] = [
        Settings,
        GatewaySettings,
        RegionConfig,
        HostConfig,
        RoleConfig,
        UserConfig,
    ]
    undocumented = [
        f"{model.__name__}.{name}"
        for model in models
        for name, field in model.model_fields.items()
        if not field.description
    ]
    assert undocumented == []


@pytest.mark.parametrize(
    ("storage_url", "expected"),
    [
        ("sqlite:///data/gpuhop.db", "sqlite:///{base}/data/gpuhop.db"),
        ("sqlite:///gpuhop.db?mode=rwc", "sqlite:///{base}/gpuhop.db?mode=rwc"),
        ("sqlite:////var/lib/gpuhop.db", "sqlite:////var/lib/gpuhop.db"),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        ("postgresql://gw:pw@127.0.0.1:5432/gpuhop", "postgresql://gw:pw@127.0.0.1:5432/gpuhop"),
    ],
)
def test_relative_paths_resolve_against_config_dir(
    tmp_path: Path, storage_url: str, expected: str
) -> None:
    text = f'[gateway]\nstorage_url = "{storage_url}"\nhost_key = "/etc/gpuhop/host"\n' + BASE
    settings = load_settings(write(tmp_path, text))
    assert settings.gateway.storage_url.get_secret_value() == expected.format(base=tmp_path)
    assert settings.gateway.host_key == Path("/etc/gpuhop/host")
    assert settings.gateway.user_ca_key == tmp_path / "keys" / "user_ca"


def test_env_overrides_gateway_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUHOP_GATEWAY__SSH_PORT", "2300")
    monkeypatch.setenv("GPUHOP_GATEWAY__LOG_FORMAT", "json")
    monkeypatch.setenv("GPUHOP_HOSTS", "not json")  # inventory tables are not env-overridable
    settings = load_settings(
        write(tmp_path, "[gateway]\nssh_port = 2222\napi_port = 9000\n" + BASE)
    )
    assert settings.gateway.ssh_port == 2300
    assert settings.gateway.log_format == "json"
    assert settings.gateway.api_port == 9000
    assert len(settings.hosts) == 2


def test_clients_gateway_url_is_not_the_gateway_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPUHOP_GATEWAY", "https://gw.example:8080")  # the client's API URL
    monkeypatch.setenv("GPUHOP_GATEWAY__SSH_PORT", "2300")
    settings = load_settings(write(tmp_path, "[gateway]\nssh_port = 2222\n" + BASE))
    assert settings.gateway.ssh_port == 2300


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        (
            "GPUHOP_GATEWAY__SSH_PORT",
            "lots",
            "gateway.ssh_port (from GPUHOP_GATEWAY__SSH_PORT): "
            "Input should be a valid integer, unable to parse string as an integer",
        ),
        (
            "GPUHOP_GATEWAY__SSHPORT",
            "2300",
            "gateway.sshport (from GPUHOP_GATEWAY__SSHPORT): unknown key; did you mean 'ssh_port'?",
        ),
    ],
)
def test_env_error_names_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    path = write(tmp_path, BASE)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value) == f"{path}: {expected}"


def _sub(old: str, new: str) -> str:
    """BASE with one substitution."""
    assert old in BASE
    return BASE.replace(old, new, 1)


CASES = [
    pytest.param("a = 1\nb\n" + BASE, "line 2: Expected '=' after a key", id="toml-syntax"),
    pytest.param('x = "', "end of file: Unterminated string", id="toml-eof"),
    pytest.param("[gatewy]\n" + BASE, "gatewy: unknown key; did you mean 'gateway'?", id="top-key"),
    pytest.param("_env_file = '.env'\n" + BASE, "_env_file: unknown key", id="init-arg-key"),
    pytest.param(
        "[gateway]\nsshport = 1\n" + BASE,
        "gateway.sshport: unknown key; did you mean 'ssh_port'?",
        id="gateway-key",
    ),
    pytest.param(
        _sub("port = 2202\n", "port = 2202\ngpus = 8\n"),
        "hosts[1].gpus: unknown key",
        id="host-key",
    ),
    pytest.param(
        _sub("port = 2202", "port = 70000"),
        "hosts[1].port: Input should be less than or equal to 65535",
        id="bad-port",
    ),
    pytest.param(
        _sub("port = 2202", "port = true"),
        "hosts[1].port: expected a number, not true/false",
        id="bool-port",
    ),
    pytest.param(
        "[gateway]\nssh_port = -1\n" + BASE,
        "gateway.ssh_port: Input should be greater than or equal to 0",
        id="gateway-port",
    ),
    pytest.param(
        _sub(KEY_A, "ssh-ed25519 AAAA"),
        "hosts[0].host_key: not an OpenSSH public key line: key data is truncated",
        id="host-key-truncated",
    ),
    pytest.param(
        _sub(KEY_A, "ssh-dss " + KEY_A.split()[1]),
        "hosts[0].host_key: not an OpenSSH public key line: unsupported key type 'ssh-dss'",
        id="host-key-dss",
    ),
    pytest.param(
        _sub(KEY_C, "ssh-ed25519 @@@"),
        "users[0].keys[0]: not an OpenSSH public key line: key data is not valid base64",
        id="user-key",
    ),
    pytest.param(
        _sub('region = "my"', 'region = "ae"'),
        "hosts[1].region: unknown region 'ae' (declared: my, sg)",
        id="host-region",
    ),
    pytest.param(
        _sub('"region:sg"', '"region:ae"'),
        "roles[0].hosts[0]: unknown region 'ae' (declared: my, sg)",
        id="role-region",
    ),
    pytest.param(
        _sub('"name:my-1"', '"name:my-2"'),
        "roles[0].hosts[1]: unknown host 'my-2' (declared: my-1, sg-1)",
        id="role-host",
    ),
    pytest.param(
        _sub('"name:my-1"', '"my-2"'),
        "roles[0].hosts[1]: unknown host 'my-2'",
        id="role-bare-host",
    ),
    pytest.param(
        _sub('"name:my-1"', '"tier=prod"'),
        "roles[0].hosts[1]: 'tier=prod' is not a host selector",
        id="role-selector",
    ),
    pytest.param(
        _sub('accounts = ["gpu"]', 'modes = ["shell"]'),
        "roles[0].modes[0]: Input should be 'passthrough' or 'recorded'",
        id="role-mode",
    ),
    pytest.param(
        _sub('accounts = ["gpu"]', 'accounts = ["root;rm"]'),
        "roles[0].accounts[0]: 'root;rm' is not an account name",
        id="role-account",
    ),
    pytest.param(
        _sub('roles = ["dev"]', 'roles = ["ops"]'),
        "users[0].roles[0]: unknown role 'ops' (declared: dev)",
        id="user-role",
    ),
    pytest.param(
        _sub('name = "my-1"', 'name = "sg-1"'),
        "hosts[1].name: duplicate name 'sg-1' (also hosts[0])",
        id="duplicate-host",
    ),
    pytest.param(
        _sub("port = 2202", "port = 2201"),
        "hosts[1].port: same address and port as hosts[0]",
        id="duplicate-endpoint",
    ),
    pytest.param(
        "[gateway]\nssh_port = 2201\n" + BASE,
        "hosts[0].port: 127.0.0.1:2201 is the gateway's own listener",
        id="gateway-listener",
    ),
    pytest.param(
        _sub(f'keys = ["{KEY_C}"]', f'keys = ["{KEY_C}", "{KEY_C.replace(" c", " again")}"]'),
        "users[0].keys[1]: key is already registered to user alice",
        id="duplicate-key",
    ),
    pytest.param(
        _sub('country = "MY"', 'country = "my"'),
        "regions[1].country: 'my' is not an upper-case ISO 3166 alpha-2 code, e.g. SG",
        id="country-case",
    ),
    pytest.param(
        _sub('name = "sg"', 'name = "Sg"'),
        "regions[0].name: 'Sg' is not a slug",
        id="region-slug",
    ),
    pytest.param(
        _sub('address = "127.0.0.1"\nport = 2202', "port = 2202"),
        "hosts[1].address: Field required",
        id="missing-address",
    ),
    pytest.param(
        _sub("port = 2202", 'port = 2202\nresidency = ["eu"]'),
        "hosts[1].residency[0]: unknown region 'eu'",
        id="residency",
    ),
    pytest.param(
        _sub("port = 2202", "port = 2202\nprice_per_gpu_hour = -1.0"),
        "hosts[1].price_per_gpu_hour: Input should be greater than or equal to 0",
        id="negative-price",
    ),
    pytest.param(
        _sub("port = 2202", "port = 2202\nprice_per_gpu_hour = inf"),
        "hosts[1].price_per_gpu_hour: Input should be a finite number",
        id="inf-price",
    ),
    pytest.param(
        _sub("port = 2202", 'port = 2202\nlabels = { "a b" = "x" }'),
        "hosts[1].labels['a b']: 'a b' is not a label key",
        id="label-key",
    ),
    pytest.param(
        '[gateway]\nlog_format = "xml"\n' + BASE,
        "gateway.log_format: Input should be 'json' or 'console'",
        id="log-format",
    ),
    pytest.param(
        "[gateway]\nmax_packet = 1048576\nwindow = 65536\n" + BASE,
        "gateway.max_packet: 1048576 exceeds window (65536)",
        id="packet-over-window",
    ),
    pytest.param(
        "[gateway]\ncert_default_validity_s = 86400\n" + BASE,
        "gateway.cert_default_validity_s: 86400 exceeds cert_max_validity_s (43200)",
        id="cert-validity",
    ),
    pytest.param(
        "[gateway]\nworkers = 0\nwindow = 1\n" + BASE,
        "gateway.workers: Input should be greater than or equal to 1 (and 1 more problem)",
        id="several-problems",
    ),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_errors_are_one_line(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {expected}"), message


@pytest.mark.parametrize(
    ("name", "expected"),
    [("missing.toml", "no such file"), (".", "is a directory, not a file")],
)
def test_unreadable_file(tmp_path: Path, name: str, expected: str) -> None:
    path = tmp_path / name
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value) == f"{path}: {expected}"


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_bytes(b'x = "\xff"\n')
    with pytest.raises(ConfigError, match=r"gateway\.toml: not UTF-8 text$"):
        load_settings(path)
