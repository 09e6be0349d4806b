"""Residency: a data set is processed only in the regions or countries it declares."""

from __future__ import annotations

import pytest

from gateway.domain.models import Decision, Host
from gateway.domain.policy.residency import (
    DataSet,
    check_named_residency,
    check_residency,
    host_places,
)

SG1 = Host("sg-1", "sg", "10.0.0.1", residency=("SG",))
SG2 = Host("sg-2", "sg", "10.0.0.2", residency=("SG", "sg"))
MY1 = Host("my-1", "my", "10.0.0.3", residency=("MY",))
AE1 = Host("ae-1", "ae", "10.0.0.4", residency=("AE",))
BARE = Host("x-1", "x", "10.0.0.5")  # no residency tags: only its region counts
TWIN = Host("my-2", "my", "10.0.0.6", residency=("MY", "SG"))  # declared to count as SG too

SG_ONLY = DataSet("scans", countries=("SG",))
SG_REGION = DataSet("scans", regions=("sg",))
SG_OR_MY = DataSet("genomes", regions=("my",), countries=("SG",))
NOWHERE = DataSet("secret")


@pytest.mark.parametrize(
    ("dataset", "host", "allowed", "reason"),
    [
        (
            SG_ONLY,
            SG1,
            True,
            "data set scans may be processed in SG; host sg-1 in region sg (SG) is there",
        ),
        (
            SG_ONLY,
            MY1,
            False,
            "data set scans may be processed only in SG; host my-1 in region my (MY) is outside",
        ),
        (
            SG_ONLY,
            AE1,
            False,
            "data set scans may be processed only in SG; host ae-1 in region ae (AE) is outside",
        ),
        (
            SG_REGION,
            SG1,
            True,
            "data set scans may be processed in sg; host sg-1 in region sg (SG) is there",
        ),
        (
            SG_REGION,
            SG2,
            True,
            "data set scans may be processed in sg; host sg-2 in region sg (SG) is there",
        ),
        (
            SG_REGION,
            MY1,
            False,
            "data set scans may be processed only in sg; host my-1 in region my (MY) is outside",
        ),
        (
            SG_OR_MY,
            MY1,
            True,
            "data set genomes may be processed in my; host my-1 in region my (MY) is there",
        ),
        (
            SG_OR_MY,
            SG1,
            True,
            "data set genomes may be processed in SG; host sg-1 in region sg (SG) is there",
        ),
        (
            SG_OR_MY,
            AE1,
            False,
            "data set genomes may be processed only in my, SG; "
            "host ae-1 in region ae (AE) is outside",
        ),
        (
            SG_ONLY,
            BARE,
            False,
            "data set scans may be processed only in SG; host x-1 in region x is outside",
        ),
        (
            SG_ONLY,
            TWIN,
            True,
            "data set scans may be processed in SG; host my-2 in region my (MY, SG) is there",
        ),
        (
            NOWHERE,
            SG1,
            False,
            "data set secret declares no region or country it may be processed in; it is refused "
            "everywhere",
        ),
        (
            DataSet("lower", countries=("sg",)),
            SG1,
            True,
            "data set lower may be processed in sg; host sg-1 in region sg (SG) is there",
        ),  # "sg" is a region name: it matches the region, not the country
    ],
)
def test_check_residency(dataset: DataSet, host: Host, allowed: bool, reason: str) -> None:
    assert check_residency(dataset, host) == Decision(allowed, reason)


def test_host_places_are_region_then_tags_without_repeats() -> None:
    assert host_places(SG2) == ("sg", "SG")
    assert host_places(TWIN) == ("my", "MY", "SG")
    assert host_places(BARE) == ("x",)


DATASETS = {"scans": SG_ONLY, "genomes": SG_OR_MY}


@pytest.mark.parametrize(
    ("name", "host", "allowed", "reason"),
    [
        (None, AE1, True, "no data set named"),
        ("", AE1, True, "no data set named"),
        (
            "scans",
            SG1,
            True,
            "data set scans may be processed in SG; host sg-1 in region sg (SG) is there",
        ),
        (
            "scans",
            AE1,
            False,
            "data set scans may be processed only in SG; host ae-1 in region ae (AE) is outside",
        ),
        ("scan", SG1, False, "unknown data set 'scan' (declared: genomes, scans); refused"),
    ],
)
def test_check_named_residency(name: str | None, host: Host, allowed: bool, reason: str) -> None:
    assert check_named_residency(name, DATASETS, host) == Decision(allowed, reason)


def test_unknown_name_with_no_datasets_declared() -> None:
    assert check_named_residency("x", {}, SG1) == Decision(False, "unknown data set 'x'; refused")
