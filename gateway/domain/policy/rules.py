"""Role-based access decisions: pure functions over domain types.

No I/O, no clock, no globals: the same principal and request always give the
same decision, so the SSH front, the API and tests can all call ``evaluate``
and the audit log can store its reason verbatim.

Deny is the default. A role grants a request when all four hold:

1. one of its host selectors matches the host;
2. the request's mode is among its modes;
3. the account is unknown ("", passthrough) or among its accounts ("*" = any);
4. it sets no GPU limit (0) or the request asks for no more than the limit.

When no role grants, the reason comes from the role that got furthest down
that list, because "role dev does not allow account 'root' on sg-1" tells the
user what to ask for, where "no role grants host sg-1" would not.
"""

from __future__ import annotations

from gateway.domain.models import AccessRequest, Decision, Host, Mode, Principal, Role

ANY = "*"


def host_matches(selector: str, host: Host) -> bool:
    """Whether one role host selector covers ``host``.

    Selectors: ``*`` (every host), ``name:X``, ``region:X``, ``label:k=v``, or a
    bare host name. A malformed selector matches nothing.
    """
    if selector == ANY:
        return True
    kind, sep, value = selector.partition(":")
    if not sep:
        return selector == host.name
    if kind == "name":
        return value == host.name
    if kind == "region":
        return value == host.region
    if kind == "label":
        key, eq, expected = value.partition("=")
        return bool(key) and bool(eq) and host.labels.get(key) == expected
    return False


def evaluate(principal: Principal, request: AccessRequest) -> Decision:
    """Decide whether ``principal`` may do ``request``; the reason is shown and audited."""
    host = request.host
    if request.gpus < 0:
        return Decision(False, f"{request.gpus} GPUs requested; the count cannot be negative")
    if not principal.roles:
        return Decision(False, f"user {principal.user} has no roles")
    best_stage = 0  # a role that does not even match the host explains nothing
    best_reason = f"user {principal.user} has no role that grants host {host.name}"
    for role in principal.roles:
        stage, reason = _check(role, request)
        if not reason:
            how = f"{request.mode.value} access to {host.name}"
            if request.account:
                how += f" as {request.account}"
            return Decision(True, f"role {role.name} grants {how}", role=role.name)
        if stage > best_stage:
            best_stage, best_reason = stage, reason
    return Decision(False, best_reason)


def allowed_accounts(principal: Principal) -> tuple[str, ...]:
    """Every remote account any of the principal's roles names, sorted and unique.

    Meant for certificate principals. ``"*"`` is returned as is when a role
    allows any account: a certificate signer must not turn it into an empty
    principals list, which OpenSSH reads as "valid for every account".
    """
    return tuple(sorted({account for role in principal.roles for account in role.accounts}))


def default_account(principal: Principal, host: Host) -> str:
    """The first concrete account a granting role names for this host
    (recorded mode); the user's own name when none does."""
    for role in principal.roles:
        if evaluate(Principal(principal.user, (role,)), AccessRequest(host, Mode.RECORDED)).allowed:
            for account in role.accounts:
                if account != "*":
                    return account
    return principal.user


def _check(role: Role, request: AccessRequest) -> tuple[int, str]:
    """How far ``role`` got (0..3) and why it stopped; an empty reason means it grants."""
    host = request.host
    if not any(host_matches(selector, host) for selector in role.hosts):
        return 0, f"role {role.name} does not grant host {host.name}"
    if request.mode not in role.modes:
        return 1, f"role {role.name} does not allow {request.mode.value} mode on {host.name}"
    if request.account and request.account not in role.accounts and ANY not in role.accounts:
        return 2, f"role {role.name} does not allow account {request.account!r} on {host.name}"
    if role.max_gpus and request.gpus > role.max_gpus:
        return 3, (
            f"{request.gpus} GPUs requested, role {role.name} allows at most {role.max_gpus}"
        )
    return 4, ""
