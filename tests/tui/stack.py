"""A real gateway with simulated hosts for the TUI's Pilot tests.

Three OpenSSH hosts behind delay proxies (5, 40 and 120 ms), a real
``gpuhop-gateway serve`` subprocess, a data set resident in ``sg``, and API
tokens made the way an operator makes them (``gateway.cli token create``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from gpuhop_sim.delayproxy import ThreadedDelayProxy
from tests.integration.gwstack import GatewayStack

INJECTED = {"sg-1": 5.0, "my-1": 40.0, "ae-1": 120.0}
ROLES = """
[[roles]]
name = "rec"
hosts = ["*"]
accounts = ["root"]
modes = ["recorded"]
max_gpus = 4

[[datasets]]
name = "sg-patients"
regions = ["sg"]
"""


@dataclass
class TuiStack:
    gw: GatewayStack
    admin_token: str
    user_token: str
    proxies: dict[str, ThreadedDelayProxy] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.gw.api_port}"

    @property
    def ssh_config(self) -> Path:
        return self.gw.ssh_config(self.gw.users["rita"])

    def ssh_env(self) -> dict[str, str]:
        """What the TUI needs to open shells through this gateway with plain ssh."""
        return {"GPUHOP_SSH_CONFIG": str(self.ssh_config), "GPUHOP_SSH_GATEWAY": "gw"}

    def ssh(self, host: str, command: str, *, tty: bool = False, gpus: int = 0) -> list[str]:
        opts = [f"-oSetEnv=GPUHOP_GPUS={gpus}"] if gpus else []
        mode = "-tt" if tty else "-T"
        return ["ssh", "-F", str(self.ssh_config), *opts, mode, f"rita+{host}@gw", command]

    def close(self) -> None:
        try:
            self.gw.close()
        finally:
            for proxy in self.proxies.values():
                proxy.stop()


def token(gw: GatewayStack, user: str, scope: str) -> str:
    cmd = [sys.executable, "-m", "gateway.cli", "token", "create", "--config", str(gw.config)]
    cmd += ["--user", user, "--scope", scope]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip()


def start_stack(root: Path) -> TuiStack:
    gw = GatewayStack(root)
    gw.ca()
    proxies: dict[str, ThreadedDelayProxy] = {}
    try:
        for name, rtt in INJECTED.items():
            host = gw.add_host(name)
            proxy = ThreadedDelayProxy("127.0.0.1", host.port, rtt).start()
            proxies[name] = proxy
            gw.host_addresses[name] = ("127.0.0.1", proxy.port)
        gw.add_user("rita")
        gw.write_config(ROLES, {"rita": ["rec"]})
        gw.start_gateway()
        return TuiStack(gw, token(gw, "rita", "admin"), token(gw, "rita", "user"), proxies)
    except BaseException:
        gw.close()
        for proxy in proxies.values():
            proxy.stop()
        raise


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def env_with(**extra: str) -> dict[str, str]:
    return {**os.environ, **extra}
