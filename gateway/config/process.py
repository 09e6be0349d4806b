"""Process settings: the ``[gateway]`` table (listeners, key files, limits).

Any field can be overridden from the environment as ``GPUHOP_GATEWAY__<FIELD>``
(e.g. ``GPUHOP_GATEWAY__SSH_PORT=2300``); see ``gateway.config.loader``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, Field, SecretStr, model_validator

from gateway.config.fields import (
    MODEL,
    Account,
    Int,
    ListenPort,
    Network,
    PositiveSeconds,
    Seconds,
    fail,
    not_bool,
)

DEFAULT_GOLDEN = (
    "nvidia-smi --query-gpu=index,name,utilization.gpu --format=csv,noheader"
    " && dd if=/dev/zero of=/dev/null bs=1M count=512 2>&1 | tail -n 1"
)


class GatewaySettings(BaseModel):
    """The ``[gateway]`` table: how the gateway itself listens, stores and limits."""

    model_config = MODEL

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
    replica_timeout_s: Annotated[float, BeforeValidator(not_bool), Field(ge=1, le=3600)] = 15.0
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
            fail("max_packet", f"{self.max_packet} exceeds window ({self.window})")
        if self.cert_default_validity_s > self.cert_max_validity_s:
            fail(
                "cert_default_validity_s",
                f"{self.cert_default_validity_s} exceeds cert_max_validity_s "
                f"({self.cert_max_validity_s})",
            )
        return self
