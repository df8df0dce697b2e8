"""The shared CLI of the cached builds (`python -m testbed.flink_jobserver build`, `... prism build`)."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path


def build_main(prog: str, description: str, what: str, build: Callable[..., Path],
               error: type[Exception], argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m testbed.{prog}", description=description)
    sub = parser.add_subparsers(dest="command", required=True)
    build_cmd = sub.add_parser("build", help=f"build the {what} unless cached; print its path")
    build_cmd.add_argument("--force", action="store_true", help=f"rebuild even if the {what} exists")
    args = parser.parse_args(argv)
    try:
        print(build(force=args.force))
    except error as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 1
    return 0
