"""The HTTP API served for real: uvicorn on a loopback port, SQLite storage, a real user CA.

Every response a test receives is checked against the committed OpenAPI
document (``docs/openapi.json``) by an httpx response hook, and the document
the server serves must equal the committed one, so the API and its document
cannot drift apart.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
import httpx
import jsonschema  # type: ignore[import-untyped, unused-ignore]
import pytest

from gateway.adapters.audit.store import open_store
from gateway.adapters.keys import UserCA
from gateway.adapters.storage import Scope, Storage, TokenStore, open_storage
from gateway.config.loader import Settings
from gateway.domain.audit.chain import AuditEvent
from gateway.domain.models import Mode
from gateway.edges.http import ApiServer, start_api
from gateway.edges.http.bootstrap import CLI_ACTOR, create_token, create_token_blocking
from gateway.errors import ConfigError
from gateway.ports import AuditStore
from gpuhop_sim.sshd import SshdHost
from tests.fakeruntime import api_context, runtime_of
from tests.integration.gwstack import new_storage_url
from tests.sshkeys import KeyPair

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
DOCUMENT: dict[str, Any] = json.loads(DOC_PATH.read_text())
REGENERATE = "python -m gateway.edges.http.openapi > docs/openapi.json"


# ---------------------------------------------------------------- contract checking


def _template_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{[^}]+\}", template)
    return re.compile("[^/]+".join(re.escape(p) for p in parts) + "$")


TEMPLATES = [(_template_regex(t), t) for t in DOCUMENT["paths"]]


def check_contract(method: str, path: str, status: int, ctype: str, body: bytes) -> None:
    """Fail unless the response is one the committed document describes, body included."""
    if not path.startswith("/v1/"):
        return
    template = next((t for rx, t in TEMPLATES if rx.match(path)), None)
    operation = DOCUMENT["paths"].get(template, {}).get(method.lower()) if template else None
    if operation is None:  # no such route or method: the error shape must still hold
        assert status in (404, 405), f"{method} {path}: {status} for an undocumented route"
        _validate({"$ref": "#/components/schemas/ErrorBody"}, json.loads(body))
        return
    documented = operation["responses"].get(str(status))
    assert documented is not None, f"{method} {template} returned undocumented status {status}"
    content = documented.get("content", {})
    media = ctype.split(";")[0].strip()
    assert media in content, f"{method} {template} {status}: {media} not in {list(content)}"
    schema = content[media].get("schema")
    if schema is not None:
        _validate(schema, json.loads(body))


def _validate(schema: dict[str, Any], instance: object) -> None:
    rooted = {**schema, "components": DOCUMENT["components"]}
    jsonschema.Draft202012Validator(rooted).validate(instance)


async def _contract_hook(response: httpx.Response) -> None:
    await response.aread()
    request = response.request
    check_contract(
        request.method,
        request.url.path,
        response.status_code,
        response.headers.get("content-type", ""),
        response.content,
    )


# ---------------------------------------------------------------- a served API


def _key_line() -> str:
    key = asyncssh.generate_private_key("ssh-ed25519")
    return key.export_public_key().decode().strip()


def _settings(root: Path, **gateway: object) -> Settings:
    data: dict[str, Any] = {
        "gateway": {
            "storage_url": new_storage_url(root),
            "recordings_dir": str(root / "recordings"),
            "user_ca_key": str(root / "keys" / "user_ca"),
            "api_port": 0,
            "ssh_port": 0,
            "auth_max_failures": 1000,
            "cert_default_validity_s": 600,
            "cert_max_validity_s": 3600,
            **gateway,
        },
        "regions": [
            {"name": "sg", "country": "SG", "display": "Singapore"},
            {"name": "my", "country": "MY"},
        ],
        "hosts": [
            {
                "name": "sg-1",
                "region": "sg",
                "address": "127.0.0.1",
                "port": 41001,
                "host_key": _key_line(),
                "gpu_model": "NVIDIA H100 80GB HBM3",
                "gpu_count": 4,
                "price_per_gpu_hour": 2.5,
                "egress_per_gb": 0.08,
                "labels": {"tier": "prod"},
            },
            {
                "name": "my-1",
                "region": "my",
                "address": "127.0.0.1",
                "port": 41002,
                "host_key": _key_line(),
                "gpu_model": "NVIDIA A100",
                "gpu_count": 2,
                "price_per_gpu_hour": 1.5,
            },
        ],
        "roles": [
            {"name": "dev", "hosts": ["*"], "accounts": ["root", "ubuntu"]},
            {"name": "sg-only", "hosts": ["region:sg"], "accounts": ["root"]},
        ],
        "users": [
            {"name": "alice", "roles": ["dev"], "team": "ml"},
            {"name": "bob", "roles": ["sg-only"]},
            {"name": "carol"},
        ],
    }
    return Settings(**data)


@dataclass
class FakeLive:
    """Stands in for the SSH front's ``ActiveSession``."""

    id: str
    user: str
    host: str = "sg-1"
    mode: Mode = Mode.PASSTHROUGH
    source: str = "127.0.0.1:40000"
    started: float = field(default_factory=time.time)
    closed: int = 0

    def close(self) -> None:
        self.closed += 1


@dataclass
class Stack:
    settings: Settings
    audit: AuditStore
    storage: Storage
    api: ApiServer
    client: httpx.AsyncClient
    live: dict[str, FakeLive]
    secrets: dict[str, str] = field(default_factory=dict)

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secrets[who]}"}

    async def events(self, kind: str) -> list[AuditEvent]:
        return await self.audit.list(kind=kind, limit=1000)

    async def token(self, user: str, scope: Scope, name: str = "t", ttl_s: float = 3600) -> str:
        _, secret = await self.storage.tokens.create(user, scope, name, ttl_s)
        return secret


StackFactory = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def make_stack(tmp_path: Path) -> AsyncIterator[StackFactory]:
    stacks: list[Stack] = []

    async def make(ca_key: Path | None = None, **gateway: object) -> Stack:
        root = tmp_path / f"stack{len(stacks)}"
        root.mkdir()
        if ca_key is not None:
            gateway["user_ca_key"] = str(ca_key)
        settings = _settings(root, **gateway)
        g = settings.gateway
        url = g.storage_url.get_secret_value()
        audit = open_store(url)  # before storage: the audit store must create a shared file
        storage = await open_storage(url)
        user_ca = await asyncio.to_thread(UserCA.from_paths, g.user_ca_key)
        live: dict[str, FakeLive] = {}
        ctx = api_context(settings, runtime_of(settings, user_ca), audit, storage, live)
        api = await start_api(ctx, "127.0.0.1", 0)
        client = httpx.AsyncClient(
            base_url=api.url,
            trust_env=False,  # never a proxy: loopback only
            timeout=10.0,
            event_hooks={"response": [_contract_hook]},
        )
        stack = Stack(settings, audit, storage, api, client, live)
        stacks.append(stack)
        admin = await create_token(settings, user="ops", scope=Scope.ADMIN, name="bootstrap")
        stack.secrets["admin"] = admin.secret
        stack.secrets["alice"] = await stack.token("alice", Scope.USER)
        stack.secrets["alice-ci"] = await stack.token("alice", Scope.CI)
        stack.secrets["bob"] = await stack.token("bob", Scope.USER)
        return stack

    yield make
    for stack in reversed(stacks):
        await stack.client.aclose()
        await stack.api.stop()
        await stack.storage.close()
        await stack.audit.close()


@pytest.fixture
async def stack(make_stack: StackFactory) -> Stack:
    return await make_stack()


def error_code(response: httpx.Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


# ---------------------------------------------------------------- the document


async def test_served_document_equals_the_committed_one(stack: Stack) -> None:
    served = (await stack.client.get("/openapi.json")).json()
    assert served == DOCUMENT, f"docs/openapi.json is stale; regenerate: {REGENERATE}"


def test_committed_document_is_valid_openapi() -> None:
    from openapi_spec_validator import validate

    validate(DOCUMENT)
    assert DOCUMENT["openapi"].startswith("3.")


async def test_the_contract_check_catches_drift() -> None:
    body = json.dumps({"name": "sg-1"}).encode()
    with pytest.raises(jsonschema.ValidationError):
        check_contract("GET", "/v1/hosts", 200, "application/json", body)
    with pytest.raises(AssertionError, match="undocumented status 418"):
        check_contract("GET", "/v1/hosts", 418, "application/json", b"{}")


# ---------------------------------------------------------------- authentication


async def test_health_needs_no_token(stack: Stack) -> None:
    response = await stack.client.get("/v1/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_ready_needs_no_token(stack: Stack) -> None:
    response = await stack.client.get("/v1/ready")
    assert response.status_code == 200
    assert response.json()["status"] == "ready" and response.json()["reason"] is None


async def test_me(stack: Stack) -> None:
    me = (await stack.client.get("/v1/me", headers=stack.auth("alice"))).json()
    assert (me["user"], me["scope"], me["team"], me["in_inventory"]) == (
        "alice",
        "user",
        "ml",
        True,
    )
    assert me["roles"] == ["dev"] and me["accounts"] == ["root", "ubuntu"]
    admin = (await stack.client.get("/v1/me", headers=stack.auth("admin"))).json()
    assert (admin["user"], admin["scope"], admin["in_inventory"]) == ("ops", "admin", False)


async def _expired_secret(stack: Stack) -> str:
    past = TokenStore(stack.storage.db, clock=lambda: time.time() - 7200)
    _, secret = await past.create("alice", Scope.USER, "old", 3600)
    return secret


async def _revoked_secret(stack: Stack) -> str:
    token, secret = await stack.storage.tokens.create("alice", Scope.USER, "gone", 3600)
    response = await stack.client.delete(f"/v1/tokens/{token.id}", headers=stack.auth("alice"))
    assert response.status_code == 200 and response.json()["state"] == "revoked"
    return secret


async def _ghost_secret(stack: Stack) -> str:
    return await stack.token("ghost", Scope.USER)  # a user no longer in the inventory


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("missing", "token_missing"),
        ("basic", "token_missing"),
        ("garbage", "token_unknown"),
        ("unknown", "token_unknown"),
        ("expired", "token_expired"),
        ("revoked", "token_revoked"),
        ("ghost", "user_unknown"),
    ],
)
async def test_refused_tokens_get_401_and_are_audited(stack: Stack, case: str, code: str) -> None:
    makers: dict[str, Callable[[Stack], Awaitable[str]]] = {
        "expired": _expired_secret,
        "revoked": _revoked_secret,
        "ghost": _ghost_secret,
    }
    headers = {
        "missing": {},
        "basic": {"Authorization": "Basic YWxpY2U6cHc="},
        "garbage": {"Authorization": "Bearer not-a-token"},
        "unknown": {"Authorization": "Bearer gph_" + "x" * 43},
    }.get(case)
    if headers is None:
        headers = {"Authorization": f"Bearer {await makers[case](stack)}"}
    response = await stack.client.get("/v1/sessions", headers=headers)
    assert response.status_code == 401
    assert error_code(response) == code
    assert response.headers["www-authenticate"] == "Bearer"
    [event] = await stack.events("api.auth_fail")
    assert event.data["reason"] == code
    assert event.data["path"] == "/v1/sessions" and event.data["method"] == "GET"
    assert str(event.data["source"]).startswith("127.0.0.1:")
    if case in ("expired", "revoked"):
        assert event.actor == "alice" and event.data["user"] == "alice"
    elif case == "ghost":
        assert event.actor == "ghost"
    else:
        assert event.actor == "anonymous"


@pytest.mark.parametrize(
    ("who", "method", "path", "body"),
    [
        ("alice", "GET", "/v1/audit", None),
        ("alice", "GET", "/v1/audit/verify", None),
        ("alice", "POST", "/v1/sessions/s1/kill", None),
        ("alice-ci", "POST", "/v1/tokens", {"name": "x", "scope": "ci"}),
        ("alice-ci", "GET", "/v1/tokens", None),
        ("alice", "POST", "/v1/tokens", {"name": "x", "scope": "admin"}),
        ("alice", "POST", "/v1/tokens", {"name": "x", "scope": "ci", "user": "bob"}),
        ("alice", "GET", "/v1/tokens?user=bob", None),
        ("alice", "GET", "/v1/sessions?user=bob", None),
        ("admin", "POST", "/v1/certificates", {"public_key": "PLACEHOLDER"}),
    ],
)
async def test_wrong_scope_gets_403_and_is_audited(
    stack: Stack, who: str, method: str, path: str, body: dict[str, str] | None
) -> None:
    if body is not None and body.get("public_key") == "PLACEHOLDER":
        body = {"public_key": _key_line()}  # valid key; ops has no inventory identity
    response = await stack.client.request(method, path, json=body, headers=stack.auth(who))
    assert response.status_code == 403, response.text
    assert error_code(response) == "forbidden"
    [event] = await stack.events("api.forbidden")
    user = "ops" if who == "admin" else "alice"
    assert event.actor == user
    assert event.data["path"] == path.split("?")[0] and event.data["method"] == method
    assert event.data["reason"] and str(event.data["source"]).startswith("127.0.0.1:")
    assert len(await stack.storage.tokens.list()) == 4  # nothing was created


async def test_repeated_failures_are_rate_limited(make_stack: StackFactory) -> None:
    stack = await make_stack(auth_max_failures=3, auth_ban_s=60)
    bad = {"Authorization": "Bearer gph_" + "y" * 43}
    for _ in range(3):
        assert (await stack.client.get("/v1/me", headers=bad)).status_code == 401
    refused = await stack.client.get("/v1/me", headers=bad)
    assert refused.status_code == 429 and error_code(refused) == "rate_limited"
    assert len(await stack.events("api.auth_fail")) == 3  # the 429 wrote nothing more
    [ban] = await stack.events("api.ratelimited")
    assert ban.data["source"] == "127.0.0.1"
    # A ban never refuses a valid token, from the same address or any other.
    assert (await stack.client.get("/v1/me", headers=stack.auth("alice"))).status_code == 200
    assert (await stack.client.get("/v1/health")).status_code == 200


# ---------------------------------------------------------------- tokens


async def test_token_create_list_revoke(stack: Stack) -> None:
    created = await stack.client.post(
        "/v1/tokens",
        json={"name": "ci-runner", "scope": "ci", "ttl_s": 600},
        headers=stack.auth("alice"),
    )
    assert created.status_code == 201
    body = created.json()
    token, secret = body["token"], body["secret"]
    assert secret.startswith("gph_") and token["user"] == "alice" and token["scope"] == "ci"
    assert token["expires_at"] - token["created_at"] == pytest.approx(600)
    me = (await stack.client.get("/v1/me", headers={"Authorization": f"Bearer {secret}"})).json()
    assert (me["user"], me["scope"], me["token_id"]) == ("alice", "ci", token["id"])

    mine = (await stack.client.get("/v1/tokens", headers=stack.auth("alice"))).json()["tokens"]
    assert {t["user"] for t in mine} == {"alice"} and token["id"] in {t["id"] for t in mine}
    assert all("secret" not in t and "token_hash" not in t for t in mine)
    every = (await stack.client.get("/v1/tokens", headers=stack.auth("admin"))).json()["tokens"]
    assert {t["user"] for t in every} == {"alice", "bob", "ops"}
    bobs = await stack.client.get("/v1/tokens?user=bob", headers=stack.auth("admin"))
    assert [t["user"] for t in bobs.json()["tokens"]] == ["bob"]

    # Another user's token is invisible; the owner revokes; the secret stops working at once.
    other = await stack.client.delete(f"/v1/tokens/{token['id']}", headers=stack.auth("bob"))
    assert other.status_code == 404 and error_code(other) == "not_found"
    gone = await stack.client.delete(f"/v1/tokens/{token['id']}", headers=stack.auth("alice"))
    assert gone.status_code == 200 and gone.json()["state"] == "revoked"
    refused = await stack.client.get("/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert refused.status_code == 401 and error_code(refused) == "token_revoked"
    again = await stack.client.delete(f"/v1/tokens/{token['id']}", headers=stack.auth("admin"))
    assert again.json()["revoked_at"] == gone.json()["revoked_at"]

    [made] = [e for e in await stack.events("token.created") if e.actor == "alice"]
    assert made.data["token_id"] == token["id"] and made.data["scope"] == "ci"
    assert secret not in json.dumps(dict(made.data))
    [revoked] = await stack.events("token.revoked")  # the second revocation changed nothing
    assert revoked.actor == "alice" and revoked.data["token_id"] == token["id"]


async def test_admin_creates_tokens_for_anyone(stack: Stack) -> None:
    response = await stack.client.post(
        "/v1/tokens",
        json={"name": "bob-admin", "scope": "admin", "user": "bob"},
        headers=stack.auth("admin"),
    )
    assert response.status_code == 201 and response.json()["token"]["scope"] == "admin"
    unknown = await stack.client.post(
        "/v1/tokens",
        json={"name": "x", "scope": "user", "user": "nobody"},
        headers=stack.auth("admin"),
    )
    assert unknown.status_code == 422 and error_code(unknown) == "invalid_request"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "x", "scope": "root"},
        {"name": "x", "ttl_s": 10},
        {"name": "x", "extra": 1},
        {"name": "bad\u0007name"},
    ],
)
async def test_invalid_token_requests_are_422(stack: Stack, body: dict[str, object]) -> None:
    response = await stack.client.post("/v1/tokens", json=body, headers=stack.auth("alice"))
    assert response.status_code == 422 and error_code(response) == "invalid_request"
    assert response.json()["error"]["message"]


async def test_bad_token_ids_and_routes(stack: Stack) -> None:
    bad_id = await stack.client.delete("/v1/tokens/..%2F..", headers=stack.auth("admin"))
    assert bad_id.status_code in (404, 422)
    no_route = await stack.client.get("/v1/nope", headers=stack.auth("admin"))
    assert no_route.status_code == 404 and error_code(no_route) == "not_found"
    wrong = await stack.client.put("/v1/hosts", headers=stack.auth("admin"))
    assert wrong.status_code == 405 and error_code(wrong) == "method_not_allowed"


def test_bootstrap_checks_its_input(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    with pytest.raises(ConfigError, match="not declared"):
        create_token_blocking(settings, user="ops", scope=Scope.USER)
    with pytest.raises(ConfigError, match="not a user name"):
        create_token_blocking(settings, user="bad name", scope=Scope.ADMIN)
    with pytest.raises(ConfigError, match="--ttl"):
        create_token_blocking(settings, user="alice", scope=Scope.USER, ttl_s=0)
    created = create_token_blocking(settings, user="alice", scope=Scope.CI, name="runner")
    assert created.secret.startswith("gph_") and created.token.scope is Scope.CI


async def test_bootstrap_token_is_audited(stack: Stack) -> None:
    [event] = await stack.events("token.created")
    assert event.actor == CLI_ACTOR
    assert (event.data["user"], event.data["scope"], event.data["name"]) == (
        "ops",
        "admin",
        "bootstrap",
    )


# ---------------------------------------------------------------- certificates


def _keygen_list(cert_line: str, tmp_path: Path) -> str:
    path = tmp_path / "id-cert.pub"
    path.write_text(cert_line + "\n")
    result = subprocess.run(
        ["ssh-keygen", "-L", "-f", str(path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _principals(listing: str) -> list[str]:
    lines = listing.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "Principals:")
    names = []
    for line in lines[start + 1 :]:
        if not line.startswith(" " * 16):
            break
        names.append(line.strip())
    return names


async def test_certificate_for_the_callers_key(
    stack: Stack, tmp_path: Path, require_bin: Callable[[str], str]
) -> None:
    require_bin("ssh-keygen")
    key = asyncssh.generate_private_key("ssh-ed25519")
    public = key.export_public_key().decode()
    response = await stack.client.post(
        "/v1/certificates", json={"public_key": public}, headers=stack.auth("alice")
    )
    assert response.status_code == 200, response.text
    cert = response.json()
    listing = _keygen_list(cert["certificate"], tmp_path)
    assert "ssh-ed25519-cert-v01@openssh.com user certificate" in listing
    # The gateway login, then exactly the (host, account) pairs dev grants in passthrough.
    scoped = ["alice", "root@my-1", "root@sg-1", "ubuntu@my-1", "ubuntu@sg-1"]
    assert _principals(listing) == scoped == cert["principals"]
    assert f'Key ID: "{cert["key_id"]}"' in listing and cert["key_id"].startswith("gpuhop:alice:")
    ca_fp = asyncssh.import_public_key(cert["ca_public_key"]).get_fingerprint()
    assert f"Signing CA: ED25519 {ca_fp}" in listing
    assert key.get_fingerprint() in listing
    assert cert["valid_before"] - cert["valid_after"] == 600 + 60  # default, plus skew allowance
    [event] = await stack.events("cert.issued")
    assert event.actor == "alice" and event.data["key_id"] == cert["key_id"]
    assert event.data["via"] == "api" and event.data["principals"] == scoped


async def test_certificate_validity_is_capped(stack: Stack) -> None:
    response = await stack.client.post(
        "/v1/certificates",
        json={"public_key": _key_line(), "validity_s": 10**9},
        headers=stack.auth("alice-ci"),
    )
    cert = response.json()
    # It opens accounts on hosts: capped by cert_passthrough_max_validity_s (1800) too.
    assert cert["valid_before"] - cert["valid_after"] == 1800 + 60
    bob = await stack.client.post(
        "/v1/certificates", json={"public_key": _key_line()}, headers=stack.auth("bob")
    )
    assert bob.json()["principals"] == ["bob", "root@sg-1"]


@pytest.mark.parametrize(
    "public_key",
    [
        "ssh-ed25519 AAAAnotbase64",
        "hello",
        asyncssh.generate_private_key("ssh-rsa", key_size=1024).export_public_key().decode(),
    ],
)
async def test_unusable_keys_are_refused(stack: Stack, public_key: str) -> None:
    response = await stack.client.post(
        "/v1/certificates", json={"public_key": public_key}, headers=stack.auth("alice")
    )
    assert response.status_code == 422 and error_code(response) == "invalid_public_key"
    assert await stack.events("cert.issued") == []


@pytest.mark.openssh
async def test_certificate_logs_in_to_a_real_host(
    make_stack: StackFactory,
    sim_host: Callable[..., SshdHost],
    user_ca: KeyPair,
    user_key: KeyPair,
    require_bin: Callable[[str], str],
    tmp_path: Path,
) -> None:
    """The API signs with the CA a real sshd trusts; the certificate alone gets alice in as
    root on sg-1, which maps logins to host-scoped principals (root@sg-1) as gpuhop hosts do."""
    ssh = require_bin("ssh")
    stack = await make_stack(ca_key=user_ca.private)
    # No plain keys: only a certificate works.
    host = sim_host("sg-1", authorized_keys=[], scoped_principals=True)
    response = await stack.client.post(
        "/v1/certificates", json={"public_key": user_key.public_line}, headers=stack.auth("alice")
    )
    user_key.cert.write_text(response.json()["certificate"] + "\n")
    known = tmp_path / "known_hosts"
    known.write_text(host.known_hosts_line + "\n")
    argv = [ssh, "-F", "/dev/null", "-i", str(user_key.private), "-p", str(host.port)]
    for option in (
        "IdentitiesOnly=yes",
        "IdentityAgent=none",
        "BatchMode=yes",
        f"UserKnownHostsFile={known}",
        "StrictHostKeyChecking=yes",
        f"CertificateFile={user_key.cert}",
        "ConnectTimeout=10",
    ):
        argv += ["-o", option]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        "root@127.0.0.1",
        "echo",
        "in-as",
        "$(id -un)",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    assert out.decode().strip() == "in-as root"


# ---------------------------------------------------------------- hosts


async def test_hosts_listing(stack: Stack) -> None:
    hosts = (await stack.client.get("/v1/hosts", headers=stack.auth("bob"))).json()
    assert [h["name"] for h in hosts] == ["sg-1", "my-1"]
    sg, my = hosts
    assert sg == {
        "name": "sg-1",
        "region": "sg",
        "country": "SG",
        "address": "127.0.0.1",
        "port": 41001,
        "status": "unknown",
        "gpu_model": "NVIDIA H100 80GB HBM3",
        "gpus_total": 4,
        "gpus_free": 4,
        "price_per_gpu_hour": 2.5,
        "egress_per_gb": 0.08,
        "residency": ["SG"],
        "labels": {"tier": "prod"},
        "rtt_ms": None,
        "rtt_p95_ms": None,
        "rtt_history": [],
        "utilization_pct": None,
        "allowed": True,
    }
    assert (my["country"], my["allowed"], my["gpus_free"]) == ("MY", False, 2)
    alice = (await stack.client.get("/v1/hosts", headers=stack.auth("alice-ci"))).json()
    assert [h["allowed"] for h in alice] == [True, True]
    ops = (await stack.client.get("/v1/hosts", headers=stack.auth("admin"))).json()
    assert [h["allowed"] for h in ops] == [False, False]  # ops has no roles


# ---------------------------------------------------------------- sessions


async def _record(stack: Stack, sid: str, user: str, at: float, end: bool = False) -> None:
    await stack.storage.sessions.record_start(
        session_id=sid,
        user=user,
        host="sg-1",
        region="sg",
        mode=Mode.PASSTHROUGH,
        source="127.0.0.1:40000",
        gpus=1,
        started_at=at,
    )
    if end:
        await stack.storage.sessions.record_end(
            sid, bytes_up=10, bytes_down=20, exit_status=0, ended_at=at + 5
        )


async def test_sessions_are_private_except_to_admins(stack: Stack) -> None:
    now = time.time()
    for i in range(5):
        await _record(stack, f"a{i}", "alice", now - 100 + i, end=i % 2 == 0)
    await _record(stack, "b0", "bob", now - 50)
    mine = (await stack.client.get("/v1/sessions", headers=stack.auth("alice"))).json()
    assert [s["id"] for s in mine["sessions"]] == ["a4", "a3", "a2", "a1", "a0"]
    assert mine["next_after"] is None
    a0 = mine["sessions"][-1]
    assert (a0["live"], a0["duration_s"], a0["bytes_down"], a0["exit_status"]) == (False, 5, 20, 0)
    assert mine["sessions"][1]["live"] and mine["sessions"][1]["duration_s"] >= 97

    live = await stack.client.get("/v1/sessions?live=true", headers=stack.auth("alice"))
    assert [s["id"] for s in live.json()["sessions"]] == ["a3", "a1"]
    page = (await stack.client.get("/v1/sessions?limit=2", headers=stack.auth("alice"))).json()
    assert [s["id"] for s in page["sessions"]] == ["a4", "a3"] and page["next_after"] == "a3"
    rest = await stack.client.get("/v1/sessions?limit=2&after=a3", headers=stack.auth("alice"))
    assert [s["id"] for s in rest.json()["sessions"]] == ["a2", "a1"]

    every = (await stack.client.get("/v1/sessions", headers=stack.auth("admin"))).json()
    assert len(every["sessions"]) == 6
    bobs = await stack.client.get("/v1/sessions?user=bob", headers=stack.auth("admin"))
    assert [s["id"] for s in bobs.json()["sessions"]] == ["b0"]

    assert (
        await stack.client.get("/v1/sessions/a1", headers=stack.auth("alice"))
    ).status_code == 200
    hidden = await stack.client.get("/v1/sessions/a1", headers=stack.auth("bob"))
    assert hidden.status_code == 404 and error_code(hidden) == "not_found"
    seen = await stack.client.get("/v1/sessions/b0", headers=stack.auth("admin"))
    assert seen.json()["user"] == "bob"
    too_many = await stack.client.get("/v1/sessions?limit=501", headers=stack.auth("alice"))
    assert too_many.status_code == 422


async def test_admin_kills_a_live_session(stack: Stack) -> None:
    await _record(stack, "s1", "alice", time.time())
    stack.live["s1"] = FakeLive("s1", "alice")
    killed = await stack.client.post("/v1/sessions/s1/kill", headers=stack.auth("admin"))
    assert killed.status_code == 200 and killed.json() == {"session_id": "s1", "killed": True}
    assert stack.live["s1"].closed == 1
    [event] = await stack.events("session.kill")
    assert event.actor == "ops" and event.data["user"] == "alice" and event.data["host"] == "sg-1"

    del stack.live["s1"]  # the front drops it once closed
    await stack.storage.sessions.record_end("s1", bytes_up=0, bytes_down=0)
    ended = await stack.client.post("/v1/sessions/s1/kill", headers=stack.auth("admin"))
    assert ended.status_code == 409 and error_code(ended) == "session_not_live"
    missing = await stack.client.post("/v1/sessions/nope/kill", headers=stack.auth("admin"))
    assert missing.status_code == 404


async def test_admin_asks_the_replica_running_a_session_to_end_it(stack: Stack) -> None:
    other = await open_storage(stack.settings.gateway.storage_url.get_secret_value(), node="gw-b")
    try:
        await other.replicas.heartbeat()  # a gateway replica: it stamps its sessions
        await other.sessions.record_start(
            session_id="s2", user="alice", host="sg-1", region="sg", mode=Mode.PASSTHROUGH
        )
        asked = await stack.client.post("/v1/sessions/s2/kill", headers=stack.auth("admin"))
        assert asked.status_code == 202 and asked.json() == {"session_id": "s2", "killed": False}
        assert await other.kills.pending() == ["s2"]
        [event] = await stack.events("session.kill")
        assert event.data["replica"] == other.replicas.replica
    finally:
        await other.close()


async def test_recordings(stack: Stack) -> None:
    await _record(stack, "r1", "alice", time.time(), end=True)
    await _record(stack, "r2", "alice", time.time(), end=True)
    cast = '{"version": 2, "width": 80, "height": 24}\n[0.1, "o", "hello\\r\\n"]\n'
    recordings = stack.settings.gateway.recordings_dir
    recordings.mkdir(parents=True)
    (recordings / "r1.cast").write_text(cast)
    (recordings / "orphan.cast").write_text(cast)

    own = await stack.client.get("/v1/recordings/r1", headers=stack.auth("alice"))
    assert own.status_code == 200 and own.text == cast
    assert own.headers["content-type"].startswith("application/x-asciicast")
    assert (await stack.client.get("/v1/recordings/r1", headers=stack.auth("admin"))).text == cast
    other = await stack.client.get("/v1/recordings/r1", headers=stack.auth("bob"))
    assert other.status_code == 404
    none = await stack.client.get("/v1/recordings/r2", headers=stack.auth("alice"))
    assert none.status_code == 404 and error_code(none) == "not_found"
    # A recording with no session record: admins only.
    assert (
        await stack.client.get("/v1/recordings/orphan", headers=stack.auth("admin"))
    ).text == cast
    assert (
        await stack.client.get("/v1/recordings/orphan", headers=stack.auth("alice"))
    ).status_code == 404
    sneaky = await stack.client.get("/v1/recordings/..%2Fgpuhop.db", headers=stack.auth("admin"))
    assert sneaky.status_code in (404, 422)


# ---------------------------------------------------------------- audit


async def test_audit_paging_and_filters(stack: Stack) -> None:
    for i in range(25):
        await stack.audit.append("test.event", "alice" if i % 2 else "bob", {"i": i})
    total = len(await stack.audit.list(limit=1000))
    ids: list[int] = []
    after = 0
    for _ in range(20):
        response = await stack.client.get(
            f"/v1/audit?limit=7&after_id={after}", headers=stack.auth("admin")
        )
        page = response.json()
        ids += [e["id"] for e in page["events"]]
        if page["next_after_id"] is None:
            break
        assert page["next_after_id"] == page["events"][-1]["id"]
        after = page["next_after_id"]
    assert ids == sorted(set(ids)) and len(ids) >= total  # the reads themselves add no events

    filtered = await stack.client.get(
        "/v1/audit?kind=test.event&actor=alice&limit=1000", headers=stack.auth("admin")
    )
    events = filtered.json()["events"]
    assert [e["data"]["i"] for e in events] == list(range(1, 25, 2))
    assert all(len(e["hash"]) == 64 and len(e["prev_hash"]) == 64 for e in events)
    for limit in (0, 1001):
        bad = await stack.client.get(f"/v1/audit?limit={limit}", headers=stack.auth("admin"))
        assert bad.status_code == 422 and error_code(bad) == "invalid_request"

    verified = (await stack.client.get("/v1/audit/verify", headers=stack.auth("admin"))).json()
    assert verified["ok"] and verified["count"] >= 25 and verified["first_broken"] is None


# ---------------------------------------------------------------- lifecycle


async def test_stop_closes_the_listener(make_stack: StackFactory) -> None:
    stack = await make_stack()
    assert stack.api.port > 0
    await stack.api.stop()
    with pytest.raises(httpx.ConnectError):
        await stack.client.get("/v1/health")
