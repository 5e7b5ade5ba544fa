"""Access benchmark, against the real `berth operator` in a subprocess: N namespaces
are labelled into a Registry's push grant at once; how long until every one has its
pull Secret and its default ServiceAccount references it, how many write calls that
took per namespace, and how many writes the steady state makes afterwards.

    PYTHONPATH=hack .venv/bin/python -m benchmarks.access [--namespaces 500]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from kubernetes import client, config

from benchmarks.support import cluster, operator
from testbed.cluster import wait_for
from testbed.testbin import REPO_ROOT

SAMPLE = yaml.safe_load((REPO_ROOT / "manifests/samples/registry.yaml").read_text())
SECRET = "berth-registry-system-registry"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--namespaces", type=int, default=500)
    parser.add_argument("--quiet-seconds", type=float, default=120.0)
    args = parser.parse_args()

    with cluster() as running, tempfile.TemporaryDirectory() as workdir:
        api = config.new_client_from_config(str(running.kubeconfig))
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        core.create_namespace({"metadata": {"name": "registry-system"}})
        with operator(running.kubeconfig, Path(workdir)) as berth:
            custom.create_namespaced_custom_object(
                "berth.dev", "v1alpha1", "registry-system", "registries",
                {"apiVersion": "berth.dev/v1alpha1", "kind": "Registry",
                 "metadata": {"name": "registry"}, "spec": SAMPLE["spec"]},
            )  # fmt: skip
            config_secret = "metadata.name=registry-auth-config"
            wait_for(
                "the Registry's token server config",
                lambda: bool(
                    core.list_namespaced_secret(
                        "registry-system", field_selector=config_secret
                    ).items
                ),
                120,
            )
            time.sleep(5)
            writes_before = berth.metric("berth_api_writes_total")
            started = time.monotonic()
            labels = {"berth.dev/registry": "push"}

            def create(index: int) -> None:
                name = f"team-{index:04d}"
                core.create_namespace({"metadata": {"name": name, "labels": labels}})

            with ThreadPoolExecutor(8) as pool:
                list(pool.map(create, range(args.namespaces)))
            created = time.monotonic() - started

            def converged() -> bool:
                secrets = core.list_secret_for_all_namespaces(
                    label_selector="berth.dev/registry=registry"
                ).items
                served = {s.metadata.namespace for s in secrets}
                accounts = core.list_service_account_for_all_namespaces(
                    field_selector="metadata.name=default"
                ).items
                referenced = {
                    a.metadata.namespace for a in accounts
                    if any(r.name == SECRET for r in a.image_pull_secrets or [])
                }  # fmt: skip
                wanted = {f"team-{i:04d}" for i in range(args.namespaces)}
                return wanted <= served and wanted <= referenced

            wait_for("every namespace served", converged, 900, interval=1.0)
            elapsed = time.monotonic() - started
            writes = berth.metric("berth_api_writes_total") - writes_before
            print(f"{args.namespaces} namespaces created in {created:.1f}s (by the benchmark)")
            print(
                "all served (Secret + default ServiceAccount reference) "
                f"{elapsed:.1f}s after the first was created"
            )
            print(f"write calls: {writes:.0f} ({writes / args.namespaces:.2f} per namespace)")
            for labels_, value in sorted(berth.samples("berth_api_writes_total").items()):
                print(f"  {dict(labels_)}: {value:.0f} (whole run)")
            time.sleep(30)
            quiet_before = berth.metric("berth_api_writes_total")
            time.sleep(args.quiet_seconds)
            quiet = berth.metric("berth_api_writes_total") - quiet_before
            print(f"steady state over {args.quiet_seconds:.0f}s: {quiet:.0f} write calls")
            memory = berth.rss_mb()
            print(f"operator resident memory serving {args.namespaces} namespaces: {memory:.0f} MB")


if __name__ == "__main__":
    main()
