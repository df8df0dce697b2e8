"""`python -m testbed.sim [--seeds 20] [--only outage] [--param beta=0.9 ...]`: the control loop's
targets in simulated time, per seed, with the worst case and whether it meets the bound."""
from __future__ import annotations

import argparse
import sys
import time

from testbed.sim.targets import evaluate, with_controller


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m testbed.sim", description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--only", default=None, help="targets whose name contains this")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="a CubicRateController argument to try instead of its default (repeatable)")
    args = p.parse_args(argv)
    params = {k: float(v) for k, v in (item.split("=", 1) for item in args.param)}
    started = time.monotonic()
    results = evaluate(range(args.seeds), args.only, with_controller(**params) if params else None)
    failed = 0
    for target, values in results:
        met = all(target.ok(v) for v in values)
        failed += not met
        known = [v for v in values if v is not None]
        worst = (max(known) if "<=" in target.bound else min(known)) if len(known) == len(values) else None
        print(f"{'met   ' if met else 'MISSED'} {target.name:58s} {target.bound:24s} worst {_fmt(worst):>8s}  "
              f"seeds: {' '.join(_fmt(v) for v in values)}")
    print(f"{len(results) - failed}/{len(results)} targets met over {args.seeds} seeds "
          f"({time.monotonic() - started:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
