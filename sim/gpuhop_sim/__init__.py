"""Simulated regional GPU hosts on loopback, for the demo, tests and benchmarks.

Real processes stand in for each region: an OpenSSH ``sshd`` per host
(``SshdHost``; ``EmbeddedHost`` on asyncssh where sshd is missing, chosen by
``make_host``), a fake ``nvidia-smi`` on its PATH (state in ``gpustate``), and a
``DelayProxy`` in front that adds the region's round-trip time. Nothing here
sends a byte off the machine: every address is checked to be loopback.

    with make_host("sg-1", tmp / "sg-1", gpus=2, user_ca_pub=ca) as host, \\
            ThreadedDelayProxy("127.0.0.1", host.port, rtt_ms=40) as link:
        ...  # ssh -p link.port root@127.0.0.1 nvidia-smi -L
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gpuhop_sim.delayproxy import DelayProxy, ThreadedDelayProxy
from gpuhop_sim.gpustate import FakeGpu, FakeProcess, default_gpus, read_state, write_state
from gpuhop_sim.host import SimHost, SimHostError
from gpuhop_sim.sshd import SshdHost, sshd_path

if TYPE_CHECKING:
    from gpuhop_sim.embedded import EmbeddedHost, make_host

__all__ = [
    "DelayProxy",
    "EmbeddedHost",
    "FakeGpu",
    "FakeProcess",
    "SimHost",
    "SimHostError",
    "SshdHost",
    "ThreadedDelayProxy",
    "default_gpus",
    "make_host",
    "read_state",
    "sshd_path",
    "write_state",
]


def __getattr__(name: str) -> Any:
    # asyncssh costs ~150 ms to import; only the embedded fallback needs it.
    if name in ("EmbeddedHost", "make_host"):
        from gpuhop_sim import embedded

        return getattr(embedded, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
