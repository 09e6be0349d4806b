"""The price catalogue: GPU-hour and egress prices per host or per region and GPU model.

A CSV file with a header row naming these seven columns, in any order::

    region                  region name (``sg``); needed when ``host`` is empty
    host                    host name (``sg-a100-1``); empty = every host of that
                            region with that GPU model
    gpu_model               GPU model, short (``H100``) or as nvidia-smi names it;
                            needed when ``host`` is empty
    on_demand_per_gpu_hour  price of one GPU for one hour, on demand
    spot_per_gpu_hour       the same on spot/preemptible capacity; empty = none offered
    egress_per_gb           price of one GB (10^9 bytes) leaving the region
    currency                ISO 4217 code, e.g. ``USD``

Blank lines and lines starting with ``#`` are skipped; a field may be quoted
(``"…"``, ``""`` for a quote) but may not span lines. Prices are non-negative
decimals. A row for a host wins over a row for its region and GPU model; among
region rows, the one whose model is spelled exactly like the host's wins,
else the most specific one that matches (``gpu_model_matches``), else the
first in the file.

Parsing is pure; ``load_catalog`` reads the file once at start-up. Every
mistake is a ``ConfigError`` of one line: ``file:line:column: problem``, the
column counted in characters from 1.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from gateway.domain.inventory.gpus import gpu_model_matches, model_tokens
from gateway.domain.models import Host
from gateway.errors import ConfigError

COLUMNS = (
    "region",
    "host",
    "gpu_model",
    "on_demand_per_gpu_hour",
    "spot_per_gpu_hour",
    "egress_per_gb",
    "currency",
)
_SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_CURRENCY = re.compile(r"[A-Z]{3}")
_DECIMAL = re.compile(r"\d+(?:\.\d+)?|\.\d+")


@dataclass(frozen=True, slots=True)
class PriceRow:
    """One catalogue row; ``where`` is ``file:line`` for messages."""

    region: str
    host: str
    gpu_model: str
    on_demand_per_gpu_hour: float
    spot_per_gpu_hour: float | None
    egress_per_gb: float
    currency: str
    where: str = ""

    def per_gpu_hour(self, spot: bool = False) -> float | None:
        """The on-demand price, or the spot price (None when no spot is offered)."""
        return self.spot_per_gpu_hour if spot else self.on_demand_per_gpu_hour


@dataclass(frozen=True, slots=True)
class PriceCatalog:
    """All rows, in file order."""

    rows: tuple[PriceRow, ...] = ()

    def lookup(self, host: str, region: str = "", gpu_model: str = "") -> PriceRow | None:
        """The row for ``host`` if there is one, else for ``region`` + ``gpu_model``."""
        for row in self.rows:
            if row.host and row.host == host:
                return row
        if not region or not gpu_model:
            return None
        regional = [r for r in self.rows if not r.host and r.region == region]
        exact = model_tokens(gpu_model)
        for row in regional:
            if model_tokens(row.gpu_model) == exact:
                return row
        matching = [r for r in regional if gpu_model_matches(r.gpu_model, gpu_model)]
        if not matching:
            return None
        return max(matching, key=lambda r: len(model_tokens(r.gpu_model)))  # first of the best

    def for_host(self, host: Host) -> PriceRow | None:
        """The row that prices ``host``."""
        return self.lookup(host.name, host.region, host.gpu_model)

    def problems(self, hosts: tuple[Host, ...], regions: tuple[str, ...]) -> tuple[str, ...]:
        """Rows naming hosts or regions the inventory does not declare, or disagreeing with it.

        Not an error by itself (a catalogue may cover more than one gateway);
        the caller decides whether to warn or refuse.
        """
        by_name = {h.name: h for h in hosts}
        found: list[str] = []
        for row in self.rows:
            known = by_name.get(row.host)
            if row.host and known is None:
                found.append(f"{row.where}: host {row.host!r} is not in the inventory")
            elif known is not None and row.region and row.region != known.region:
                found.append(
                    f"{row.where}: host {row.host} is in region {known.region}, not {row.region}"
                )
            elif row.region and row.region not in regions:
                found.append(f"{row.where}: region {row.region!r} is not in the inventory")
        return tuple(found)


def load_catalog(path: Path) -> PriceCatalog:
    """Read and parse a catalogue file (``ConfigError`` if unreadable or wrong)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read price catalogue: {exc}") from None
    return parse_catalog(text, str(path))


def parse_catalog(text: str, source: str = "prices.csv") -> PriceCatalog:
    """Parse catalogue text; ``source`` names it in error messages.

    >>> parse_catalog("host,region,gpu_model,on_demand_per_gpu_hour,spot_per_gpu_hour,"
    ...               "egress_per_gb,currency\\nsg-1,sg,H100,2.5,,0.09,USD\\n").rows[0].currency
    'USD'
    """
    header: dict[str, int] | None = None
    rows: list[PriceRow] = []
    seen: dict[tuple[str, ...], str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = _split(line, f"{source}:{number}")
        if header is None:
            header = _header(fields, f"{source}:{number}")
            continue
        row = _row(fields, header, source, number, len(line) + 1)
        key = (
            ("host", row.host) if row.host else ("model", row.region, *model_tokens(row.gpu_model))
        )
        if key in seen:
            what = f"host {row.host}" if row.host else f"region {row.region} / {row.gpu_model}"
            raise ConfigError(f"{source}:{number}:1: {what} is already priced at {seen[key]}")
        seen[key] = row.where
        rows.append(row)
    if header is None:
        raise ConfigError(f"{source}:1:1: no header row (expected: {','.join(COLUMNS)})")
    return PriceCatalog(tuple(rows))


def _split(line: str, where: str) -> list[tuple[str, int]]:
    """CSV fields of one line with the 1-based column each starts at."""
    fields: list[tuple[str, int]] = []
    i, n = 0, len(line)
    while True:
        start = i
        if i < n and line[i] == '"':
            value: list[str] = []
            i += 1
            while True:
                if i >= n:
                    raise ConfigError(f"{where}:{start + 1}: unterminated quoted field")
                if line[i] == '"':
                    if i + 1 < n and line[i + 1] == '"':
                        value.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                value.append(line[i])
                i += 1
            if i < n and line[i] != ",":
                raise ConfigError(f"{where}:{i + 1}: expected ',' after a quoted field")
            fields.append(("".join(value), start + 1))
        else:
            end = line.find(",", i)
            end = n if end < 0 else end
            fields.append((line[i:end].strip(), start + 1))
            i = end
        if i >= n:
            return fields
        i += 1  # the comma


def _header(fields: list[tuple[str, int]], where: str) -> dict[str, int]:
    columns: dict[str, int] = {}
    for position, (name, col) in enumerate(fields):
        key = name.strip().lower()
        if key not in COLUMNS:
            raise ConfigError(
                f"{where}:{col}: unknown column {name!r} (expected {', '.join(COLUMNS)})"
            )
        if key in columns:
            raise ConfigError(f"{where}:{col}: column {key} appears twice")
        columns[key] = position
    missing = [c for c in COLUMNS if c not in columns]
    if missing:
        raise ConfigError(f"{where}:1: missing column(s): {', '.join(missing)}")
    return columns


def _row(
    fields: list[tuple[str, int]], header: dict[str, int], source: str, number: int, end: int
) -> PriceRow:
    where = f"{source}:{number}"
    if len(fields) != len(header):
        # Point at the first extra field, or just past the end where one is missing.
        col = fields[len(header)][1] if len(fields) > len(header) else end
        raise ConfigError(f"{where}:{col}: expected {len(header)} fields, found {len(fields)}")

    def cell(name: str) -> tuple[str, str]:
        value, col = fields[header[name]]
        return value, f"{where}:{col}: {name}"

    def text(name: str, pattern: re.Pattern[str] | None, what: str) -> str:
        value, at = cell(name)
        if value and pattern is not None and not pattern.fullmatch(value):
            raise ConfigError(f"{at}: {value!r} is not {what}")
        return value

    def price(name: str) -> float | None:
        value, at = cell(name)
        if not value:
            return None
        if not _DECIMAL.fullmatch(value) or not math.isfinite(float(value)):
            raise ConfigError(f"{at}: {value!r} is not a non-negative decimal price")
        return float(value)

    def required_price(name: str) -> float:
        found = price(name)
        if found is None:
            raise ConfigError(f"{cell(name)[1]}: a price is required")
        return found

    region = text("region", _SLUG, "a region name")
    host = text("host", _SLUG, "a host name")
    gpu_model = text("gpu_model", None, "")
    if not host and not (region and gpu_model):
        _, at = cell("host" if not region else "gpu_model")
        raise ConfigError(f"{at}: a row without a host needs both region and gpu_model")
    currency = text("currency", _CURRENCY, "an ISO 4217 currency code such as USD")
    if not currency:
        raise ConfigError(f"{cell('currency')[1]}: a currency is required")
    return PriceRow(
        region=region,
        host=host,
        gpu_model=gpu_model,
        on_demand_per_gpu_hour=required_price("on_demand_per_gpu_hour"),
        spot_per_gpu_hour=price("spot_per_gpu_hour"),
        egress_per_gb=required_price("egress_per_gb"),
        currency=currency,
        where=where,
    )
