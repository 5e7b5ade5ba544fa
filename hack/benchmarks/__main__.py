"""`make bench`: every benchmark, or the ones named.

    PYTHONPATH=hack .venv/bin/python -m benchmarks [testbed] [registries] [access] [prune]

Each module also runs alone (`python -m benchmarks.<name> --help` for its options);
docs/benchmarks.md records the results with the exact commands.
"""

from __future__ import annotations

import importlib
import sys

ALL = ("testbed", "registries", "access", "prune")


def main() -> None:
    names = sys.argv[1:] or list(ALL)
    unknown = [name for name in names if name not in ALL]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; choose from {', '.join(ALL)}")
    for name in names:
        print(f"== {name}", flush=True)
        module = importlib.import_module(f"benchmarks.{name}")
        sys.argv = [f"benchmarks.{name}"]
        module.main()


if __name__ == "__main__":
    main()
