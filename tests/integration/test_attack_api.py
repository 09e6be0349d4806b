"""Attacks on the HTTP API and on authentication, against a real gateway subprocess.

Each test plays the attacker with a real client (httpx, OpenSSH ``ssh``, asyncssh)
against ``gpuhop-gateway serve`` in front of real sshd hosts, and checks the
promise from outside: gateway memory read from /proc, answers on the wire, and
the audit log the gateway wrote.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import httpx
import pytest

from tests.integration.conftest import build_stack
from tests.integration.gwstack import GatewayStack

pytestmark = pytest.mark.openssh

MiB = 1024 * 1024
TRUSTED_PROXY = "127.0.0.2"  # the TLS proxy's address in these tests
MAX_FAILURES = 3
ADDRESS_MAX_FAILURES = 8


def _configure(stack: GatewayStack, extra: str) -> None:
    text = stack.config.read_text().replace(
        "auth_max_failures = 50",
        f"auth_max_failures = {MAX_FAILURES}\nauth_address_max_failures = {ADDRESS_MAX_FAILURES}"
        f"\n{extra}",
    )
    stack.config.write_text(text)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    stack = build_stack(tmp_path_factory.mktemp("attack-api"))
    _configure(stack, f'api_trusted_proxies = ["{TRUSTED_PROXY}"]\nauth_ban_s = 600')
    try:
        stack.start_gateway()
        yield stack
    finally:
        stack.close()


def mint(stack: GatewayStack, user: str, scope: str = "user") -> str:
    """A token made the operator's way (``gpuhop-gateway token create``)."""
    cmd = [sys.executable, "-m", "gateway.cli", "token", "create", "--config", str(stack.config)]
    result = subprocess.run(
        [*cmd, "--user", user, "--scope", scope], capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode().strip()


def api(stack: GatewayStack, source: str = "127.0.0.1") -> httpx.Client:
    """An httpx client whose connections come from ``source`` (a loopback address)."""
    transport = httpx.HTTPTransport(local_address=source)
    return httpx.Client(
        base_url=f"http://127.0.0.1:{stack.api_port}", transport=transport, timeout=30
    )


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def bad_secret(tag: str) -> str:
    return "gph_" + (tag * 43)[:43]


# ---------------------------------------------------------------- bodies (finding 8)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class _PeakRss(threading.Thread):
    """The highest RSS of ``pid`` seen while running, sampled every 2 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = _rss_kib(pid)
        self.done = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + 60
        while not self.done.is_set() and time.monotonic() < deadline:
            self.peak = max(self.peak, _rss_kib(self.pid))
            time.sleep(0.002)


def _chunks(payload: bytes, size: int = 256 * 1024) -> Iterator[bytes]:
    view = memoryview(payload)
    for start in range(0, len(view), size):
        yield bytes(view[start : start + size])


def _flood(client: httpx.Client, url: str, payload: bytes, chunked: bool) -> tuple[int, float, str]:
    """One unauthenticated POST of ``payload``: streamed, with its length declared or chunked.

    httpx's sync client: after the gateway answers and closes, the failed write is
    followed by a read of the answer (its async client gives up at the write).
    """
    headers = {"Content-Type": "application/json"}
    if not chunked:
        headers["Content-Length"] = str(len(payload))
    started = time.monotonic()
    response = client.post(url, content=_chunks(payload), headers=headers)
    elapsed = time.monotonic() - started
    return response.status_code, elapsed, response.json()["error"]["code"]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_huge_unauthenticated_bodies_cost_little_and_get_413(
    gw: GatewayStack, chunked: bool
) -> None:
    """8 x 48 MiB bodies with no token: at most 16 MiB more gateway RSS, 413 within 1 s each.

    Before the cap FastAPI read every body whole before authenticating: ~900 MiB.
    """
    assert gw.proc is not None
    payload = b"{" + b" " * (48 * MiB - 2) + b"}"
    url = f"http://127.0.0.1:{gw.api_port}/v1/tokens"
    before = _rss_kib(gw.proc.pid)
    sampler = _PeakRss(gw.proc.pid)
    sampler.start()

    try:
        with (
            httpx.Client(timeout=30) as client,
            concurrent.futures.ThreadPoolExecutor(8) as pool,
        ):
            results = list(pool.map(lambda _: _flood(client, url, payload, chunked), range(8)))
    finally:
        sampler.done.set()
        sampler.join(5)
    grown_mib = (sampler.peak - before) / 1024
    print(
        f"\n8 x 48 MiB ({'chunked' if chunked else 'content-length'}): RSS {before // 1024} MiB"
        f" -> peak {sampler.peak // 1024} MiB (+{grown_mib:.1f} MiB);"
        f" slowest 413 {max(r[1] for r in results):.3f} s"
    )
    assert [(status, code) for status, _, code in results] == [(413, "body_too_large")] * 8
    assert max(elapsed for _, elapsed, _ in results) <= 1.0
    assert grown_mib <= 16, f"gateway RSS grew {grown_mib:.1f} MiB"
    # The API still answers, and a small body still reaches its route.
    with api(gw) as client:
        assert client.get("/v1/health").status_code == 200
        small = client.post("/v1/tokens", json={"name": "x"})
        assert small.status_code == 401


# ---------------------------------------------------------------- bans (finding 9), API side


def test_bad_tokens_behind_the_proxy_lock_out_no_one_else(gw: GatewayStack) -> None:
    """Everyone reaches the API through one TLS proxy: a scan through it bans only itself."""
    alice = mint(gw, "alice")
    attacker, user = {"X-Forwarded-For": "203.0.113.66"}, {"X-Forwarded-For": "198.51.100.7"}
    with api(gw, TRUSTED_PROXY) as proxy:
        codes = [
            proxy.get("/v1/me", headers={**attacker, **bearer(bad_secret("a"))}).status_code
            for _ in range(MAX_FAILURES + 2)
        ]
        assert codes == [401] * MAX_FAILURES + [429] * 2
        # Another client behind the same proxy, and the attacker's own address with a
        # valid token: both still get in.
        assert proxy.get("/v1/me", headers={**user, **bearer(alice)}).status_code == 200
        me = proxy.get("/v1/me", headers={**attacker, **bearer(alice)})
        assert me.status_code == 200 and me.json()["user"] == "alice"
    fails = gw.wait_audit_events("api.auth_fail", lambda e: "203.0.113.66" in e["source"], 3)
    assert len(fails) == MAX_FAILURES  # the 429s wrote nothing
    [ban] = gw.wait_audit_events("api.ratelimited", lambda e: e["source"] == "203.0.113.66")
    assert ban["subject"].startswith("secret:gph_aaaa")


def test_forwarded_for_is_read_only_from_trusted_proxies(gw: GatewayStack) -> None:
    """A client that is not a trusted proxy cannot pick the address its failures count against."""
    with api(gw, "127.0.0.5") as direct:
        for n in range(3):
            spoof = {"X-Forwarded-For": f"192.0.2.{n}"}
            bad = bearer(bad_secret("s"))
            assert direct.get("/v1/me", headers={**spoof, **bad}).status_code == 401
        # All three counted against 127.0.0.5 itself: the next is refused as banned.
        spoof = {"X-Forwarded-For": "192.0.2.99"}
        assert direct.get("/v1/me", headers={**spoof, **bad}).status_code == 429
    fails = gw.wait_audit_events("api.auth_fail", lambda e: e["source"].startswith("127.0.0.5:"), 3)
    assert len(fails) == 3
    assert not [e for e in gw.audit_events("api.auth_fail") if "192.0.2." in e["source"]]


def test_rotating_token_prefixes_cannot_flood_the_audit_log(gw: GatewayStack) -> None:
    """A scan that changes its token every time is banned by address; valid tokens still work."""
    alice = mint(gw, "alice")
    source = "127.0.0.6"
    with api(gw, source) as client:
        codes = [
            client.get("/v1/me", headers=bearer(bad_secret(f"{n:02d}"))).status_code
            for n in range(ADDRESS_MAX_FAILURES + 5)
        ]
        assert codes == [401] * ADDRESS_MAX_FAILURES + [429] * 5
        assert client.get("/v1/me", headers=bearer(alice)).status_code == 200
    fails = gw.wait_audit_events("api.auth_fail", lambda e: e["source"].startswith(source + ":"))
    assert len(fails) == ADDRESS_MAX_FAILURES


# ---------------------------------------------------------------- bans (finding 9), SSH side


def _ssh_as(
    stack: GatewayStack, login: str, key_of: str, source: str, *command: str
) -> subprocess.CompletedProcess[bytes]:
    """OpenSSH ``ssh`` from ``source`` logging in as ``login`` with ``key_of``'s key and cert."""
    user = stack.users[key_of]
    cmd = ["ssh", *stack.ssh_options(user), "-b", source, "-p", str(stack.port)]
    return stack.run([*cmd, f"{login}@127.0.0.1", *command])


def test_bad_keys_for_one_user_do_not_stop_valid_keys(gw: GatewayStack) -> None:
    """Policy: a ban never refuses a valid key or certificate (they cannot be guessed).

    Bad keys for carol from one address ban (address, carol): the failures stop
    being audited one by one, but bob's certificate and carol's own key still log
    in from that address at once.
    """
    source = "127.0.0.9"
    for _ in range(MAX_FAILURES + 2):
        assert _ssh_as(gw, "carol", "mallory", source, "true").returncode == 255
    [ban] = gw.wait_audit_events("auth.ratelimited", lambda e: e["source"] == source)
    assert ban["user"] == "carol"
    for login in ("bob", "carol"):
        result = _ssh_as(gw, login, login, source, "true")
        assert result.returncode == 0, result.stderr.decode()
    ok = gw.wait_audit_events("auth.ok", lambda e: e["source"].startswith(source + ":"), 2)
    assert {e["user"] for e in ok} == {"bob", "carol"}
    fails = [e for e in gw.audit_events("auth.fail") if e["source"].startswith(source + ":")]
    assert len(fails) == MAX_FAILURES  # under the ban: counted, not audited


def test_rotating_user_names_over_ssh_is_bounded(gw: GatewayStack) -> None:
    """asyncssh clients trying a new user name each time: audited failures stop at the
    address cap, and a registered key still logs in from there."""
    source = "127.0.0.10"
    key = asyncssh.read_private_key(str(gw.users["mallory"].key))

    async def attempt(login: str, client_key: asyncssh.SSHKey) -> bool:
        try:
            async with asyncssh.connect(
                "127.0.0.1",
                gw.port,
                username=login,
                client_keys=[client_key],
                known_hosts=None,
                local_addr=(source, 0),
                agent_path=None,
                kex_algs=["curve25519-sha256"],
            ) as conn:
                result = await conn.run("true", check=False)
                return result.exit_status is not None
        except asyncssh.PermissionDenied:
            return False

    async def scan() -> list[bool]:
        return [await attempt(f"user{n}", key) for n in range(ADDRESS_MAX_FAILURES + 4)]

    assert not any(asyncio.run(scan()))
    carol = asyncssh.read_private_key(str(gw.users["carol"].key))
    assert asyncio.run(attempt("carol", carol))
    gw.wait_audit_events("auth.ratelimited", lambda e: e["source"] == source)
    fails = [e for e in gw.audit_events("auth.fail") if e["source"].startswith(source + ":")]
    assert len(fails) == ADDRESS_MAX_FAILURES


# ---------------------------------------------------------------- tokens (finding 12)


def mint_cli(stack: GatewayStack, user: str, scope: str, ttl: str) -> str:
    cmd = [sys.executable, "-m", "gateway.cli", "token", "create", "--config", str(stack.config)]
    cmd += ["--user", user, "--scope", scope, "--ttl", ttl]
    result = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode().strip()


def test_minted_tokens_never_outlive_their_parent(gw: GatewayStack) -> None:
    """A 1-hour token asks for 365-day children; revoking it revokes them all."""
    parent = mint_cli(gw, "alice", "user", "1h")
    year = 365 * 86400
    with api(gw) as client:
        me = client.get("/v1/me", headers=bearer(parent)).json()
        made = client.post(
            "/v1/tokens",
            json={"name": "child", "scope": "user", "ttl_s": year},
            headers=bearer(parent),
        )
        assert made.status_code == 201, made.text
        child = made.json()
        assert child["token"]["expires_at"] <= me["expires_at"]
        assert child["token"]["parent_id"] == me["token_id"]
        grand = client.post(
            "/v1/tokens",
            json={"name": "grandchild", "scope": "ci", "ttl_s": year},
            headers=bearer(child["secret"]),
        ).json()
        assert grand["token"]["expires_at"] <= me["expires_at"]
        assert client.get("/v1/me", headers=bearer(grand["secret"])).status_code == 200

        revoked = client.delete(f"/v1/tokens/{me['token_id']}", headers=bearer(parent))
        assert revoked.status_code == 200
        for secret in (parent, child["secret"], grand["secret"]):
            refused = client.get("/v1/me", headers=bearer(secret))
            assert refused.status_code == 401
            assert refused.json()["error"]["code"] == "token_revoked"
    cascaded = gw.wait_audit_events(
        "token.revoked", lambda e: e.get("cascade_from") == me["token_id"], 2
    )
    assert {e["token_id"] for e in cascaded} == {child["token"]["id"], grand["token"]["id"]}


def test_metrics_need_a_metrics_token_by_default(gw: GatewayStack) -> None:
    """``/metrics`` names users and hosts: no token, or a user token, gets nothing;
    a metrics token scrapes and can do nothing else."""
    scraper = mint_cli(gw, "prometheus", "metrics", "1d")
    alice = mint(gw, "alice")
    with api(gw, "127.0.0.12") as client:
        missing = client.get("/metrics")
        assert missing.status_code == 401
        assert missing.json()["error"]["code"] == "token_missing"
        assert client.get("/metrics", headers=bearer(alice)).status_code == 403
        ok = client.get("/metrics", headers=bearer(scraper))
        assert ok.status_code == 200 and "gpuhop_build_info" in ok.text
        for path in ("/v1/me", "/v1/hosts", "/v1/sessions", "/v1/tokens"):
            assert client.get(path, headers=bearer(scraper)).status_code == 403, path


# ---------------------------------------------------------------- certificate refusals


def test_source_address_refusal_is_audited_as_such(gw: GatewayStack) -> None:
    """A certificate bound to another network is refused with that reason, not
    "key not registered"; the same key bound to loopback logs in."""
    ca = asyncssh.read_private_key(str(gw.root / "keys" / "user_ca"))
    key = asyncssh.generate_private_key("ssh-ed25519")
    source = "127.0.0.14"

    def cert_for(network: str) -> asyncssh.SSHCertificate:
        return ca.generate_user_certificate(
            key,
            "gpuhop:alice:7",
            principals=["alice", "root"],
            valid_after="-1m",
            valid_before="+10m",
            source_address=[network],
        )

    async def login(cert: asyncssh.SSHCertificate) -> bool:
        try:
            async with asyncssh.connect(
                "127.0.0.1",
                gw.port,
                username="alice",
                client_keys=[(key, cert)],
                known_hosts=None,
                local_addr=(source, 0),
                agent_path=None,
                kex_algs=["curve25519-sha256"],
            ):
                return True
        except asyncssh.PermissionDenied:
            return False

    assert not asyncio.run(login(cert_for("10.9.9.0/24")))
    [fail] = gw.wait_audit_events("auth.fail", lambda e: e["source"].startswith(source + ":"))
    # asyncssh offers the certificate, then the bare key: each refusal with its own reason.
    assert fail["reasons"][0] == f"certificate not valid from {source} (source-address 10.9.9.0/24)"
    assert fail["reasons"][1:] == [f"key {key.get_fingerprint()} is not registered to alice"]
    assert asyncio.run(login(cert_for("127.0.0.0/8")))
