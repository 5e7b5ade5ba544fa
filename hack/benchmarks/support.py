"""Shared pieces of the operator benchmarks: a local cluster with the CRDs, and the real
`berth operator` as a subprocess whose memory and metrics can be read from outside."""

from __future__ import annotations

import contextlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from testbed.cluster import LocalCluster, free_port, wait_for
from testbed.testbin import REPO_ROOT


@contextlib.contextmanager
def cluster() -> Iterator[LocalCluster]:
    with tempfile.TemporaryDirectory(prefix="berth-bench-") as workdir:
        # Scale runs measure the operator against the kwok node alone, as before the real
        # node existed: nothing of theirs runs a container.
        running = LocalCluster(Path(workdir) / "cluster", real_node=False)
        running.start()
        try:
            subprocess.run(
                [sys.executable, "-m", "berth.cli", "crds", "apply", str(REPO_ROOT / "crds")],
                env={**os.environ, "KUBECONFIG": str(running.kubeconfig)},
                check=True,
                capture_output=True,
            )
            yield running
        finally:
            running.stop()


@dataclass
class OperatorProcess:
    process: subprocess.Popen[bytes]
    metrics_port: int
    log_path: Path

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def samples(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        """Every sample of `name`, keyed by its sorted labels."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics") as page:
            text = page.read().decode()
        found = {}
        for line in text.splitlines():
            match = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? ([0-9.e+-]+)$", line)
            if match:
                labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', match.group(1) or "")))
                found[labels] = float(match.group(2))
        return found

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels`."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics") as page:
            text = page.read().decode()
        total = 0.0
        for line in text.splitlines():
            match = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? ([0-9.e+-]+)$", line)
            if not match:
                continue
            found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
            if all(found.get(k) == v for k, v in labels.items()):
                total += float(match.group(2))
        return total


@contextlib.contextmanager
def operator(kubeconfig: Path, workdir: Path) -> Iterator[OperatorProcess]:
    metrics_port = free_port()
    log_path = workdir / "operator.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "berth.cli", "operator", "--all-namespaces",
                "--standalone", f"--metrics-port={metrics_port}",
                f"--liveness=http://127.0.0.1:{free_port()}/healthz",
                *(["--verbose"] if os.environ.get("BERTH_BENCH_VERBOSE") else []),
            ],
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    running = OperatorProcess(process, metrics_port, log_path)
    try:
        wait_for(
            "the operator's metrics", lambda: running.metric("berth_api_writes_total") >= 0, 60
        )
        yield running
    finally:
        if os.environ.get("BERTH_BENCH_KEEP_LOG"):
            import shutil

            shutil.copy(log_path, os.environ["BERTH_BENCH_KEEP_LOG"])
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def summary(values: list[float]) -> str:
    return (
        f"n={len(values)} p50={percentile(values, 0.5):.2f}s p95={percentile(values, 0.95):.2f}s"
        f" max={max(values):.2f}s mean={statistics.fmean(values):.2f}s"
    )


def now() -> float:
    return time.monotonic()
