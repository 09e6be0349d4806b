"""How numbers look in the TUI: latency, money, durations, sparklines. Pure functions."""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Iterable, Sequence

BLOCKS = "▁▂▃▄▅▆▇█"
DASH = "—"


def sparkline(values: Sequence[float | None], width: int = 8) -> str:
    """The last ``width`` values as block characters scaled to their own range.

    A missed probe (``None``) is a gap (``·``) so a flapping host is visible.

    >>> sparkline([10, 20, 30, None, 40])
    '▁▃▆·█'
    """
    tail = list(values)[-width:]
    known = [v for v in tail if v is not None]
    if not known:
        return "·" * len(tail)
    low, high = min(known), max(known)
    span = high - low
    out = []
    for v in tail:
        if v is None:
            out.append("·")
        elif span <= 0:
            out.append(BLOCKS[0])
        else:
            out.append(BLOCKS[min(len(BLOCKS) - 1, int((v - low) / span * len(BLOCKS)))])
    return "".join(out)


def ms(value: float | None) -> str:
    """``47 ms``; one decimal below 10 ms, where loopback figures live."""
    if value is None:
        return DASH
    if value < 10:
        return f"{value:.1f} ms"
    return f"{value:.0f} ms"


def money(value: float | None, currency: str = "$") -> str:
    if value is None:
        return DASH
    if value < 0.01 and value != 0:
        return f"{currency}{value:.4f}"
    return f"{currency}{value:.2f}"


def cost(value: float | None) -> str:
    """Accrued cost: cents matter on a short session, so four decimals below $1."""
    if value is None:
        return DASH
    return f"${value:.4f}" if value < 1 else f"${value:.2f}"


def pct(value: float | None) -> str:
    return DASH if value is None else f"{value:.0f}%"


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def gpu_short(model: str) -> str:
    """``NVIDIA A100-SXM4-80GB`` -> ``A100-SXM4-80GB``: the vendor is the same everywhere."""
    for prefix in ("NVIDIA ", "Tesla "):
        if model.startswith(prefix):
            model = model[len(prefix) :]
    return model


def size(n: float) -> str:
    """Bytes for people: ``1.5 MiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n:.0f} B"


ENV_STATE_STYLE = {"in sync": "green", "drift": "yellow", "missing": "red", "error": "dim"}


def env_state(state: str) -> str:
    """An environment's state on a host as coloured markup: ``[green]in sync[/green]``."""
    style = ENV_STATE_STYLE.get(state, "dim")
    return f"[{style}]{state}[/{style}]"


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


class RttWindow:
    """The client's own round trips to the gateway; the median resists one slow poll."""

    def __init__(self, size: int = 5) -> None:
        self._samples: deque[float] = deque(maxlen=size)

    def add(self, sample_ms: float) -> None:
        self._samples.append(sample_ms)

    def extend(self, samples: Iterable[float]) -> None:
        self._samples.extend(samples)

    @property
    def value(self) -> float | None:
        return statistics.median(self._samples) if self._samples else None

    def __len__(self) -> int:
        return len(self._samples)


def end_to_end(client_rtt_ms: float | None, host_rtt_ms: float | None) -> float | None:
    """Client -> gateway -> host round trip; unknown when the host's is."""
    if host_rtt_ms is None:
        return None
    return host_rtt_ms + (client_rtt_ms or 0.0)
