"""``/v1/certificates``: short-lived SSH user certificates for the caller's own key.

Principals are the caller's user name plus ``ACCOUNT@HOST`` for exactly the
(host, account) pairs their roles grant in passthrough, as ``gpuhop-gateway ca
sign`` gives them (see :mod:`gateway.domain.policy.passthrough`); a certificate that
opens accounts on hosts is valid for ``cert_passthrough_max_validity_s`` at
most. It permits agent forwarding only when every role granting one of those
pairs allows it (the host enforces ``ssh -A`` in passthrough). The certificate
is returned only once ``cert.issued`` is durably audited, which is also what
lets the gateway revoke it at hosts when its user is removed.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter, Request

from gateway.adapters.keys import parse_public_key
from gateway.config.process import GatewaySettings
from gateway.domain.policy.passthrough import host_principals, passthrough_agent_forwarding
from gateway.edges.http.auth import AnyCaller, Ctx, forbid
from gateway.edges.http.errors import ApiError
from gateway.edges.http.schemas import CertificateOut, CertificateRequest
from gateway.errors import KeyMaterialError

router = APIRouter(tags=["certificates"])

# Key types a certificate may be issued for; DSA and short RSA keys are refused.
_ALGORITHMS = {
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
}
RSA_MIN_BITS = 2048


def _check_key_type(algorithm: str, bits: int | None) -> None:
    if algorithm not in _ALGORITHMS:
        raise ApiError(422, "invalid_public_key", f"key type {algorithm} is not accepted")
    if algorithm == "ssh-rsa" and (bits or 0) < RSA_MIN_BITS:
        raise ApiError(422, "invalid_public_key", f"RSA keys need at least {RSA_MIN_BITS} bits")


def certificate_validity(asked: int | None, scoped: Sequence[str], g: GatewaySettings) -> int:
    """The asked validity (else the default), capped by the config; shorter when the
    certificate opens accounts on hosts, where it works without the gateway."""
    cap = g.cert_max_validity_s
    if scoped:
        cap = min(cap, g.cert_passthrough_max_validity_s)
    return min(asked or g.cert_default_validity_s, cap)


@router.post("/certificates", response_model=CertificateOut)
async def sign_certificate(
    request: Request, ctx: Ctx, caller: AnyCaller, body: CertificateRequest
) -> CertificateOut:
    """Sign the caller's public key; validity defaults to, and is capped by, the config."""
    principal = caller.principal
    if principal is None:
        await forbid(request, caller, f"user {caller.user!r} is not in the gateway's inventory")
    try:
        key = parse_public_key(body.public_key)
    except KeyMaterialError as exc:
        raise ApiError(422, "invalid_public_key", str(exc)) from None
    algorithm = key.get_algorithm()
    algorithm = algorithm.decode() if isinstance(algorithm, bytes) else str(algorithm)
    pyca = getattr(key, "pyca_key", None)
    _check_key_type(algorithm, getattr(pyca, "key_size", None))
    g = ctx.settings.gateway
    scoped = host_principals(principal, ctx.inventory.hosts)
    validity = certificate_validity(body.validity_s, scoped, g)
    agent = passthrough_agent_forwarding(principal, ctx.inventory.hosts)
    try:
        issued = ctx.user_ca.sign(
            key,
            user=principal.user,
            accounts=scoped,
            validity_s=validity,
            permit_agent_forwarding=agent,
        )
    except KeyMaterialError as exc:
        raise ApiError(422, "invalid_public_key", str(exc)) from None
    await ctx.audit.append(
        "cert.issued",
        principal.user,
        {
            "user": principal.user,
            "key_id": issued.key_id,
            "serial": issued.serial,
            "principals": list(issued.principals),
            "agent_forwarding": agent,
            "valid_after": issued.valid_after,
            "valid_before": issued.valid_before,
            "fingerprint": key.get_fingerprint(),
            "via": "api",
            "token_id": caller.token.id,
            "source": caller.source,
        },
    )
    return CertificateOut(
        certificate=issued.openssh_line(),
        key_id=issued.key_id,
        principals=list(issued.principals),
        valid_after=issued.valid_after,
        valid_before=issued.valid_before,
        ca_public_key=ctx.user_ca.public_line,
    )
