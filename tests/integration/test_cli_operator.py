"""`berth operator` as people run it: a process with a liveness endpoint, Prometheus
metrics, JSON logs without credentials, and a namespace scope."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from kubernetes import client

from berth.constants import GROUP, VERSION
from testbed.cluster import free_port, wait_for


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as response:
        return str(response.read().decode())


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_operator_process_serves_liveness_metrics_and_json_logs(
    api_client: client.ApiClient,
    namespace: str,
    kubeconfig: Path,
    berth_crds: list[str],
    tmp_path: Path,
) -> None:
    metrics, liveness = free_port(), free_port()
    log_path = tmp_path / "operator.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "berth.cli", "operator", "--namespace", namespace,
                "--standalone", f"--metrics-port={metrics}",
                f"--liveness=http://127.0.0.1:{liveness}/healthz",
            ],
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for("/healthz", lambda: bool(_get(f"http://127.0.0.1:{liveness}/healthz")), 60)
        client.CustomObjectsApi(api_client).create_namespaced_custom_object(
            GROUP, VERSION, namespace, "registries",
            {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Registry", "metadata": {"name": "cli"},
             "spec": {"storage": {"emptyDir": {}}, "auth": {"mode": "Htpasswd"}}},
        )  # fmt: skip

        def reconciled() -> bool:
            text = _get(f"http://127.0.0.1:{metrics}/metrics")
            return _metric(text, "berth_reconciles_total", kind="Registry") >= 1

        wait_for("a reconcile counted in the metrics", reconciled, 30)
        text = _get(f"http://127.0.0.1:{metrics}/metrics")
        assert _metric(text, "berth_reconcile_duration_seconds_count", kind="Registry") >= 1
        assert _metric(text, "berth_api_writes_total", kind="Deployment") >= 0
    finally:
        process.terminate()
        process.wait(30)
    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is a JSON object
    assert records
    assert {"message", "severity", "timestamp"} <= set(records[0])
    admin = client.CoreV1Api(api_client).read_namespaced_secret("cli-admin", namespace)

    password = base64.b64decode(admin.data["password"]).decode()
    assert password not in log_path.read_text()
