"""What passthrough may do, decided so that the host itself can hold to it.

In passthrough the user's SSH session runs end to end inside a forwarded
channel: the gateway sees neither the remote account nor which GPUs or data
the session uses. So each promise is moved to where it can be kept:

* **accounts**: the user's certificate carries ``ACCOUNT@HOST`` principals for
  exactly the (host, account) pairs a role grants in passthrough
  (:func:`host_principals`); the host maps logins to those names, so it refuses
  every other account. A role that allows any account (``*``) cannot be written
  as principals and grants no passthrough account.
* **agent forwarding**: the host, not the gateway, sees ``ssh -A`` in
  passthrough, and it reads ``permit-agent-forwarding`` from the certificate;
  one certificate carries every pair, so it permits agent forwarding only when
  every role granting one of them allows it (:func:`passthrough_agent_forwarding`).
* **GPUs**: a passthrough session may use every GPU on the host, so it *is* a
  request for all of them (:func:`passthrough_request`): a role capping GPUs
  below the host's count does not grant it, and the whole host is leased.
* **residency**: the gateway cannot see which data a passthrough session
  carries, so passthrough is refused on a host where any declared data set may
  not be processed (:func:`passthrough_residency`).

Budgets and metering apply as in recorded mode (the leased GPUs' price over
the session's time, bytes at the host's egress price). Pure: no I/O, no clock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from gateway.domain.models import AccessRequest, Decision, Host, Mode, Principal, Role
from gateway.domain.policy.residency import DataSet, check_residency
from gateway.domain.policy.rules import ANY, evaluate


def host_principal(account: str, host: str) -> str:
    """The certificate principal that opens ``account`` on ``host`` and nowhere else.

    Hosts map a login to it with ``AuthorizedPrincipalsCommand /bin/echo %u@HOST``
    (or an ``AuthorizedPrincipalsFile``), so a certificate names exactly the
    (host, account) pairs it may open; see docs/hosts.md.
    """
    return f"{account}@{host}"


def passthrough_request(host: Host) -> AccessRequest:
    """A passthrough session as policy sees it: every GPU of the host, account unseen."""
    return AccessRequest(host, Mode.PASSTHROUGH, gpus=host.gpu_count)


def passthrough_roles(principal: Principal, host: Host) -> tuple[Role, ...]:
    """The roles that on their own grant a passthrough account on ``host`` (a role
    allowing only ``*`` grants none: it cannot be written as principals)."""
    request = passthrough_request(host)
    return tuple(
        role
        for role in principal.roles
        if any(a and a != ANY for a in role.accounts)
        and evaluate(dataclasses.replace(principal, roles=(role,)), request).allowed
    )


def passthrough_accounts(principal: Principal, host: Host) -> tuple[str, ...]:
    """Accounts on ``host`` that some role grants in passthrough, sorted; never ``*``."""
    return tuple(
        sorted(
            {a for role in passthrough_roles(principal, host) for a in role.accounts} - {"", ANY}
        )
    )


def host_principals(principal: Principal, hosts: Iterable[Host]) -> tuple[str, ...]:
    """``ACCOUNT@HOST`` for every pair passthrough policy grants: a certificate's principals."""
    return tuple(
        sorted(
            host_principal(account, host.name)
            for host in hosts
            for account in passthrough_accounts(principal, host)
        )
    )


def passthrough_agent_forwarding(principal: Principal, hosts: Iterable[Host]) -> bool:
    """Whether a certificate with :func:`host_principals` may say ``permit-agent-forwarding``:
    only when some role grants a passthrough account and every such role allows it."""
    granting = [role for host in hosts for role in passthrough_roles(principal, host)]
    return bool(granting) and all(role.agent_forwarding for role in granting)


def passthrough_residency(host: Host, datasets: Mapping[str, DataSet]) -> Decision:
    """Refuse passthrough where any declared data set may not be processed."""
    for name in sorted(datasets):
        decision = check_residency(datasets[name], host)
        if not decision.allowed:
            return Decision(
                False,
                f"passthrough to {host.name} refused: data set {name} may not be processed "
                "there, and the gateway cannot see which data a passthrough session "
                "carries (use a recorded session with GPUHOP_DATA)",
            )
    return Decision(True, "no declared data set is restricted from this host")
