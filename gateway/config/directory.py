"""Directory models: the ``[[regions]]``, ``[[hosts]]``, ``[[roles]]``, ``[[users]]``,
``[[datasets]]`` and ``[[budgets]]`` entries, each with its domain value.

The same models validate the config file's seed and the admin commands' directory
changes (``gateway.config.changes``), so both refuse a mistake with the same line.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, model_validator

from gateway.config.fields import (
    MODEL,
    Account,
    Address,
    Count,
    Country,
    ForwardPort,
    KeyLine,
    LabelKey,
    Name,
    Port,
    Price,
    Residency,
    Selector,
    Slug,
)
from gateway.domain.metering.budgets import BudgetLimits
from gateway.domain.models import Host, Mode, Role, User
from gateway.domain.policy.forwards import parse_port_spec
from gateway.domain.policy.residency import DataSet


class RegionConfig(BaseModel):
    """A ``[[regions]]`` entry."""

    model_config = MODEL

    name: Slug
    """Short id used by hosts and selectors, e.g. ``sg``."""
    country: Country
    """ISO 3166 alpha-2 country the region is in, upper-case, e.g. ``SG``."""
    display: str = ""
    """Human name, e.g. ``Singapore``."""


class HostConfig(BaseModel):
    """A ``[[hosts]]`` entry: one GPU host behind the gateway."""

    model_config = MODEL

    name: Slug
    """Unique host name; what users type (``ssh -J gw sg-a100-1``)."""
    region: Slug
    """Name of the declared region the host is in."""
    address: Address
    """Where the gateway connects: a host name or IP address."""
    port: Port = 22
    """The host's sshd port."""
    host_key: KeyLine | None = None
    """Pinned host public key, one OpenSSH line (``ssh-ed25519 AAAA...``)."""
    host_ca: KeyLine | None = None
    """Instead of (or beside) ``host_key``: a CA public key; the host is trusted when it
    presents a host certificate from this CA naming the host's ``name``."""
    gpu_model: str = ""
    """GPU model as nvidia-smi names it, e.g. ``NVIDIA H100 80GB HBM3``."""
    gpu_count: Count = 0
    """Number of GPUs on the host."""
    price_per_gpu_hour: Price = 0.0
    """Price of one GPU for one hour, in the catalogue currency."""
    egress_per_gb: Price = 0.0
    """Price of one GB leaving the host's region."""
    residency: tuple[Residency, ...] = ()
    """Country codes / region names data processed here may stay in; empty means the
    region's country."""
    labels: dict[LabelKey, str] = Field(default_factory=dict)
    """Free-form tags matched by ``label:KEY=VALUE`` selectors."""

    @model_validator(mode="after")
    def _trusted_somehow(self) -> HostConfig:
        if not self.host_key and not self.host_ca:
            raise ValueError("give host_key (pinned) or host_ca (host certificates), or both")
        return self

    def to_host(self, country: str) -> Host:
        """The domain ``Host``; ``country`` is the default residency."""
        return Host(
            name=self.name,
            region=self.region,
            address=self.address,
            port=self.port,
            host_key=self.host_key or "",
            host_ca=self.host_ca or "",
            gpu_model=self.gpu_model,
            gpu_count=self.gpu_count,
            price_per_gpu_hour=self.price_per_gpu_hour,
            egress_per_gb=self.egress_per_gb,
            residency=self.residency or (country,),
            labels=dict(self.labels),
        )


class RoleConfig(BaseModel):
    """A ``[[roles]]`` entry: a grant of hosts, accounts, modes and GPUs."""

    model_config = MODEL

    name: Name
    """Unique role name, referenced by users."""
    hosts: Annotated[tuple[Selector, ...], Field(min_length=1)]
    """Host selectors: ``*``, ``name:HOST``, ``region:REGION``, ``label:KEY=VALUE``, or a
    bare host name."""
    accounts: tuple[Account, ...] = ()
    """Remote accounts the role may log in as (``*`` = any)."""
    modes: Annotated[tuple[Mode, ...], Field(min_length=1)] = (Mode.PASSTHROUGH, Mode.RECORDED)
    """Session modes allowed: ``passthrough`` and/or ``recorded``."""
    max_gpus: Count = 0
    """Most GPUs one request may ask for (0 = no limit beyond the host's)."""
    forwarding: bool = False
    """Allow local port forwards (``-L``, ``-W``, ``-D``) to the host's own loopback inside
    recorded sessions, to the ports in ``forward_ports`` only (what editors such as VS Code
    Remote-SSH need). Needs ``forward_ports``."""
    forward_ports: tuple[ForwardPort, ...] = ()
    """Ports on the host's loopback that forwards may reach: numbers and ``"LOW-HIGH"``
    ranges, e.g. ``[8888, "6006-6010"]`` (``["1024-65535"]`` for editors that pick a
    random port). The host's SSH ports (22, its inventory port, those of other inventory
    hosts at the same address) are always refused."""
    agent_forwarding: bool = False
    """Allow ``ssh -A``. Recorded sessions relay the user's agent to the host for that
    session only (its own socket and host connection, audited as ``session.agent``); in
    passthrough the certificate says ``permit-agent-forwarding`` only when every role
    granting passthrough allows it. Root on the host can use the agent while the session
    lasts, as with any agent forwarding: off by default, refusals audited and told to the
    user."""
    remote_forwarding: bool = False
    """Allow ``ssh -R`` listeners on the host's loopback, on ``forward_ports`` only, in
    recorded sessions (relayed over the gateway's connection to the host, audited)."""
    ci_golden: bool = False
    """Let CI tokens start golden runs (``POST /v1/placement/golden``) with this role;
    a CI token's other roles do not count there. User tokens need no such flag."""

    @model_validator(mode="after")
    def _ports_with_forwarding(self) -> RoleConfig:
        if self.forwarding and not self.forward_ports:
            raise ValueError(
                "forwarding = true needs forward_ports, the host ports forwards may reach "
                '(e.g. forward_ports = [8888, "6006-6010"], or ["1024-65535"] for editors)'
            )
        if self.forward_ports and not (self.forwarding or self.remote_forwarding):
            raise ValueError("forward_ports is set but forwarding and remote_forwarding are off")
        return self

    def to_role(self) -> Role:
        """The domain ``Role``."""
        return Role(
            self.name,
            self.hosts,
            self.accounts,
            self.modes,
            self.max_gpus,
            self.forwarding,
            forward_ports=tuple(parse_port_spec(p) for p in self.forward_ports),
            agent_forwarding=self.agent_forwarding,
            remote_forwarding=self.remote_forwarding,
            ci_golden=self.ci_golden,
        )


class UserConfig(BaseModel):
    """A ``[[users]]`` entry."""

    model_config = MODEL

    name: Name
    """Unique user name; shown in audit events and certificate key ids."""
    roles: tuple[Name, ...] = ()
    """Names of declared roles granted to the user."""
    keys: tuple[KeyLine, ...] = ()
    """The user's OpenSSH public keys, one line each."""
    team: str = ""
    """Team for reports and budgets."""

    def to_user(self) -> User:
        """The domain ``User``."""
        return User(self.name, self.roles, self.keys, self.team)


class DatasetConfig(BaseModel):
    """A ``[[datasets]]`` entry: a data set and the places it may be processed."""

    model_config = MODEL

    name: Name
    """Name users give with ``--data``."""
    regions: tuple[Name, ...] = ()
    """Regions (inventory names) where it may be processed."""
    countries: tuple[str, ...] = ()
    """Countries (ISO 3166 alpha-2) where it may be processed."""

    def to_dataset(self) -> DataSet:
        return DataSet(self.name, self.regions, tuple(c.upper() for c in self.countries))


class BudgetConfig(BaseModel):
    """A ``[[budgets]]`` entry: limits for one user or one team (give exactly one)."""

    model_config = MODEL

    user: str = ""
    """User the limits apply to."""
    team: str = ""
    """Team the limits apply to (every member's sessions count)."""
    daily: Price | None = None
    """Most spent per UTC day, in USD; new sessions are refused once reached."""
    monthly: Price | None = None
    """Most spent per UTC month, in USD."""

    @model_validator(mode="after")
    def _one_owner(self) -> BudgetConfig:
        if bool(self.user) == bool(self.team):
            raise ValueError("give exactly one of user or team")
        return self

    def to_limits(self) -> BudgetLimits:
        return BudgetLimits(self.daily, self.monthly)
