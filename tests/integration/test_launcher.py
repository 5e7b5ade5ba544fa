"""The launcher itself: a detached cluster answers kubectl and stops completely, and an
attached cluster dies with the process that started it (no orphans after a SIGKILL)."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from testbed.cluster import _alive, detached_pids, wait_for
from testbed.testbin import REPO_ROOT, ensure_built

_PR_SET_CHILD_SUBREAPER = 36
ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "hack")}


def _testbed(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "testbed", *args],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_detached_cluster_serves_kubectl_and_stops_completely(tmp_path: Path) -> None:
    workdir = tmp_path / "cluster"
    up = _testbed("up", "--dir", str(workdir))
    assert up.returncode == 0, up.stderr
    pids = detached_pids(workdir)
    try:
        assert len(pids) == 5  # etcd, apiserver, controller-manager, scheduler, kwok
        nodes = subprocess.run(
            [
                str(ensure_built() / "kubectl"),
                *("--kubeconfig", str(workdir / "kubeconfig")),
                *("get", "nodes", "--no-headers"),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        assert nodes[:2] == ["kwok-node-0", "Ready"]
        again = _testbed("up", "--dir", str(workdir))
        assert "already running" in again.stdout
    finally:
        down = _testbed("down", "--dir", str(workdir))
    assert down.returncode == 0, down.stderr
    assert not [pid for pid in pids if _alive(pid)]
    assert _testbed("status", "--dir", str(workdir)).returncode == 1


def test_killed_launcher_leaves_no_orphans(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import json, sys, time
        from pathlib import Path
        from testbed.cluster import LocalCluster
        cluster = LocalCluster(Path({str(tmp_path / "cluster")!r}))
        cluster.start()
        print(json.dumps([c.process.pid for c in cluster.components]), flush=True)
        time.sleep(600)
        """
    )
    # Orphans are re-parented to us, not to an init that may never reap them.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1)
    launcher = subprocess.Popen(
        [sys.executable, "-c", script], env=ENV, stdout=subprocess.PIPE, text=True
    )
    assert launcher.stdout is not None
    pids = json.loads(launcher.stdout.readline())
    assert len(pids) == 5
    assert all(_alive(pid) for pid in pids)

    launcher.send_signal(signal.SIGKILL)  # no finalizer, no atexit: only the kernel can help
    launcher.wait()
    wait_for("every component to exit", lambda: not any(_alive(p) for p in pids), timeout=15)
