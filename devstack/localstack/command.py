"""The command line: `up`, `down` and `env` for a state folder."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from devstack.localstack.errors import StackError
from devstack.localstack.stack import _load, down, up


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="flowbill stack",
        description="The local PostgreSQL+TimescaleDB and Mosquitto under a state folder.",
    )
    parser.add_argument("action", choices=["up", "down", "env"])
    parser.add_argument("--dir", default=".state", help="the state folder (default: .state)")
    args = parser.parse_args(argv)
    root = Path(args.dir).resolve()
    try:
        if args.action == "down":
            down(root)
            return 0
        stack = up(root) if args.action == "up" else _load(root)
    except (StackError, subprocess.SubprocessError, OSError) as exc:
        print(f"flowbill stack {args.action}: {exc}", file=sys.stderr)
        return 1
    if stack is None:
        print(f"no stack in {root}; run `flowbill stack up --dir {args.dir}`", file=sys.stderr)
        return 1
    for key, value in stack.environment().items():
        print(f"export {key}={value}")
    return 0
