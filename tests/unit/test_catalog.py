"""The price catalogue: parsing, one-line errors with file:line:column, and lookups."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.loader import load_settings
from gateway.domain.inventory.catalog import (
    COLUMNS,
    PriceCatalog,
    PriceRow,
    load_catalog,
    parse_catalog,
)
from gateway.domain.models import Host
from gateway.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
HEADER = ",".join(COLUMNS)


def catalog(*rows: str, header: str = HEADER) -> PriceCatalog:
    return parse_catalog("\n".join([header, *rows]) + "\n", "prices.csv")


def test_parses_rows_in_file_order() -> None:
    c = catalog(
        "sg,sg-1,NVIDIA H100 80GB HBM3,2.79,1.40,0.09,USD",
        "my,,H100,2.49,,0.08,USD",
    )
    assert c.rows == (
        PriceRow("sg", "sg-1", "NVIDIA H100 80GB HBM3", 2.79, 1.40, 0.09, "USD", "prices.csv:2"),
        PriceRow("my", "", "H100", 2.49, None, 0.08, "USD", "prices.csv:3"),
    )
    assert c.rows[1].per_gpu_hour(spot=True) is None
    assert c.rows[0].per_gpu_hour(spot=True) == 1.40


def test_columns_in_any_order_comments_blanks_and_quotes() -> None:
    text = (
        "# prices\n\n"
        "currency,egress_per_gb,spot_per_gpu_hour,on_demand_per_gpu_hour,gpu_model,host,region\n"
        '  # indented comment\nUSD,0.1,,3,"NVIDIA ""Big"", GPU",,ae\n'
    )
    (row,) = parse_catalog(text).rows
    assert (row.gpu_model, row.region, row.on_demand_per_gpu_hour) == ('NVIDIA "Big", GPU', "ae", 3)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "prices.csv:1:1: no header row"),
        ("# only a comment\n", "prices.csv:1:1: no header row"),
        (
            "region,host,gpu_model,on_demand_per_gpu_hour,spot_per_gpu_hour,egress_per_gb\n",
            "prices.csv:1:1: missing column(s): currency",
        ),
        (HEADER + ",colour\n", f"prices.csv:1:{len(HEADER) + 2}: unknown column 'colour'"),
        (HEADER + ",host\n", f"prices.csv:1:{len(HEADER) + 2}: column host appears twice"),
        (f"{HEADER}\nsg,sg-1,H100,2.5,,0.09\n", "prices.csv:2:23: expected 7 fields, found 6"),
        (
            f"{HEADER}\nsg,sg-1,H100,2.5,,0.09,USD,x\n",
            "prices.csv:2:28: expected 7 fields, found 8",
        ),
        (
            f"{HEADER}\nsg,sg-1,H100,abc,,0.09,USD\n",
            "prices.csv:2:14: on_demand_per_gpu_hour: 'abc' is not a non-negative decimal price",
        ),
        (
            f"{HEADER}\nsg,sg-1,H100,-1,,0.09,USD\n",
            "prices.csv:2:14: on_demand_per_gpu_hour: '-1' is not a non-negative",
        ),
        (
            f"{HEADER}\nsg,sg-1,H100,1e3,,0.09,USD\n",
            "prices.csv:2:14: on_demand_per_gpu_hour: '1e3' is not",
        ),
        (
            f"{HEADER}\nsg,sg-1,H100,nan,,0.09,USD\n",
            "prices.csv:2:14: on_demand_per_gpu_hour: 'nan' is not",
        ),
        (
            f"{HEADER}\nsg,sg-1,H100,,,0.09,USD\n",
            "prices.csv:2:14: on_demand_per_gpu_hour: a price is required",
        ),
        (
            f"{HEADER}\nsg,sg-1,H100,2,x,0.09,USD\n",
            "prices.csv:2:16: spot_per_gpu_hour: 'x' is not",
        ),
        (
            f"{HEADER}\nsg,sg-1,H100,2,1,,USD\n",
            "prices.csv:2:18: egress_per_gb: a price is required",
        ),
        (f"{HEADER}\nsg,sg-1,H100,2,1,0.1,usd\n", "prices.csv:2:22: currency: 'usd' is not"),
        (f"{HEADER}\nsg,sg-1,H100,2,1,0.1,\n", "prices.csv:2:22: currency: a currency is"),
        (f"{HEADER}\nSG,,H100,2,1,0.1,USD\n", "prices.csv:2:1: region: 'SG' is not a region"),
        (f"{HEADER}\nsg,Sg_1,H100,2,1,0.1,USD\n", "prices.csv:2:4: host: 'Sg_1' is not a host"),
        (
            f"{HEADER}\n,,H100,2,1,0.1,USD\n",
            "prices.csv:2:2: host: a row without a host needs both region and gpu_model",
        ),
        (
            f"{HEADER}\nsg,,,2,1,0.1,USD\n",
            "prices.csv:2:5: gpu_model: a row without a host needs both region and gpu_model",
        ),
        (f'{HEADER}\nsg,"sg-1,H100,2,1,0.1,USD\n', "prices.csv:2:4: unterminated quoted field"),
        (f'{HEADER}\nsg,"sg-1"x,H100,2,1,0.1,USD\n', "prices.csv:2:10: expected ','"),
        (
            f"{HEADER}\nsg,sg-1,H100,2,1,0.1,USD\nsg,sg-1,A100,2,1,0.1,USD\n",
            "prices.csv:3:1: host sg-1 is already priced at prices.csv:2",
        ),
        (
            f"{HEADER}\nsg,,H100,2,1,0.1,USD\nsg,,h100,3,1,0.1,USD\n",
            "prices.csv:3:1: region sg / h100 is already priced at prices.csv:2",
        ),
    ],
)
def test_errors_name_file_line_and_column(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_catalog(text, "prices.csv")
    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)


SG_H100 = Host("sg-1", "sg", "10.0.0.1", gpu_model="NVIDIA H100 80GB HBM3", gpu_count=8)


@pytest.mark.parametrize(
    ("rows", "host", "region", "model", "expected_line"),
    [
        (("sg,,H100,1,,0,USD", "sg,sg-1,H100,2,,0,USD"), "sg-1", "sg", "H100", 3),  # host wins
        (("sg,,H100,1,,0,USD",), "sg-9", "sg", "NVIDIA H100 80GB HBM3", 2),
        (("my,,H100,1,,0,USD",), "sg-9", "sg", "NVIDIA H100 80GB HBM3", None),
        (("sg,,A100,1,,0,USD",), "sg-9", "sg", "NVIDIA H100 80GB HBM3", None),
        (
            ("sg,,H100,1,,0,USD", "sg,,NVIDIA H100 80GB HBM3,2,,0,USD"),
            "sg-9",
            "sg",
            "NVIDIA H100 80GB HBM3",
            3,
        ),  # exact spelling wins
        (
            ("sg,,H100,1,,0,USD", "sg,,H100 HBM3,2,,0,USD", "sg,,H100 80GB,3,,0,USD"),
            "sg-9",
            "sg",
            "NVIDIA H100 80GB HBM3",
            3,
        ),  # most specific, first of equals
        (("sg,,H100,1,,0,USD",), "sg-9", "", "H100", None),
        (("sg,,H100,1,,0,USD",), "sg-9", "sg", "", None),
    ],
)
def test_lookup(
    rows: tuple[str, ...], host: str, region: str, model: str, expected_line: int | None
) -> None:
    found = catalog(*rows).lookup(host, region, model)
    assert (found.where if found else None) == (
        f"prices.csv:{expected_line}" if expected_line else None
    )


def test_for_host_and_problems() -> None:
    c = catalog(
        "sg,,H100,2.5,,0.09,USD",
        "my,sg-1,,9,,0,USD",
        ",ghost-1,,1,,0,USD",
        "zz,,L4,1,,0,USD",
    )
    assert c.for_host(SG_H100) == c.rows[1]
    assert c.problems((SG_H100,), ("sg", "my")) == (
        "prices.csv:3: host sg-1 is in region sg, not my",
        "prices.csv:4: host 'ghost-1' is not in the inventory",
        "prices.csv:5: region 'zz' is not in the inventory",
    )


def test_example_catalogue_prices_every_example_host() -> None:
    c = load_catalog(EXAMPLES / "prices.csv")
    inventory = load_settings(EXAMPLES / "gateway.toml").inventory()
    for host in inventory.hosts:
        assert c.for_host(host) is not None, host.name
    assert c.problems(inventory.hosts, tuple(r.name for r in inventory.regions)) == ()


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read price catalogue"):
        load_catalog(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text(f"{HEADER}\nsg,,H100,x,,0,USD\n")
    with pytest.raises(ConfigError, match=rf"^{bad}:2:10: on_demand_per_gpu_hour"):
        load_catalog(bad)
