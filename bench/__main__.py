"""Run the benchmarks and print one table each.

Every benchmark module under ``bench/`` exposes ``run(scale: float) -> Table``; a
``Table`` is measured rows printed as aligned columns. ``--scale`` shrinks the workloads
(0.1 for a quick look); the numbers reported in issues use the default of 1.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from pathlib import Path

from bench.table import Table

HERE = Path(__file__).parent


def available() -> list[str]:
    return sorted(
        info.name for info in pkgutil.iter_modules([str(HERE)]) if info.name.startswith("bench_")
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "names", nargs="*", help=f"which to run (default all): {', '.join(available())}"
    )
    parser.add_argument("--scale", type=float, default=1.0, help="workload size factor (default 1)")
    args = parser.parse_args()
    for name in args.names or available():
        module = importlib.import_module(
            f"bench.{name if name.startswith('bench_') else 'bench_' + name}"
        )
        table: Table = module.run(args.scale)
        print(table.render())
        print()


if __name__ == "__main__":
    main()
