"""The launcher itself, with its real node: a detached cluster (`make cluster-up`) shows
both nodes Ready and runs a Pod, holds the machine's one real node, and `down` stops it
completely; an attached cluster dies with the process that started it, and what its node
left behind (containers, mounts, links, iptables chains) is swept by the next start.

After each, the machine is compared with what it was before the cluster started:
processes of the node's binaries or in Pod cgroups, every mount point, network link,
iptables and ip6tables rule, the sysctls the node's components set, and the host paths
they create (testbed.node.machine_state).

These run before any other module (tests/integration/conftest.py): the session's cluster
holds the real node once it has started.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from testbed import node
from testbed.cluster import detached_pids, wait_for
from testbed.procs import alive
from testbed.testbin import REPO_ROOT, ensure_built

pytestmark = pytest.mark.node

_PR_SET_CHILD_SUBREAPER = 36
ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "hack")}
BUSYBOX = "localhost/berth-test/busybox:1.35"


def _testbed(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "testbed", *args],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _kubectl(workdir: Path, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [str(ensure_built() / "kubectl"), "--kubeconfig", str(workdir / "kubeconfig"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _run_pod(workdir: Path, name: str) -> None:
    """A Pod on the real node that writes into a PVC of the default StorageClass."""
    manifest = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "10Mi"}},
                },
            },
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {
                            "name": "sh",
                            "image": BUSYBOX,
                            "command": ["sh", "-c", "echo written > /data/proof; sleep 3600"],
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                        }
                    ],
                    "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": name}}],
                },
            },
        ],
    }
    _kubectl(workdir, "apply", "-f", "-", stdin=json.dumps(manifest))
    _kubectl(workdir, "wait", "--for=condition=Ready", f"pod/{name}", "--timeout=60s")


def _differences(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    diff = {}
    for key, value in before.items():
        if after.get(key) != value:
            if isinstance(value, list):
                diff[key] = {
                    "left": sorted(set(after[key]) - set(value)),
                    "gone": sorted(set(value) - set(after[key])),
                }
            else:
                diff[key] = {"before": value, "after": after.get(key)}
    return diff


def test_detached_cluster_runs_pods_on_its_real_node_and_stops_completely(
    tmp_path: Path,
) -> None:
    binaries = ensure_built()
    before = node.machine_state(binaries)
    workdir = tmp_path / "cluster"
    up = _testbed("up", "--dir", str(workdir))
    assert up.returncode == 0, up.stderr + up.stdout
    pids = detached_pids(workdir)
    try:
        assert len(pids) == 5  # etcd, apiserver, controller-manager, scheduler, kwok
        assert node.running_owner() == str(workdir)
        nodes = json.loads(_kubectl(workdir, "get", "nodes", "-o", "json"))["items"]
        by_name = {n["metadata"]["name"]: n for n in nodes}
        assert set(by_name) == {node.NODE_NAME, "kwok-node-0"}
        for item in nodes:
            ready = [c for c in item["status"]["conditions"] if c["type"] == "Ready"]
            assert ready[0]["status"] == "True", item["metadata"]["name"]
        runtime = by_name[node.NODE_NAME]["status"]["nodeInfo"]["containerRuntimeVersion"]
        assert runtime.startswith("containerd://2."), runtime
        assert by_name["kwok-node-0"]["spec"]["taints"][0]["key"] == "kwok.x-k8s.io/node"

        _run_pod(workdir, "proof")
        pod = json.loads(_kubectl(workdir, "get", "pod", "proof", "-o", "json"))
        assert pod["spec"]["nodeName"] == node.NODE_NAME
        assert pod["status"]["containerStatuses"][0]["containerID"].startswith("containerd://")
        # The PVC is a folder of the node's: what the Pod wrote is on this machine's disk.
        [written] = (workdir / "node" / "volumes").glob("pvc-*/proof")
        assert written.read_text() == "written\n"

        again = _testbed("up", "--dir", str(workdir))
        assert "already running" in again.stdout
        other = _testbed("up", "--dir", str(tmp_path / "other"))
        assert other.returncode == 1
        assert "a real test-bed node already runs on this machine" in other.stderr
    finally:
        down = _testbed("down", "--dir", str(workdir))
    assert down.returncode == 0, down.stderr
    assert not [pid for pid in pids if alive(pid)]
    assert _testbed("status", "--dir", str(workdir)).returncode == 1
    assert _differences(before, node.machine_state(binaries)) == {}


def test_killed_launcher_leaves_no_orphans_and_the_next_start_sweeps(tmp_path: Path) -> None:
    binaries = ensure_built()
    before = node.machine_state(binaries)
    script = textwrap.dedent(
        f"""
        import json, sys, time
        from pathlib import Path
        from testbed.cluster import LocalCluster
        cluster = LocalCluster(Path({str(tmp_path / "cluster")!r}))
        cluster.start()
        pids = [c.process.pid for c in cluster.components]
        pids += [p.process.pid for p in cluster.node.processes]
        print(json.dumps(pids), flush=True)
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
    assert len(pids) == 5 + 5  # the control plane; containerd, kubelet, proxy, DNS, volumes
    assert all(alive(pid) for pid in pids)
    _run_pod(tmp_path / "cluster", "crashed")

    launcher.send_signal(signal.SIGKILL)  # no finalizer, no atexit: only the kernel can help
    launcher.wait()
    wait_for("every component to exit", lambda: not any(alive(p) for p in pids), timeout=15)
    # The Pod's shim and container outlive the kubelet: that is what the sweep is for.
    assert node.machine_state(binaries)["processes"]

    workdir = tmp_path / "next"
    up = _testbed("up", "--dir", str(workdir))
    try:
        assert up.returncode == 0, up.stderr + up.stdout
        assert "sweeping what the node of" in up.stdout
    finally:
        down = _testbed("down", "--dir", str(workdir))
    assert down.returncode == 0, down.stderr
    assert _differences(before, node.machine_state(binaries)) == {}


def test_without_the_capabilities_it_needs_the_node_says_which_and_changes_nothing(
    tmp_path: Path,
) -> None:
    before = node.machine_state(ensure_built())
    workdir = tmp_path / "cluster"
    # As root, but with CAP_NET_ADMIN and CAP_SYS_ADMIN out of the bounding set.
    up = subprocess.run(
        ["setpriv", "--bounding-set", "-net_admin,-sys_admin",
         sys.executable, "-m", "testbed", "up", "--dir", str(workdir)],
        env=ENV, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert up.returncode == 1, up.stdout + up.stderr
    assert "missing: capabilities CAP_NET_ADMIN, CAP_SYS_ADMIN" in up.stderr, up.stderr
    assert not detached_pids(workdir)
    assert node.running_owner() is None
    assert node.machine_state(ensure_built()) == before
