"""``python -m client.tui [--gateway URL] [--token TOKEN]``: the TUI without the CLI group."""

from __future__ import annotations

import argparse
import sys

from client.tui import run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpuhop tui", description="The gpuhop terminal UI.")
    parser.add_argument("--gateway", help="API URL (default: GPUHOP_GATEWAY or the stored login)")
    parser.add_argument("--token", help="API token (default: GPUHOP_TOKEN or the stored login)")
    args = parser.parse_args(argv)
    return run(args.gateway, args.token)


if __name__ == "__main__":
    sys.exit(main())
