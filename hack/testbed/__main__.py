"""`python -m testbed up|down|status|trust|agent-settings`: the detached cluster behind
`make cluster-up`; `trust --registry NS/NAME`, which waits for that Registry to be Ready
and leaves its CA and a small image for the README's commands (the node itself is
configured by Berth's node agent); `agent-settings`, the node agent's settings for this
cluster's real node (BERTH_NODE_AGENT of `make run`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from testbed.cluster import ClusterError, LocalCluster, detached_pids, stop_detached
from testbed.testbin import REPO_ROOT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed")
    parser.add_argument(
        "command", choices=["up", "down", "status", "build", "trust", "agent-settings"]
    )
    parser.add_argument("--registry", help="trust: the Registry, NAMESPACE/NAME")
    parser.add_argument("--wait", type=float, default=600, help="trust: seconds to wait")
    parser.add_argument(
        "--dir", type=Path, default=REPO_ROOT / ".cache" / "cluster", help="cluster folder"
    )
    args = parser.parse_args(argv)
    workdir: Path = args.dir.resolve()

    if args.command == "build":
        from testbed.testbin import ensure_built

        print(ensure_built())
        return 0
    if args.command == "agent-settings":
        import json

        from testbed.node import RealNode
        from testbed.testbin import ensure_built

        print(json.dumps(RealNode(workdir / "node", ensure_built()).agent_settings()))
        return 0
    if args.command == "trust":
        return trust(workdir, args.registry, args.wait)
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


def trust(workdir: Path, registry: str | None, timeout: float) -> int:
    """Wait for the Registry to be Ready and its nodes configured (by Berth's node
    agent); leave the CA and a small runnable image under `workdir` for the README's
    commands."""
    from kubernetes import client, config

    from testbed.nodeimages import workload_image
    from testbed.procs import wait_for
    from testbed.served import served

    if not registry or "/" not in registry:
        print("trust needs --registry NAMESPACE/NAME", file=sys.stderr)
        return 2
    namespace, name = registry.split("/", 1)
    api = config.new_client_from_config(str(workdir / "kubeconfig"))  # type: ignore[no-untyped-call]
    custom = client.CustomObjectsApi(api)

    def ready() -> bool:
        obj: dict[str, Any] = custom.get_namespaced_custom_object(  # type: ignore[assignment]
            "berth.dev", "v1alpha1", namespace, "registries", name
        )
        conditions = (obj.get("status") or {}).get("conditions") or []
        true = {c["type"] for c in conditions if c["status"] == "True"}
        return {"Ready", "NodesReady"} <= true

    try:
        wait_for(f"Registry {registry} Ready, its nodes configured", ready, timeout, interval=2)
    except ClusterError as error:
        print(f"trust: {error}", file=sys.stderr)
        return 1
    found = served(api, namespace, name)
    found.write_ca(workdir / "registry-ca")
    hello = {"/hello.txt": "pushed from the machine, pulled by the kubelet\n"}
    image = workload_image(workdir / "demo-image", "localhost/demo/hello:1", hello)
    print(f"the node pulls from {found.host}; CA in {workdir / 'registry-ca'}; image {image}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
