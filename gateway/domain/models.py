"""Frozen domain types shared by the gateway's services and pure modules.

Config (pydantic, in ``settings``) is converted into these once at start-up;
nothing below imports asyncssh, docker or any edge.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class Mode(StrEnum):
    """How a session reaches a host."""

    PASSTHROUGH = "passthrough"  # direct-tcpip to the host's sshd, end-to-end encrypted
    RECORDED = "recorded"  # gateway terminates and re-originates, recording the terminal


@dataclass(frozen=True, slots=True)
class Region:
    name: str  # short id, e.g. "sg"
    country: str  # ISO 3166 alpha-2, e.g. "SG"
    display: str = ""


@dataclass(frozen=True, slots=True)
class Host:
    """A regional GPU host as the inventory declares it."""

    name: str
    region: str
    address: str
    port: int = 22
    host_key: str = ""  # pinned public key, OpenSSH one-line form ("ssh-ed25519 AAAA...")
    host_ca: str = ""  # or: a CA whose host certificates for this name are trusted
    gpu_model: str = ""
    gpu_count: int = 0
    price_per_gpu_hour: float = 0.0
    egress_per_gb: float = 0.0
    residency: tuple[str, ...] = ()  # countries/regions data processed here stays in
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Role:
    """A grant: which hosts, which remote accounts, which modes, how many GPUs."""

    name: str
    hosts: tuple[
        str, ...
    ]  # selectors: "*", "name:sg-1", "region:sg", "label:tier=prod", or a bare host name
    accounts: tuple[str, ...] = ()
    modes: tuple[Mode, ...] = (Mode.PASSTHROUGH, Mode.RECORDED)
    max_gpus: int = 0  # 0 = no GPU limit beyond the host's
    forwarding: bool = False  # local forwards to the host's loopback in recorded sessions
    ci_golden: bool = False  # CI tokens may start golden runs (POST /v1/placement/golden)
    forward_ports: tuple[tuple[int, int], ...] = ()  # (low, high) ranges; never the SSH port
    agent_forwarding: bool = False  # ssh -A inside recorded sessions
    remote_forwarding: bool = False  # ssh -R inside recorded sessions


@dataclass(frozen=True, slots=True)
class User:
    name: str
    roles: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()  # OpenSSH public keys, one-line form
    team: str = ""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking, once authenticated."""

    user: str
    roles: tuple[Role, ...]
    team: str = ""
    key_fingerprint: str = ""
    cert_id: str = ""  # key id of the user certificate, if one was used
    source: str = ""  # "address:port" of the client


@dataclass(frozen=True, slots=True)
class AccessRequest:
    """Something a principal wants to do on a host."""

    host: Host
    mode: Mode
    account: str = ""  # remote account; "" when the gateway cannot see it (passthrough)
    gpus: int = 0


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str
    role: str = ""  # the role that granted it, when allowed
