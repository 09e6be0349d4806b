"""Human durations for flags and config: ``90``, ``90s``, ``30m``, ``12h``, ``2d``."""

from __future__ import annotations

import re

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(text: str) -> float:
    """Seconds in ``text``; raises ValueError with a readable message."""
    match = _PATTERN.match(text.lower())
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 30m, 12h)")
    return float(match.group(1)) * _UNITS[match.group(2)]
