"""Inventory lookups, the forwarding resolver, and public key parsing."""

from __future__ import annotations

import base64
import dataclasses

import pytest

from gateway.domain.inventory.hosts import Inventory
from gateway.domain.inventory.keys import parse_public_key
from gateway.domain.models import Host, Region, Role, User
from gateway.errors import ConfigError, KeyMaterialError

ALICE_DATA = "AAAAC3NzaC1lZDI1NTE5AAAAIA4rvjnjHBt9MCKTTCSqLAI8S4digGjBcYKacs34ww99"
BOB_DATA = "AAAAC3NzaC1lZDI1NTE5AAAAIPb4+RIzy8qFs5n/tSj3nTVu2+egcSW6oSmQL1wKEckQ"
CAROL_DATA = "AAAAC3NzaC1lZDI1NTE5AAAAII0I5d3r82vegTHpD1TU+FXE3ultygwQ/9i8YSg8a4AR"


def wire(*fields: bytes) -> bytes:
    return b"".join(len(f).to_bytes(4, "big") + f for f in fields)


def line(*fields: bytes, algorithm: str | None = None) -> str:
    name = algorithm if algorithm is not None else fields[0].decode()
    return f"{name} {base64.b64encode(wire(*fields)).decode()}"


def _b64(blob: bytes) -> str:
    return base64.b64encode(blob).decode()


RSA_2048 = wire(b"ssh-rsa", b"\x01\x00\x01", b"\x00" + b"\xc5" * 256)
RSA_1024 = wire(b"ssh-rsa", b"\x01\x00\x01", b"\x00" + b"\xc5" * 128)
P256 = wire(b"ecdsa-sha2-nistp256", b"nistp256", b"\x04" + b"\x11" * 64)

SG1 = Host("sg-1", "sg", "127.0.0.1", 2201)
MY1 = Host("my-1", "my", "127.0.0.1", 2202)
AE1 = Host("ae-1", "ae", "gpu-ae.internal")
DB = Host("db", "ae", "10.0.0.5", 2222)

DEV = Role("dev", ("region:sg",))
OPS = Role("ops", ("*",))
ALICE = User("alice", ("dev", "gone", "ops"), (f"ssh-ed25519 {ALICE_DATA} alice@laptop",))


@pytest.fixture
def inventory() -> Inventory:
    bob = User("bob", ("ops",), (f"ssh-ed25519 {BOB_DATA}", f"ssh-rsa {_b64(RSA_2048)} bob"))
    return Inventory(
        hosts=(SG1, MY1, AE1, DB),
        regions=(Region("sg", "SG"), Region("my", "MY"), Region("ae", "AE")),
        roles=(DEV, OPS),
        users=(ALICE, bob),
    )


@pytest.mark.parametrize(
    ("dest_host", "dest_port", "expected"),
    [
        # By inventory name: port 22 (what `ssh -J gw NAME` asks for) or the host's port.
        ("sg-1", 22, "sg-1"),
        ("sg-1", 2201, "sg-1"),
        ("my-1", 22, "my-1"),
        ("ae-1", 22, "ae-1"),
        ("db", 22, "db"),
        ("db", 2222, "db"),
        # By configured address string and exactly the host's port.
        ("127.0.0.1", 2201, "sg-1"),
        ("127.0.0.1", 2202, "my-1"),
        ("gpu-ae.internal", 22, "ae-1"),
        ("10.0.0.5", 2222, "db"),
        # Another port on a declared name or address.
        ("sg-1", 2202, None),
        ("sg-1", 23, None),
        ("sg-1", 0, None),
        ("sg-1", 65536, None),
        ("127.0.0.1", 22, None),
        ("127.0.0.1", 5432, None),
        ("10.0.0.5", 22, None),
        ("gpu-ae.internal", 2201, None),
        # The gateway's own listeners.
        ("127.0.0.1", 2222, None),
        ("127.0.0.1", 8080, None),
        # Other spellings of a declared address.
        ("127.1", 2201, None),
        ("localhost", 2201, None),
        ("127.0.0.2", 2201, None),
        ("0.0.0.0", 2201, None),
        ("::1", 2201, None),
        ("::ffff:127.0.0.1", 2201, None),
        ("2130706433", 2201, None),
        ("0x7f000001", 2201, None),
        ("127.000.000.001", 2201, None),
        ("127.0.0.1 ", 2201, None),
        ("GPU-AE.internal", 22, None),
        ("gpu-ae.internal.", 22, None),
        # Other spellings of a name, unknown and empty names.
        ("SG-1", 22, None),
        ("sg-1.", 22, None),
        (" sg-1", 22, None),
        ("sg-1.example.com", 22, None),
        ("unknown", 22, None),
        ("", 22, None),
        ("", 2201, None),
    ],
)
def test_resolve_forward(
    inventory: Inventory, dest_host: str, dest_port: int, expected: str | None
) -> None:
    host = inventory.resolve_forward(dest_host, dest_port)
    assert (host.name if host else None) == expected


def test_resolve_forward_refuses_bool_port(inventory: Inventory) -> None:
    assert inventory.resolve_forward("sg-1", True) is None


def test_lookups(inventory: Inventory) -> None:
    assert inventory.host("my-1") == MY1
    assert inventory.host("MY-1") is None
    assert inventory.user("alice") == ALICE
    assert inventory.user("carol") is None
    assert inventory.role("dev") == DEV
    assert inventory.role("gone") is None


@pytest.mark.parametrize(
    ("user", "expected"),
    [("alice", ("dev", "ops")), (ALICE, ("dev", "ops")), ("bob", ("ops",)), ("carol", ())],
)
def test_roles_of(inventory: Inventory, user: User | str, expected: tuple[str, ...]) -> None:
    assert tuple(r.name for r in inventory.roles_of(user)) == expected


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (f"ssh-ed25519 {ALICE_DATA} alice@laptop", "alice"),
        (f"ssh-ed25519 {ALICE_DATA}", "alice"),
        (f"ssh-ed25519 {ALICE_DATA} another comment with spaces", "alice"),
        (f"  ssh-ed25519   {ALICE_DATA}  \n", "alice"),
        (ALICE_DATA, "alice"),
        (base64.b64decode(ALICE_DATA), "alice"),
        (f"ssh-ed25519 {BOB_DATA}", "bob"),
        (f"ssh-rsa {_b64(RSA_2048)}", "bob"),
        (RSA_2048, "bob"),
        (f"ssh-ed25519 {CAROL_DATA}", None),
        (f"ecdsa-sha2-nistp256 {ALICE_DATA}", None),
        (f"ssh-ed25519 {ALICE_DATA[:-4]}", None),
        ("ssh-ed25519 !!!", None),
        ("", None),
        (b"", None),
        ("not a key", None),
    ],
)
def test_user_for_key(inventory: Inventory, key: str | bytes, expected: str | None) -> None:
    user = inventory.user_for_key(key)
    assert (user.name if user else None) == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hosts": (SG1, SG1)}, "duplicate host sg-1"),
        ({"hosts": (SG1, dataclasses.replace(MY1, port=2201))}, "duplicate host address"),
        ({"regions": (Region("sg", "SG"), Region("sg", "SG"))}, "duplicate region sg"),
        ({"roles": (DEV, DEV)}, "duplicate role dev"),
        ({"users": (ALICE, ALICE)}, "duplicate user alice"),
        (
            {"users": (ALICE, User("eve", (), (f"ssh-ed25519 {ALICE_DATA} stolen",)))},
            "user eve: key is already registered to alice",
        ),
        ({"users": (User("eve", (), ("ssh-dss AAAA",)),)}, "user eve: bad key"),
    ],
)
def test_inventory_rejects_inconsistency(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Inventory(**kwargs)  # type: ignore[arg-type]


def test_inventory_is_immutable(inventory: Inventory) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        inventory.hosts = ()  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "algorithm", "comment"),
    [
        (f"ssh-ed25519 {ALICE_DATA} alice@laptop", "ssh-ed25519", "alice@laptop"),
        (f"ssh-ed25519 {ALICE_DATA}", "ssh-ed25519", ""),
        (f"ssh-ed25519 {ALICE_DATA} two words", "ssh-ed25519", "two words"),
        (f"ssh-rsa {_b64(RSA_2048)}", "ssh-rsa", ""),
        (f"ecdsa-sha2-nistp256 {_b64(P256)} k", "ecdsa-sha2-nistp256", "k"),
        (
            line(b"sk-ssh-ed25519@openssh.com", b"\x01" * 32, b"ssh:"),
            "sk-ssh-ed25519@openssh.com",
            "",
        ),
        (
            line(
                b"sk-ecdsa-sha2-nistp256@openssh.com", b"nistp256", b"\x04" + b"\x02" * 64, b"ssh:"
            ),
            "sk-ecdsa-sha2-nistp256@openssh.com",
            "",
        ),
    ],
)
def test_parse_public_key(text: str, algorithm: str, comment: str) -> None:
    key = parse_public_key(text)
    assert (key.algorithm, key.comment) == (algorithm, comment)
    assert parse_public_key(key.line).blob == key.blob


def test_fingerprint_matches_ssh_keygen() -> None:
    key = parse_public_key(f"ssh-ed25519 {ALICE_DATA}")
    assert key.fingerprint == "SHA256:v7xlodyRGQed1BDT71oxe/7l/kGx1XBB6ZbeXPLg3Lg"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected '<algorithm> <base64 key> \\[comment\\]'"),
        ("ssh-ed25519", "expected"),
        (f"ssh-dss {ALICE_DATA}", "unsupported key type 'ssh-dss'"),
        (f"ssh-ed25519-cert-v01@openssh.com {ALICE_DATA}", "unsupported key type"),
        (f'from="10.0.0.1" ssh-ed25519 {ALICE_DATA}', "unsupported key type"),
        ("ssh-ed25519 AAAA!!!!", "not valid base64"),
        ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA4rvjnjHBt9MCKTTCSqLAI8S4", "not valid base64"),
        (f"ssh-ed25519 {ALICE_DATA[:-8]}AAAA", "truncated"),
        (f"ecdsa-sha2-nistp256 {ALICE_DATA}", "does not match the key data"),
        (f"ssh-rsa {_b64(RSA_1024)}", "RSA key has 1024 bits"),
        (line(b"ssh-ed25519", b"\x01" * 31), "malformed ssh-ed25519"),
        (line(b"ssh-ed25519", b"\x01" * 32, b"extra"), "malformed ssh-ed25519"),
        (line(b"ecdsa-sha2-nistp256", b"nistp384", b"\x04" + b"\x11" * 64), "malformed"),
        (line(b"ecdsa-sha2-nistp256", b"nistp256", b"\x02" + b"\x11" * 64), "malformed"),
        (line(b"ssh-rsa", b"\x01\x00\x01"), "malformed ssh-rsa"),
    ],
)
def test_parse_public_key_rejects(text: str, message: str) -> None:
    with pytest.raises(KeyMaterialError, match=message):
        parse_public_key(text)
