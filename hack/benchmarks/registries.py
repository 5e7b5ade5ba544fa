"""Registry reconciler benchmarks, against the real `berth operator` in a subprocess:

1. time from `create` to all of a Registry's children applied, over N Registries created
   one after another (p50/p95);
2. write calls the operator makes while nothing changes (steady state, drift timers
   running), read from its own metrics (berth_api_writes_total).

    PYTHONPATH=hack .venv/bin/python -m benchmarks.registries [--count 50]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config

from benchmarks.support import cluster, operator, summary
from testbed.cluster import wait_for
from testbed.testbin import REPO_ROOT

SAMPLE = yaml.safe_load((REPO_ROOT / "manifests/samples/registry.yaml").read_text())
# The last children a pass applies: the registry's NetworkPolicy, then the token server's.
LAST_CHILDREN = ("{name}", "{name}-auth")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--quiet-seconds", type=float, default=150.0)
    args = parser.parse_args()

    with cluster() as running, tempfile.TemporaryDirectory() as workdir:
        api = config.new_client_from_config(str(running.kubeconfig))
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        networking = client.NetworkingV1Api(api)
        core.create_namespace({"metadata": {"name": "bench"}})
        with operator(running.kubeconfig, Path(workdir)) as berth:
            created: dict[str, float] = {}
            applied: dict[str, float] = {}
            stop = threading.Event()

            def watch_children() -> None:
                while not stop.is_set():
                    names = {
                        p.metadata.name
                        for p in networking.list_namespaced_network_policy("bench").items
                    }
                    seen = time.monotonic()
                    for name in list(created):
                        wanted = {pattern.format(name=name) for pattern in LAST_CHILDREN}
                        if name not in applied and wanted <= names:
                            applied[name] = seen
                    time.sleep(0.02)

            watcher = threading.Thread(target=watch_children, daemon=True)
            watcher.start()
            for index in range(args.count):
                name = f"reg-{index:03d}"
                body: dict[str, Any] = {
                    "apiVersion": "berth.dev/v1alpha1",
                    "kind": "Registry",
                    "metadata": {"name": name},
                    "spec": copy.deepcopy(SAMPLE["spec"]),
                }
                created[name] = time.monotonic()
                custom.create_namespaced_custom_object(
                    "berth.dev", "v1alpha1", "bench", "registries", body
                )
                time.sleep(0.2)
            wait_for("every Registry's children", lambda: len(applied) == args.count, 300)
            stop.set()
            latencies = [applied[n] - created[n] for n in created]
            print(f"create -> all children applied: {summary(latencies)}")

            def all_ready() -> bool:
                items = custom.list_namespaced_custom_object(
                    "berth.dev", "v1alpha1", "bench", "registries"
                )["items"]
                return all(
                    any(
                        c["type"] == "Ready" and c["status"] == "True"
                        for c in (i.get("status") or {}).get("conditions", [])
                    )
                    for i in items
                )

            wait_for("every Registry Ready", all_ready, 300)
            print(
                f"writes until all {args.count} Ready: {berth.metric('berth_api_writes_total'):.0f}"
            )
            by_verb: dict[str, float] = {}
            for labels, value in berth.samples("berth_api_writes_total").items():
                verb = dict(labels).get("verb", "?")
                by_verb[verb] = by_verb.get(verb, 0.0) + value
            print("  by verb: " + ", ".join(f"{v} {n:.0f}" for v, n in sorted(by_verb.items())))
            time.sleep(60)  # let the last child events and access passes settle
            before = berth.metric("berth_api_writes_total")
            by_kind = berth.samples("berth_api_writes_total")
            passes_before = berth.metric("berth_reconciles_total")
            time.sleep(args.quiet_seconds)
            writes = berth.metric("berth_api_writes_total") - before
            for labels, value in berth.samples("berth_api_writes_total").items():
                extra = value - by_kind.get(labels, 0.0)
                if extra:
                    print(f"  quiet-window writes {dict(labels)}: {extra:.0f}")
            passes = berth.metric("berth_reconciles_total") - passes_before
            print(
                f"steady state over {args.quiet_seconds:.0f}s: {passes:.0f} reconcile passes "
                f"(drift timers), {writes:.0f} write calls"
            )
            print(f"operator resident memory: {berth.rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
