"""`python -m testbed up|down|status`: the detached cluster behind `make cluster-up`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from testbed.cluster import ClusterError, LocalCluster, detached_pids, stop_detached
from testbed.testbin import REPO_ROOT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed")
    parser.add_argument("command", choices=["up", "down", "status", "build"])
    parser.add_argument(
        "--dir", type=Path, default=REPO_ROOT / ".cache" / "cluster", help="cluster folder"
    )
    args = parser.parse_args(argv)
    workdir: Path = args.dir.resolve()

    if args.command == "build":
        from testbed.testbin import ensure_built

        print(ensure_built())
        return 0
    if args.command == "status":
        pids = detached_pids(workdir)
        print(f"running ({len(pids)} processes)" if pids else "not running")
        return 0 if pids else 1
    if args.command == "down":
        stopped = stop_detached(workdir)
        print(f"stopped {stopped} processes" if stopped else "no cluster was running")
        return 0

    if detached_pids(workdir):
        print(f"already running; kubeconfig: {workdir / 'kubeconfig'}")
        return 0
    cluster = LocalCluster(workdir, attached=False)
    try:
        cluster.start()
    except ClusterError as error:
        print(f"cluster-up failed: {error}", file=sys.stderr)
        print(f"component logs: {workdir / 'logs'}", file=sys.stderr)
        return 1
    print(f"cluster up in {cluster.startup_seconds:.1f}s at {cluster.server}")
    print(f"kubeconfig: {cluster.kubeconfig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
