"""Data residency: a data set may be processed only where it is declared to be allowed.

A data set names the regions (``sg``) and/or countries (``SG``) where it may
be processed. A host is somewhere: its region, plus its residency tags from
the inventory (country codes or region names; by default its region's
country). The host may process the data set when any of those places is
among the data set's.

Deny is the default: a data set that declares no place, or a name the
gateway does not know, is refused everywhere. Pure: no I/O, no clock, so the
SSH front, the API and placement give the same answer with the same reason,
which the audit log stores verbatim.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gateway.domain.models import Decision, Host


@dataclass(frozen=True, slots=True)
class DataSet:
    """A named data set and where it may be processed."""

    name: str
    regions: tuple[str, ...] = ()  # region names, as the inventory spells them
    countries: tuple[str, ...] = ()  # ISO 3166 alpha-2, upper-case

    @property
    def places(self) -> tuple[str, ...]:
        """Regions then countries, as declared."""
        return (*self.regions, *self.countries)


def host_places(host: Host) -> tuple[str, ...]:
    """Where processing on ``host`` happens: its region and residency tags, unique, in order."""
    return tuple(dict.fromkeys((host.region, *host.residency)))


def check_residency(dataset: DataSet, host: Host) -> Decision:
    """May ``dataset`` be processed on ``host``? The reason names both sides.

    >>> check_residency(DataSet("scans", countries=("SG",)), Host("sg-1", "sg", "10.0.0.1",
    ...     residency=("SG",))).allowed
    True
    """
    allowed = dataset.places
    where = _describe(host)
    if not allowed:
        return Decision(
            False,
            f"data set {dataset.name} declares no region or country it may "
            "be processed in; it is refused everywhere",
        )
    matched = [place for place in host_places(host) if place in allowed]
    if matched:
        return Decision(
            True, f"data set {dataset.name} may be processed in {matched[0]}; {where} is there"
        )
    return Decision(
        False,
        f"data set {dataset.name} may be processed only in {_list(allowed)}; {where} is outside",
    )


def check_named_residency(
    name: str | None, datasets: Mapping[str, DataSet], host: Host
) -> Decision:
    """``check_residency`` for a data set named by a request (``--data NAME``).

    No name means no residency constraint; an unknown name is refused, since
    a typo must not lift a restriction.
    """
    if not name:
        return Decision(True, "no data set named")
    dataset = datasets.get(name)
    if dataset is None:
        known = f" (declared: {_list(sorted(datasets))})" if datasets else ""
        return Decision(False, f"unknown data set {name!r}{known}; refused")
    return check_residency(dataset, host)


def _describe(host: Host) -> str:
    tags = [t for t in host.residency if t != host.region]
    shown = f" ({', '.join(tags)})" if tags else ""
    return f"host {host.name} in region {host.region}{shown}"


def _list(items: tuple[str, ...] | list[str]) -> str:
    return ", ".join(items)
