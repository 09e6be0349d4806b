"""Gateway configuration: one TOML file, loaded once at start-up and passed down.

The file has a ``[gateway]`` table (listeners, key files, limits) and the
inventory tables ``[[regions]]``, ``[[hosts]]``, ``[[roles]]`` and ``[[users]]``.
Any ``[gateway]`` field can be overridden from the environment as
``GPUHOP_GATEWAY__<FIELD>`` (e.g. ``GPUHOP_GATEWAY__SSH_PORT=2300``); the
inventory tables cannot, because a half-overridden list of hosts is a trap.

Everything is validated here so that a mistake stops start-up with one line
naming the file, the key and the problem (``ConfigError``), instead of
surfacing as a refused connection later. Relative paths, including a relative
SQLite database, are resolved against the config file's directory so the
gateway behaves the same whatever directory it is started from.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from gateway.errors import ConfigError, KeyMaterialError
from gateway.inventory.hosts import Inventory
from gateway.inventory.keys import parse_public_key
from gateway.metering.budgets import BudgetLimits
from gateway.models import Host, Mode, Region, Role, User
from gateway.policy.forwards import parse_port_spec
from gateway.policy.residency import DataSet

ENV_PREFIX = "GPUHOP_"
_SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ACCOUNT = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
_COUNTRY = re.compile(r"[A-Z]{2}")
_ADDRESS = re.compile(r"[A-Za-z0-9._:%-]+")
_LABEL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,62}")


def _matching(pattern: re.Pattern[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"{value!r} is not {what}")
        return value

    return AfterValidator(check)


def _not_bool(value: object) -> object:
    # pydantic's lax mode reads true as 1; a boolean where a number belongs is a typo.
    if isinstance(value, bool):
        raise ValueError("expected a number, not true/false")
    return value


def _key_line(value: str) -> str:
    try:
        parse_public_key(value)
    except KeyMaterialError as exc:
        raise ValueError(f"not an OpenSSH public key line: {exc}") from None
    return value.strip()


def _network(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address or CIDR network") from None


def _account(value: str) -> str:
    if value != "*" and not _ACCOUNT.fullmatch(value):
        raise ValueError(f"{value!r} is not an account name (or '*')")
    return value


def _selector(value: str) -> str:
    kind, sep, rest = value.partition(":")
    ok = value == "*" or (not sep and _SLUG.fullmatch(value) is not None)
    if kind in ("name", "region"):
        ok = _SLUG.fullmatch(rest) is not None
    elif kind == "label":
        key, eq, _ = rest.partition("=")
        ok = bool(eq) and _LABEL_KEY.fullmatch(key) is not None
    if not ok:
        raise ValueError(
            f"{value!r} is not a host selector "
            "('*', 'name:HOST', 'region:REGION', 'label:KEY=VALUE' or a host name)"
        )
    return value


Slug = Annotated[str, _matching(_SLUG, "a slug (lower-case letters, digits, '-'), e.g. sg-a100-1")]
Name = Annotated[str, _matching(_NAME, "a name (letters, digits, '.', '_', '-')")]
Country = Annotated[str, _matching(_COUNTRY, "an upper-case ISO 3166 alpha-2 code, e.g. SG")]
Account = Annotated[str, AfterValidator(_account)]
Address = Annotated[str, _matching(_ADDRESS, "a host name or IP address")]
LabelKey = Annotated[
    str, _matching(_LABEL_KEY, "a label key (letters, digits, '.', '_', '/', '-')")
]
KeyLine = Annotated[str, AfterValidator(_key_line)]
Selector = Annotated[str, AfterValidator(_selector)]


def _forward_port(value: object) -> object:
    low, high = parse_port_spec(value)  # one-line ValueError for anything else
    return low if isinstance(value, int) else (str(low) if low == high else f"{low}-{high}")


ForwardPort = Annotated[int | str, BeforeValidator(_forward_port)]


Network = Annotated[str, AfterValidator(_network)]
Residency = Annotated[
    str,
    _matching(re.compile(f"{_COUNTRY.pattern}|{_SLUG.pattern}"), "a country code or region name"),
]
Int = Annotated[int, BeforeValidator(_not_bool)]
Count = Annotated[Int, Field(ge=0)]
Port = Annotated[Int, Field(ge=1, le=65535)]
ListenPort = Annotated[Int, Field(ge=0, le=65535)]
Price = Annotated[float, BeforeValidator(_not_bool), Field(ge=0, allow_inf_nan=False)]
Seconds = Annotated[float, BeforeValidator(_not_bool), Field(ge=0, allow_inf_nan=False)]
PositiveSeconds = Annotated[float, BeforeValidator(_not_bool), Field(gt=0, allow_inf_nan=False)]


DEFAULT_GOLDEN = (
    "nvidia-smi --query-gpu=index,name,utilization.gpu --format=csv,noheader"
    " && dd if=/dev/zero of=/dev/null bs=1M count=512 2>&1 | tail -n 1"
)


def _fail(key: str, problem: str) -> NoReturn:
    """Raise a validation error for ``key`` (relative to the model being checked)."""
    raise PydanticCustomError("gpuhop_config", "{problem}", {"key": key, "problem": problem})


_MODEL = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class GatewaySettings(BaseModel):
    """The ``[gateway]`` table: how the gateway itself listens, stores and limits."""

    model_config = _MODEL

    ssh_host: str = "127.0.0.1"
    """Address the SSH front listens on."""
    ssh_port: ListenPort = 2222
    """Port the SSH front listens on (0 picks a free one, for tests)."""
    api_host: str = "127.0.0.1"
    """Address the HTTP API listens on."""
    api_port: ListenPort = 8080
    """Port the HTTP API listens on (0 picks a free one, for tests)."""
    api_trusted_proxies: list[Network] = []
    """Addresses or CIDR networks of reverse proxies (TLS terminators) in front of the
    API. Only a request from one of these has its ``X-Forwarded-For`` read: the client
    is the rightmost address there that is not a trusted proxy. Empty: never read."""
    api_max_body_bytes: Annotated[Int, Field(ge=1024, le=64 * 1024**2)] = 1024**2
    """Largest HTTP API request body, checked before routing, parsing or authentication
    (by Content-Length and while streaming); a larger one is answered 413."""
    storage_url: SecretStr = SecretStr("sqlite:///gpuhop.db")
    """Audit/identity store: ``sqlite:///relative.db``, ``sqlite:////abs.db`` or
    ``postgresql://user:password@host/db``. Secret because it may hold a password."""
    host_key: Path = Path("keys/gateway_host_ed25519")
    """The gateway's own SSH host key (private key file)."""
    user_ca_key: Path = Path("keys/user_ca")
    """CA key that signs user certificates; hosts trust its ``.pub`` via TrustedUserCAKeys."""
    host_ca_key: Path = Path("keys/host_ca")
    """CA key that signs the host certificates presented in recorded mode."""
    upstream_key: Path = Path("keys/gateway_upstream")
    """Key the gateway uses to log in to hosts when it re-originates a session."""
    audit_checkpoint_key: Path = Path("keys/audit_checkpoint")
    """ed25519 key that signs the audit chain's head in every commit (kept out of the
    database); replicas and admin commands that append must share it."""
    audit_anchor_file: Path = Path("keys/audit_anchor.json")
    """The newest signed audit checkpoint, kept outside the database so that cutting or
    emptying the log is caught by ``audit verify``; copy it off the machine to keep more."""
    upstream_ca_key: Path = Path("keys/upstream_ca")
    """CA key that signs only the gateway's own logins to hosts (recorded sessions, probes,
    KRL pushes); never handed to users. Hosts trust its ``.pub`` beside the user CA's."""
    krl_command: Annotated[str, Field(max_length=1024)] = "gpuhop-install-krl"
    """Command run on each host (as ``probe_account``) with the revocation list of removed
    users' keys on stdin; it installs the host's ``RevokedKeys`` file (docs/hosts.md).
    Empty: the gateway does not push revocations."""
    krl_push_interval_s: PositiveSeconds = 10.0
    """How often the revocation list is rebuilt and pushed to hosts that lack it (it is
    also pushed at once on each directory change)."""
    recordings_dir: Path = Path("recordings")
    """Where recorded sessions are written (asciicast v2, one file per channel)."""
    record_input: bool = False
    """Also record what users type (passwords typed at prompts included: off by default)."""
    recording_max_bytes: Annotated[int, Field(ge=64 * 1024)] = 1 << 30
    """Size cap of one session's recording file, in bytes: a session whose recording
    would grow past it is ended (message to the user, audited in ``session.end``)."""
    recordings_min_free_bytes: Annotated[int, Field(ge=0)] = 256 << 20
    """Free space kept on the recordings filesystem, in bytes: below it new recorded
    sessions are refused (``channel.deny``) and running ones end (0: only a full disk)."""
    upstream_keepalive_s: PositiveSeconds = 5.0
    """Keepalive interval on the gateway's connections to hosts; 3 missed = host lost."""
    upstream_idle_s: Seconds = 60.0
    """How long an unused connection to a host is kept for reuse."""
    upstream_target_rate: Annotated[int, Field(ge=1_000_000)] = 256_000_000
    """Bytes/s a download from a far host should reach: upstream windows are sized
    rtt x this rate (bandwidth-delay product), between 2 MiB and 128 MiB."""
    golden_command: Annotated[str, Field(min_length=1, max_length=4096)] = DEFAULT_GOLDEN
    """What the placement golden test runs on each candidate when the request names
    nothing else: short, and telling about the host (GPUs, a little throughput)."""
    golden_max_running: Annotated[Int, Field(ge=1, le=1000)] = 8
    """Golden host runs one user may have going at once (one request runs on up to 8
    hosts); past it a request is refused with 429."""
    golden_max_s: Annotated[float, Field(gt=0, le=600, allow_inf_nan=False)] = 600.0
    """The longest ``timeout_s`` a golden request may ask for; longer is refused (422)."""
    env_push_min_rtt_ms: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 20.0
    """Environment pushes to a host at least this far (probed round trip) are staged:
    spooled at the gateway and sent in chunks over parallel connections."""
    env_push_connections: Annotated[Int, Field(ge=1, le=16)] = 4
    """SSH connections a staged push uses per host (the pooled one and fresh ones)."""
    env_push_streams_per_connection: Annotated[Int, Field(ge=1, le=8)] = 4
    """Chunk channels at a time on each of those connections (sshd allows 10 sessions
    per connection by default)."""
    env_push_chunk_mib: Annotated[Int, Field(ge=1, le=1024)] = 8
    """Size of a staged chunk in MiB: what a cut-off push may have to send again."""
    env_push_spool_ahead_mib: Annotated[Int, Field(ge=1, le=1_048_576)] = 1024
    """How far (MiB) a staged push's spool may run ahead of the slowest far host still
    loading; past it the client is held back. At least connections x streams x chunk."""
    probe_interval_s: PositiveSeconds = 1.0
    """How often each host's SSH round trip is measured (on a kept connection)."""
    probe_timeout_s: PositiveSeconds = 2.0
    """A probe round that takes longer marks the host down."""
    probe_gpu_interval_s: PositiveSeconds = 5.0
    """How often nvidia-smi is queried on each host."""
    probe_account: Account = "root"
    """Remote account the gateway probes hosts (and pushes revocations) as, with a
    certificate from the upstream CA."""
    idle_gpu_util_pct: Annotated[float, Field(ge=0, le=100)] = 5.0
    """A session holding GPUs is idle while their utilisation stays under this..."""
    idle_timeout_s: Seconds = 0.0
    """...and no byte moves for this long; then it is ended and its GPUs released
    (0 turns idle reaping off)."""
    idle_warn_s: Seconds = 300.0
    """How long before ending an idle session its user is warned."""
    catalog: Path | None = None
    """Optional price catalog CSV (see examples/prices.csv); overrides inventory prices."""
    workers: Annotated[Int, Field(ge=1, le=256)] = 1
    """Gateway processes sharing the listeners."""
    node_name: Annotated[str, Field(max_length=128)] = ""
    """This gateway node's name on the session records it brokers (empty: the machine's
    host name). On start a node closes the records it left open when it died, so
    replicas on one machine need different names."""
    replica_timeout_s: Annotated[float, BeforeValidator(_not_bool), Field(ge=1, le=3600)] = 15.0
    """A gateway replica whose heartbeat in storage is older than this is dead: its GPU
    leases are void. Each replica renews its heartbeat every third of it."""
    window: Annotated[Int, Field(ge=64 * 1024, le=1024**3)] = 8 * 1024 * 1024
    """SSH channel receive window in bytes; larger keeps high-RTT bulk transfers busy."""
    max_packet: Annotated[Int, Field(ge=4096, le=1024 * 1024)] = 262144
    """Largest SSH channel data packet in bytes; at most ``window``."""
    max_forwards_per_session: Annotated[Int, Field(ge=1, le=10_000)] = 64
    """Most forwards (``-L``/``-W``/``-D`` connections and ``-R`` listeners) open at once in
    one recorded ``ssh -J`` session; more are refused with a reason and audited."""
    metrics_require_token: bool = True
    """``/metrics`` needs a ``metrics`` (or ``admin``) API token, sent by Prometheus as
    ``authorization: {credentials: gph_...}``; false opens it to anyone who can reach
    the API port (only for a private network)."""
    audit_start_timeout_s: PositiveSeconds = 10.0
    """How long a new session waits for its start to be audited (e.g. while PostgreSQL
    restarts) before it is refused; live sessions never wait on the audit log."""
    drain_timeout_s: Seconds = 30.0
    """On shutdown, how long running sessions may finish before they are closed."""
    cert_default_validity_s: Annotated[Int, Field(ge=60)] = 3600
    """Validity of a user certificate when the request names none."""
    cert_max_validity_s: Annotated[Int, Field(ge=60)] = 43200
    """Longest validity a user certificate may be signed for."""
    cert_passthrough_max_validity_s: Annotated[Int, Field(ge=60)] = 1800
    """Longest validity of a user certificate that opens accounts on hosts (passthrough
    principals ``ACCOUNT@HOST``): it works at hosts without the gateway, so keep it short."""
    auth_max_failures: Annotated[Int, Field(ge=1)] = 10
    """Failed authentications of one user (SSH) or token (API) from one address, within
    the window, before that pair is banned. A ban never refuses a valid key, certificate
    or token: failures under it are refused cheaply and no longer audited one by one."""
    auth_address_max_failures: Annotated[Int, Field(ge=1)] = 100
    """Failed authentications from one address, whatever the user or token, within the
    window, before the whole address is banned (same meaning of a ban)."""
    auth_failure_window_s: PositiveSeconds = 60.0
    """Window over which authentication failures are counted."""
    auth_ban_s: Seconds = 60.0
    """How long a ban lasts."""
    login_timeout_s: PositiveSeconds = 30.0
    """Time a client has to authenticate before it is disconnected."""
    max_startups: Annotated[Int, Field(ge=1)] = 256
    """Unauthenticated connections open at once, all sources together (like OpenSSH's
    MaxStartups): beyond it a new connection is refused with one line, before key exchange."""
    max_startups_per_source: Annotated[Int, Field(ge=1)] = 64
    """Unauthenticated connections open at once from one source address (a CI fleet behind
    one NAT address logs in many at once: keep it above its parallelism)."""
    max_channels_per_connection: Annotated[Int, Field(ge=1, le=65536)] = 64
    """Channels (sessions, forwards, jumps) open at once on one connection; more are refused."""
    max_env_per_channel: Annotated[Int, Field(ge=0, le=4096)] = 64
    """Environment variables a client may set on one session channel; a channel asking for
    more is refused, not started with some of them dropped."""
    max_resizes_per_s: Annotated[Int, Field(ge=1, le=1000)] = 20
    """Window-change requests relayed and recorded per second per channel; faster ones are
    coalesced into the latest size."""
    audit_events_per_connection_s: Annotated[Int, Field(ge=1, le=10000)] = 20
    """Refusal audit events one connection may write per second; beyond it, and for a
    repeated refusal, they are coalesced into one event with a ``repeated`` count."""
    ssh_algorithms: Literal["modern", "compatible"] = "modern"
    """``modern``: ML-KEM hybrid and curve25519 key exchange, encrypt-then-MAC only (no
    ``ssh-audit`` warnings). ``compatible`` adds NIST ECDH, DH group16/18 and plain SHA-2
    MACs for clients that offer nothing modern. Applies to the front and the recorded inner hop."""
    keepalive_interval_s: Seconds = 15.0
    """Seconds between SSH keepalives on idle connections (0 turns them off)."""
    keepalive_count_max: Annotated[Int, Field(ge=1)] = 3
    """Unanswered keepalives before a connection is considered dead."""
    log_level: Annotated[
        Literal["debug", "info", "warning", "error", "critical"],
        BeforeValidator(lambda v: v.lower() if isinstance(v, str) else v),
    ] = "info"
    """Least severe log level written."""
    log_format: Literal["json", "console"] = "console"
    """``json`` for log shippers, ``console`` for people."""

    @model_validator(mode="after")
    def _limits_agree(self) -> GatewaySettings:
        if self.max_packet > self.window:
            _fail("max_packet", f"{self.max_packet} exceeds window ({self.window})")
        if self.cert_default_validity_s > self.cert_max_validity_s:
            _fail(
                "cert_default_validity_s",
                f"{self.cert_default_validity_s} exceeds cert_max_validity_s "
                f"({self.cert_max_validity_s})",
            )
        return self


class RegionConfig(BaseModel):
    """A ``[[regions]]`` entry."""

    model_config = _MODEL

    name: Slug
    """Short id used by hosts and selectors, e.g. ``sg``."""
    country: Country
    """ISO 3166 alpha-2 country the region is in, upper-case, e.g. ``SG``."""
    display: str = ""
    """Human name, e.g. ``Singapore``."""


class HostConfig(BaseModel):
    """A ``[[hosts]]`` entry: one GPU host behind the gateway."""

    model_config = _MODEL

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

    model_config = _MODEL

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

    model_config = _MODEL

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


class _GatewayEnvSource(EnvSettingsSource):
    """Environment overrides for ``[gateway]`` only."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        if field_name != "gateway":
            return None, field_name, False
        return super().get_field_value(field, field_name)

    def prepare_field_value(
        self, field_name: str, field: FieldInfo, value: Any, value_is_complex: bool
    ) -> Any:
        if field_name != "gateway":
            return None
        return super().prepare_field_value(field_name, field, value, value_is_complex)


class DatasetConfig(BaseModel):
    """A ``[[datasets]]`` entry: a data set and the places it may be processed."""

    model_config = _MODEL

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

    model_config = _MODEL

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


class Settings(BaseSettings):
    """The whole config file. Build it with ``load_settings``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
    )

    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    """The ``[gateway]`` table."""
    regions: tuple[RegionConfig, ...] = ()
    """The ``[[regions]]`` tables."""
    hosts: tuple[HostConfig, ...] = ()
    """The ``[[hosts]]`` tables."""
    roles: tuple[RoleConfig, ...] = ()
    """The ``[[roles]]`` tables."""
    users: tuple[UserConfig, ...] = ()
    """The ``[[users]]`` tables."""
    datasets: tuple[DatasetConfig, ...] = ()
    """The ``[[datasets]]`` tables: where each data set may be processed."""
    budgets: tuple[BudgetConfig, ...] = ()
    """The ``[[budgets]]`` tables: spending limits per user or team."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first: it overrides the file.
        return _GatewayEnvSource(settings_cls), init_settings

    @model_validator(mode="after")
    def _references_exist(self) -> Settings:
        _check_references(self)
        return self

    def inventory(self) -> Inventory:
        """The frozen domain inventory this config declares."""
        countries = {r.name: r.country for r in self.regions}
        return Inventory(
            hosts=tuple(h.to_host(countries[h.region]) for h in self.hosts),
            regions=tuple(Region(r.name, r.country, r.display) for r in self.regions),
            roles=tuple(r.to_role() for r in self.roles),
            users=tuple(u.to_user() for u in self.users),
        )

    def resolved(self, base: Path) -> Settings:
        """A copy with relative paths (and a relative SQLite file) made absolute under ``base``."""
        gw = self.gateway
        update: dict[str, object] = {
            name: _under(base, getattr(gw, name))
            for name in (
                "host_key",
                "user_ca_key",
                "host_ca_key",
                "upstream_key",
                "audit_checkpoint_key",
                "audit_anchor_file",
                "upstream_ca_key",
                "recordings_dir",
            )
        }
        if gw.catalog is not None:
            update["catalog"] = _under(base, gw.catalog)
        update["storage_url"] = SecretStr(_sqlite_under(base, gw.storage_url.get_secret_value()))
        return self.model_copy(update={"gateway": gw.model_copy(update=update)})


def _under(base: Path, path: Path) -> Path:
    path = path.expanduser()
    return path if path.is_absolute() else base / path


def _sqlite_under(base: Path, url: str) -> str:
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return url
    file, sep, query = url.removeprefix(prefix).partition("?")
    if not file or file == ":memory:" or file.startswith("/"):
        return url
    return f"{prefix}{_under(base, Path(file))}{sep}{query}"


def _check_references(s: Settings) -> None:
    """Unique names and references that resolve; each failure names its key path."""
    regions = _unique("regions", [r.name for r in s.regions])
    hosts = _unique("hosts", [h.name for h in s.hosts])
    roles = _unique("roles", [r.name for r in s.roles])
    _unique("users", [u.name for u in s.users])
    listeners = {(s.gateway.ssh_host, s.gateway.ssh_port), (s.gateway.api_host, s.gateway.api_port)}
    endpoints: dict[tuple[str, int], int] = {}
    for i, host in enumerate(s.hosts):
        if host.region not in regions:
            _fail(f"hosts[{i}].region", f"unknown region {host.region!r}{_declared(regions)}")
        endpoint = (host.address, host.port)
        if endpoint in listeners:
            _fail(f"hosts[{i}].port", f"{host.address}:{host.port} is the gateway's own listener")
        if endpoint in endpoints:
            _fail(f"hosts[{i}].port", f"same address and port as hosts[{endpoints[endpoint]}]")
        endpoints[endpoint] = i
        for j, token in enumerate(host.residency):
            if not _COUNTRY.fullmatch(token) and token not in regions:
                _fail(f"hosts[{i}].residency[{j}]", f"unknown region {token!r}{_declared(regions)}")
    for i, role in enumerate(s.roles):
        for j, selector in enumerate(role.hosts):
            kind, sep, value = selector.partition(":")
            if not sep and selector != "*":
                kind, value = "name", selector
            known = {"name": hosts, "region": regions}.get(kind)
            if known is not None and value not in known:
                _fail(
                    f"roles[{i}].hosts[{j}]", f"unknown {_NOUN[kind]} {value!r}{_declared(known)}"
                )
    owners: dict[bytes, str] = {}
    for i, user in enumerate(s.users):
        for j, role_name in enumerate(user.roles):
            if role_name not in roles:
                _fail(f"users[{i}].roles[{j}]", f"unknown role {role_name!r}{_declared(roles)}")
        for j, line in enumerate(user.keys):
            blob = parse_public_key(line).blob
            if blob in owners:
                _fail(f"users[{i}].keys[{j}]", f"key is already registered to user {owners[blob]}")
            owners[blob] = user.name


_NOUN = {"name": "host", "region": "region"}


def _unique(table: str, names: list[str]) -> set[str]:
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            _fail(f"{table}[{i}].name", f"duplicate name {name!r} (also {table}[{seen[name]}])")
        seen[name] = i
    return set(names)


def _declared(names: set[str]) -> str:
    return f" (declared: {', '.join(sorted(names))})" if names else " (none declared)"


def load_settings(path: Path) -> Settings:
    """Read and validate the TOML config at ``path``; raise ConfigError with one line otherwise.

    Environment overrides (``GPUHOP_GATEWAY__*``) are applied, then relative
    paths are resolved against the file's directory.
    """
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {_toml_problem(exc)}") from None
    unknown = sorted(set(data) - set(Settings.model_fields))
    if unknown:
        raise ConfigError(f"{path}: {unknown[0]}: {_unknown_key(unknown[0], Settings)}")
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}") from None
    except SettingsError as exc:
        raise ConfigError(f"{path}: environment: {_one_line(str(exc))}") from None
    return settings.resolved(path.absolute().parent)


_TOML_WHERE = re.compile(
    r"(?P<msg>.*) \((?:at line (?P<line>\d+), column \d+|at end of document)\)"
)


def _toml_problem(exc: tomllib.TOMLDecodeError) -> str:
    text = _one_line(str(exc))
    found = _TOML_WHERE.fullmatch(text)
    if found is None:
        return f"invalid TOML: {text}"
    where = f"line {found['line']}" if found["line"] else "end of file"
    return f"{where}: {found['msg']}"


def _describe(exc: ValidationError) -> str:
    """``key.path: problem`` for the first error, counting the rest on the same line."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = tuple(first["loc"])
    ctx = first.get("ctx") or {}
    where = _key_path(loc)
    if "key" in ctx:
        key = str(ctx["key"])
        where = f"{where}.{key}" if where else key
    env = _env_source(loc)
    if env:
        where += f" (from {env})"
    problem = _problem(first, loc)
    more = len(errors) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{where or '(top level)'}: {problem}{tail}"


def _problem(error: ErrorDetails, loc: tuple[int | str, ...]) -> str:
    if error["type"] == "extra_forbidden" and loc:
        return _unknown_key(str(loc[-1]), _model_at(loc[:-1]))
    msg = error["msg"]
    for noise in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(noise)
    return _one_line(msg)


def _unknown_key(key: str, model: type[BaseModel] | None) -> str:
    if model is None:
        return "unknown key"
    close = difflib.get_close_matches(key, list(model.model_fields), n=1)
    return f"unknown key; did you mean {close[0]!r}?" if close else "unknown key"


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The config model class found at ``loc`` (for listing the keys it allows)."""
    model: Any = Settings
    for part in loc:
        if isinstance(part, int):
            continue
        is_model = isinstance(model, type) and issubclass(model, BaseModel)
        field = model.model_fields.get(part) if is_model else None
        if field is None:
            return None
        model = field.annotation
        while not (isinstance(model, type) and issubclass(model, BaseModel)):
            args = [a for a in get_args(model) if a is not Ellipsis]
            if not args:
                return None
            model = args[0]
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _key_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "[key]":
            continue
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
            path += f".{part}" if path else part
        else:
            path += f"[{part!r}]"
    return path


def _env_source(loc: tuple[int | str, ...]) -> str:
    """The environment variable a ``[gateway]`` value came from, if any."""
    if len(loc) < 2 or loc[0] != "gateway":
        return ""
    present = {name.upper() for name in os.environ}
    for name in (f"{ENV_PREFIX}GATEWAY__{str(loc[1]).upper()}", f"{ENV_PREFIX}GATEWAY"):
        if name in present:
            return name
    return ""


def _one_line(text: str) -> str:
    return " ".join(text.split())
