"""Test-bed benchmarks: cold build (in all and per binary), cached start with the real
node, memory of the running control plane and node.

PYTHONPATH=hack .venv/bin/python -m benchmarks.testbed [--cold] [--starts N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from testbed.cluster import LocalCluster
from testbed.testbin import BUILD_SCRIPT, ensure_built


def cold_build() -> tuple[float, dict[str, float]]:
    """hack/testbin/build.sh with empty Go module and build caches and an empty output
    cache: everything downloaded through the module proxy and compiled. The total, and
    the seconds from each "[testbin] building X" line to the next (downloads included)."""
    with tempfile.TemporaryDirectory(prefix="berth-cold-") as scratch:
        env = {
            **os.environ,
            "GOMODCACHE": f"{scratch}/gomod",
            "GOCACHE": f"{scratch}/gocache",
            "BERTH_TESTBIN_CACHE": f"{scratch}/testbin",
            "GOFLAGS": "-p=2 -modcacherw",
        }
        started = time.monotonic()
        steps: dict[str, float] = {}
        current, since = "", started
        build = subprocess.Popen(
            ["bash", str(BUILD_SCRIPT)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert build.stderr is not None
        for line in build.stderr:
            if line.startswith("[testbin] "):
                now = time.monotonic()
                if current:
                    steps[current] = now - since
                current, since = line.removeprefix("[testbin] ").strip(), now
        if build.wait() != 0:
            raise RuntimeError("hack/testbin/build.sh failed")
        return time.monotonic() - started, steps


def component_rss_mb(cluster: LocalCluster) -> dict[str, float]:
    sizes = {}
    pids = [(c.name, c.process.pid) for c in cluster.components if c.process is not None]
    if cluster.node is not None:
        pids += [(p.name, p.process.pid) for p in cluster.node.processes if p.process is not None]
    for name, pid in pids:
        status = Path(f"/proc/{pid}/status").read_text()
        rss_kb = next(
            int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")
        )
        sizes[name] = rss_kb / 1024
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cold", action="store_true", help="also time a cold build (minutes)")
    parser.add_argument("--starts", type=int, default=5)
    args = parser.parse_args()

    started = time.monotonic()
    binaries = ensure_built()
    print(f"cached build (no-op): {time.monotonic() - started:.2f}s")
    if args.cold:
        total, steps = cold_build()
        print(f"cold build: {total:.0f}s")
        for step, seconds in steps.items():
            print(f"  {step:44} {seconds:6.0f}s")

    times = []
    memory: dict[str, float] = {}
    for attempt in range(args.starts):
        workdir = Path(tempfile.mkdtemp(prefix="berth-start-"))
        cluster = LocalCluster(workdir / "cluster", binaries=binaries)
        cluster.start()
        times.append(cluster.startup_seconds)
        if attempt == args.starts - 1:
            time.sleep(30)  # settle: controllers finish their first sync
            memory = component_rss_mb(cluster)
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"cached start to Ready nodes (real and kwok), DNS, Services + default SA "
        f"({args.starts} runs): "
        f"median {statistics.median(times):.1f}s, min {min(times):.1f}s, max {max(times):.1f}s"
    )
    print("resident memory after 30 s idle:")
    for name, size in memory.items():
        print(f"  {name:24} {size:7.0f} MB")
    print(f"  {'total':24} {sum(memory.values()):7.0f} MB")


if __name__ == "__main__":
    main()
