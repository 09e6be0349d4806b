"""Where a job runs: the host asked for, or the best the gateway's ranking offers.

The gateway ranks (cost, latency, sync time, residency of the data set, policy);
the client only filters that ranking by region and takes its first entry, so
there is one placement policy, the gateway's.
"""

from __future__ import annotations

from client.api.clients import Client
from client.api.models import Constraints, HostView, Placement
from client.errors import HostNotFound

ANY_REGION = "any"


def place(api: Client, host: str, region: str, gpus: int, data: str = "") -> HostView:
    """``host`` (checked against the inventory), else the best-ranked host in ``region``
    (``any`` or empty: anywhere); ``HostNotFound`` says why none fits."""
    listing = {h.name: h for h in api.hosts()}
    if host:
        return _named(listing, host, gpus)
    ranking = api.placement(Constraints(gpus=max(gpus, 1), data=data))
    best = best_in_region(ranking, region)
    if best not in listing:
        raise HostNotFound(f"{best} is ranked but not in the inventory; try again")
    return listing[best]


def best_in_region(ranking: Placement, region: str) -> str:
    """The name of the first ranked host in ``region``; ``HostNotFound`` lists the reasons,
    or the known regions when ``region`` is none of them."""
    anywhere = region in ("", ANY_REGION)
    known = sorted({r.region for r in ranking.ranked} | {e.region for e in ranking.excluded})
    if not anywhere and region not in known:
        names = ", ".join(known) or "none"
        raise HostNotFound(f"unknown region {region} (known: {names}); no such hosts there")
    ranked = [r for r in ranking.ranked if anywhere or r.region == region]
    if ranked:
        return ranked[0].name
    excluded = [e for e in ranking.excluded if anywhere or e.region == region]
    where = "" if anywhere else f" in region {region}"
    why = "; ".join(f"{e.name}: {', '.join(e.reasons)}" for e in excluded) or "no such hosts"
    raise HostNotFound(f"no host qualifies{where} ({why})")


def _named(listing: dict[str, HostView], host: str, gpus: int) -> HostView:
    found = listing.get(host)
    if found is None:
        raise HostNotFound(f"unknown host {host}; `gpuhop hosts` lists them")
    if gpus and found.gpus_free < gpus:
        raise HostNotFound(f"{host} has {found.gpus_free} free GPUs; {gpus} asked")
    return found
