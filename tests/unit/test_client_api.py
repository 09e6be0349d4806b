"""The typed API client: parsing, error translation, and its contract with docs/openapi.json.

The client never imports the gateway, so its response models are checked here
against the committed OpenAPI document (which the gateway's own tests keep
equal to what it serves): every field the client reads must be documented,
required, and of the documented type, and every sample body below must be a
valid response by the document.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jsonschema  # type: ignore[import-untyped, unused-ignore]
import pytest
from pydantic import TypeAdapter

from client.adminmodels import (
    AdminBudget,
    AdminChange,
    AdminDataset,
    AdminHost,
    AdminKey,
    AdminRole,
    AdminTeam,
    AdminUser,
    HostScan,
)
from client.api.clients import Client
from client.api.models import (
    AuditEvent,
    AuditPage,
    Certificate,
    ErrorDetail,
    Excluded,
    GatewayInfo,
    Golden,
    GoldenHost,
    HostView,
    Me,
    Placement,
    Ranked,
    SessionPage,
    SessionView,
)
from client.errors import (
    ClientError,
    GatewayUnavailable,
    PolicyDenied,
    TokenRejected,
    UsageError,
)
from client.settings import Secret

DOC: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[2] / "docs" / "openapi.json").read_text()
)
SCHEMAS: dict[str, Any] = DOC["components"]["schemas"]
CONTRACT: list[tuple[type[Any], str]] = [
    (Me, "Me"),
    (HostView, "HostOut"),
    (GatewayInfo, "GatewayInfo"),
    (Certificate, "CertificateOut"),
    (ErrorDetail, "ErrorDetail"),
    (GoldenHost, "GoldenHostOut"),
    (Golden, "GoldenOut"),
    (SessionView, "SessionOut"),
    (SessionPage, "SessionPage"),
    (Ranked, "RankedOut"),
    (Excluded, "ExcludedOut"),
    (Placement, "PlacementOut"),
    (AuditEvent, "AuditEventOut"),
    (AuditPage, "AuditPage"),
    (AdminChange, "AdminChange"),
    (AdminUser, "AdminUserOut"),
    (AdminKey, "UserKeyOut"),
    (AdminRole, "AdminRoleOut"),
    (AdminTeam, "AdminTeamOut"),
    (AdminDataset, "AdminDatasetOut"),
    (AdminBudget, "AdminBudgetOut"),
    (AdminHost, "AdminHostOut"),
    (HostScan, "HostScanOut"),
]

ME = {
    "user": "rita",
    "scope": "user",
    "token_id": "t1",
    "token_name": "cli",
    "expires_at": 2e9,
    "in_inventory": True,
    "team": "ml",
    "roles": ["rec"],
    "accounts": ["root"],
}
HOST = {
    "name": "sg-1",
    "region": "sg",
    "country": "SG",
    "address": "127.0.0.1",
    "port": 2201,
    "status": "up",
    "gpu_model": "H100",
    "gpus_total": 4,
    "gpus_free": 3,
    "price_per_gpu_hour": 2.5,
    "egress_per_gb": 0.08,
    "residency": [],
    "labels": {},
    "rtt_ms": 4.2,
    "rtt_p95_ms": None,
    "rtt_history": [],
    "utilization_pct": None,
    "allowed": True,
}
GATEWAY = {
    "version": "0.1.0",
    "ssh_host": "127.0.0.1",
    "ssh_port": 2222,
    "host_key": "ssh-ed25519 AAAA",
    "host_ca_key": "ssh-ed25519 BBBB",
    "host_keys": {"sg-1": "ssh-ed25519 CCCC"},
    "gateway_keys": ["ssh-ed25519 AAAA"],
}
CERT = {
    "certificate": "ssh-ed25519-cert-v01@openssh.com AAAA",
    "key_id": "gpuhop:rita:7",
    "principals": ["rita", "root"],
    "valid_after": 1,
    "valid_before": 2,
    "ca_public_key": "ssh-ed25519 DDDD",
}


def _types(prop: dict[str, Any]) -> set[str]:
    if "$ref" in prop:
        return _types(SCHEMAS[prop["$ref"].rsplit("/", 1)[1]])
    found: set[str] = set()
    for option in prop.get("anyOf", []):
        found |= _types(option)
    if "type" in prop:
        found.add(prop["type"])
    if "const" in prop or "enum" in prop:
        found.add(prop.get("type", "string"))
    return found


@pytest.mark.parametrize(("model", "component"), CONTRACT, ids=[c for _, c in CONTRACT])
def test_client_models_match_the_document(model: type[Any], component: str) -> None:
    documented = SCHEMAS[component]
    ours = TypeAdapter(model).json_schema()
    ours_defs = ours.get("$defs", {})
    for name, prop in ours["properties"].items():
        assert name in documented["properties"], f"{component}.{name} is not in the document"
        if name in ours.get("required", []):  # a field the client may do without has a default
            assert name in documented.get("required", []), f"{component}.{name} may be missing"
        if "$ref" in prop:
            prop = ours_defs[prop["$ref"].rsplit("/", 1)[1]]
        ours_types = {t for t in _types(prop) if t != "null"} or {"object"}
        theirs = _types(documented["properties"][name])
        assert ours_types <= theirs | ({"number"} if "integer" in theirs else set()), (
            f"{component}.{name}: client reads {ours_types}, document says {theirs}"
        )
        if "null" in _types(documented["properties"][name]):
            assert "null" in _types(prop), f"{component}.{name} may be null; client refuses it"


@pytest.mark.parametrize(
    ("body", "component"),
    [(ME, "Me"), (HOST, "HostOut"), (GATEWAY, "GatewayInfo"), (CERT, "CertificateOut")],
)
def test_samples_are_valid_documented_responses(body: dict[str, Any], component: str) -> None:
    schema = {"$ref": f"#/components/schemas/{component}", "components": DOC["components"]}
    jsonschema.Draft202012Validator(schema).validate(body)


def _api(handler: Callable[[httpx.Request], httpx.Response]) -> Client:
    return Client("http://gw.test", Secret("gph_t"), transport=httpx.MockTransport(handler))


def test_requests_carry_the_token_and_parse() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        bodies = {"/v1/me": ME, "/v1/hosts": [HOST], "/v1/gateway": GATEWAY}
        if request.url.path == "/v1/certificates":
            assert json.loads(request.content) == {"public_key": "ssh-ed25519 K", "validity_s": 900}
            return httpx.Response(200, json=CERT)
        return httpx.Response(200, json=bodies[request.url.path])

    with _api(handler) as api:
        assert api.me().accounts == ["root"]
        hosts = api.hosts()
        assert hosts[0].gpus_free == 3 and hosts[0].rtt_ms == 4.2
        assert api.gateway().host_keys == {"sg-1": "ssh-ed25519 CCCC"}
        assert api.sign_certificate("ssh-ed25519 K", 900).key_id == "gpuhop:rita:7"
    assert all(r.headers["authorization"] == "Bearer gph_t" for r in seen)


def _error(status: int, code: str) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"error": {"code": code, "message": f"{code} msg"}})

    return handler


@pytest.mark.parametrize(
    ("status", "code", "error", "exit_code"),
    [
        (401, "token_expired", TokenRejected, 78),
        (401, "token_revoked", TokenRejected, 78),
        (403, "forbidden", PolicyDenied, 77),
        (429, "rate_limited", GatewayUnavailable, 69),
        (503, "storage_unavailable", GatewayUnavailable, 69),
        (404, "not_found", ClientError, 1),
        (404, "unknown_dataset", UsageError, 2),
    ],
)
def test_errors_are_translated_once(
    status: int, code: str, error: type[ClientError], exit_code: int
) -> None:
    with _api(_error(status, code)) as api, pytest.raises(error) as info:
        api.me()
    assert type(info.value) is error and info.value.exit_code == exit_code
    assert code in str(info.value) or f"{code} msg" in str(info.value)


def test_a_bad_argument_is_the_gateways_message_alone() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = {"error": {"code": "unknown_dataset", "message": "no data set named 'x'"}}
        return httpx.Response(404, json=body)

    with _api(handler) as api, pytest.raises(UsageError) as info:
        api.me()
    assert str(info.value) == "no data set named 'x'"


def test_unreachable_gateway_is_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with _api(handler) as api, pytest.raises(GatewayUnavailable, match="cannot reach"):
        api.hosts()


def test_malformed_responses_are_one_client_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"user": "rita"})

    with _api(handler) as api, pytest.raises(ClientError, match="unexpected response"):
        api.me()


def test_unknown_fields_are_ignored() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=[{**HOST, "something_new": 1}])

    with _api(handler) as api:
        assert api.hosts()[0].name == "sg-1"
