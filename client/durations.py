"""Human durations, the one grammar of the client's and the gateway's flags and settings.

A plain number of seconds (``90``, ``1.5``) or unit terms written together
(``250ms``, ``90s``, ``30m``, ``1h30m``, ``2d``; a space may sit between a
number and its unit, not between terms). Case and surrounding spaces do not
matter. Pure and stdlib-only, so the gateway uses it too (the gateway may use
the client's modules; the client never imports the gateway).
"""

from __future__ import annotations

import math
import re

_TERM = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds in ``text``; ValueError with a one-line message if it is not a duration.

    >>> parse_duration("30m"), parse_duration("1h30m"), parse_duration("90"), parse_duration("1.5s")
    (1800.0, 5400.0, 90.0, 1.5)
    """
    raw = text.strip().lower()
    try:
        value = float(raw)
    except ValueError:
        return _terms(raw, text)
    if value < 0 or not math.isfinite(value):
        raise ValueError(f"not a duration: {text!r}")
    return value


def _terms(raw: str, text: str) -> float:
    pos, total = 0, 0.0
    for match in _TERM.finditer(raw):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(raw) or not raw:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 30m, 1h30m)")
    return total
