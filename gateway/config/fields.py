"""Field types and checks shared by the config models: one-line errors naming the value.

A config mistake must stop start-up with one line naming the file, the key and the
problem; these annotated types carry that check with them wherever a model uses them.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, NoReturn

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from gateway.domain.inventory.keys import parse_public_key
from gateway.domain.policy.forwards import parse_port_spec
from gateway.errors import KeyMaterialError

SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
ACCOUNT = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
COUNTRY = re.compile(r"[A-Z]{2}")
ADDRESS = re.compile(r"[A-Za-z0-9._:%-]+")
LABEL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,62}")


def _matching(pattern: re.Pattern[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"{value!r} is not {what}")
        return value

    return AfterValidator(check)


def not_bool(value: object) -> object:
    # pydantic's lax mode reads true as 1; a boolean where a number belongs is a typo.
    if isinstance(value, bool):
        raise ValueError("expected a number, not true/false")
    return value


def _key_line(value: str) -> str:
    try:
        parse_public_key(value)
    except KeyMaterialError as exc:
        raise ValueError(f"not an OpenSSH public key line: {exc}") from None
    return value.strip()


def _network(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address or CIDR network") from None


def _account(value: str) -> str:
    if value != "*" and not ACCOUNT.fullmatch(value):
        raise ValueError(f"{value!r} is not an account name (or '*')")
    return value


def _selector(value: str) -> str:
    kind, sep, rest = value.partition(":")
    ok = value == "*" or (not sep and SLUG.fullmatch(value) is not None)
    if kind in ("name", "region"):
        ok = SLUG.fullmatch(rest) is not None
    elif kind == "label":
        key, eq, _ = rest.partition("=")
        ok = bool(eq) and LABEL_KEY.fullmatch(key) is not None
    if not ok:
        raise ValueError(
            f"{value!r} is not a host selector "
            "('*', 'name:HOST', 'region:REGION', 'label:KEY=VALUE' or a host name)"
        )
    return value


Slug = Annotated[str, _matching(SLUG, "a slug (lower-case letters, digits, '-'), e.g. sg-a100-1")]
Name = Annotated[str, _matching(NAME, "a name (letters, digits, '.', '_', '-')")]
Country = Annotated[str, _matching(COUNTRY, "an upper-case ISO 3166 alpha-2 code, e.g. SG")]
Account = Annotated[str, AfterValidator(_account)]
Address = Annotated[str, _matching(ADDRESS, "a host name or IP address")]
LabelKey = Annotated[str, _matching(LABEL_KEY, "a label key (letters, digits, '.', '_', '/', '-')")]
KeyLine = Annotated[str, AfterValidator(_key_line)]
Selector = Annotated[str, AfterValidator(_selector)]


def _forward_port(value: object) -> object:
    low, high = parse_port_spec(value)  # one-line ValueError for anything else
    return low if isinstance(value, int) else (str(low) if low == high else f"{low}-{high}")


ForwardPort = Annotated[int | str, BeforeValidator(_forward_port)]


Network = Annotated[str, AfterValidator(_network)]
Residency = Annotated[
    str,
    _matching(re.compile(f"{COUNTRY.pattern}|{SLUG.pattern}"), "a country code or region name"),
]
Int = Annotated[int, BeforeValidator(not_bool)]
Count = Annotated[Int, Field(ge=0)]
Port = Annotated[Int, Field(ge=1, le=65535)]
ListenPort = Annotated[Int, Field(ge=0, le=65535)]
Price = Annotated[float, BeforeValidator(not_bool), Field(ge=0, allow_inf_nan=False)]
Seconds = Annotated[float, BeforeValidator(not_bool), Field(ge=0, allow_inf_nan=False)]
PositiveSeconds = Annotated[float, BeforeValidator(not_bool), Field(gt=0, allow_inf_nan=False)]


def fail(key: str, problem: str) -> NoReturn:
    """Raise a validation error for ``key`` (relative to the model being checked)."""
    raise PydanticCustomError("gpuhop_config", "{problem}", {"key": key, "problem": problem})


MODEL = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)
