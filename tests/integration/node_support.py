"""Helpers for tests on the real node: Registries whose Pods really run, what a user reads
off them (CA, Service addresses, robot credentials), and the clients a user would use
(curl, skopeo, the kubelet)."""

from __future__ import annotations

import base64
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from berth.constants import GROUP, VERSION
from berth.resources.access import pull_secret_name
from testbed.cluster import wait_for
from testbed.node import NODE_NAME
from testbed.served import Served

PUSH_LABEL = {"berth.dev/registry": "push"}


def registry_spec(storage: dict[str, Any], *, grants: str = "push") -> dict[str, Any]:
    """The sample Registry's spec (Token auth, SelfSigned TLS) with `storage`."""
    return {
        "managementState": "Managed",
        "replicas": 1,
        "storage": storage,
        "tls": {"mode": "SelfSigned"},
        "auth": {"mode": "Token"},
        "access": [
            {
                "namespaceSelector": {"matchLabels": {"berth.dev/registry": grants}},
                "serviceAccounts": ["default"],
                "permission": "push",
                "repositories": ["{namespace}/**"],
            }
        ],
        "expose": {"service": {"type": "ClusterIP", "port": 5000}},
    }


def create_registry(api: client.ApiClient, namespace: str, name: str, spec: dict[str, Any]) -> None:
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "registries",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Registry",
            "metadata": {"name": name},
            "spec": spec,
        },
    )


def get_registry(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, "registries", name
    )
    return obj


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    for item in (obj.get("status") or {}).get("conditions") or []:
        if item["type"] == kind:
            return dict(item)
    return {}


def wait_ready(api: client.ApiClient, namespace: str, name: str, timeout: float = 180) -> None:
    def ready() -> bool:
        return condition(get_registry(api, namespace, name), "Ready").get("status") == "True"

    try:
        wait_for(f"Registry {namespace}/{name} Ready", ready, timeout, interval=1)
    except Exception as error:
        pods = client.CoreV1Api(api).list_namespaced_pod(namespace).items
        states = {p.metadata.name: p.status.container_statuses for p in pods}
        raise AssertionError(
            f"{error}\nstatus: {get_registry(api, namespace, name).get('status')}\npods: {states}"
        ) from None


def labelled_namespace(api: client.ApiClient, name: str, labels: dict[str, str]) -> str:
    """A namespace whose Pods run on the real node (no kwok annotations)."""
    client.CoreV1Api(api).create_namespace(
        {"metadata": {"name": name, "labels": {"berth.dev/test": "true", **labels}}}
    )
    return name


def delete_namespaces(api: client.ApiClient, *names: str) -> None:
    for name in names:
        try:
            client.CoreV1Api(api).delete_namespace(name)
        except ApiException as error:
            if error.status != 404:
                raise


def robot_credential(api: client.ApiClient, namespace: str, registry: Served) -> tuple[str, str]:
    """The robot user and password from the namespace's pull Secret, for the registry's
    in-cluster host."""
    secret_name = pull_secret_name(registry.namespace, registry.name)

    def present() -> bool:
        client.CoreV1Api(api).read_namespaced_secret(secret_name, namespace)
        return True

    wait_for(f"pull Secret {namespace}/{secret_name}", present, 60)
    secret = client.CoreV1Api(api).read_namespaced_secret(secret_name, namespace)
    config = json.loads(base64.b64decode(secret.data[".dockerconfigjson"]))
    entry = config["auths"][registry.host]
    return str(entry["username"]), str(entry["password"])


def running_pods(api: client.ApiClient, namespace: str, selector: str) -> list[Any]:
    return list(client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=selector).items)


def assert_really_running(pod: Any) -> None:
    """The Pod runs on the real node, each container started by containerd and Ready."""
    assert pod.spec.node_name == NODE_NAME, pod.spec.node_name
    assert pod.status.phase == "Running", pod.status
    for status in pod.status.container_statuses:
        assert status.container_id.startswith("containerd://"), status
        assert status.ready, status


def skopeo_copy(
    source: str, destination: str, *, creds: tuple[str, str], cert_dir: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "skopeo",
            "copy",
            "--quiet",
            "--dest-creds",
            f"{creds[0]}:{creds[1]}",
            "--dest-cert-dir",
            str(cert_dir),
            source,
            destination,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def skopeo_digest(
    reference: str, *, creds: tuple[str, str], cert_dir: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "skopeo",
            "inspect",
            "--raw",
            "--creds",
            f"{creds[0]}:{creds[1]}",
            "--cert-dir",
            str(cert_dir),
            reference,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def run_pod(
    api: client.ApiClient,
    namespace: str,
    name: str,
    image: str,
    command: str,
    *,
    pull_always: bool = False,
    restart: str = "Always",
    service_account: str = "default",
) -> None:
    client.CoreV1Api(api).create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {
                "restartPolicy": restart,
                "serviceAccountName": service_account,
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {
                        "name": "app",
                        "image": image,
                        "imagePullPolicy": "Always" if pull_always else "IfNotPresent",
                        "command": ["sh", "-c", command],
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": 1000,
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]},
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                    }
                ],
            },
        },
    )


PULL_FAILURES = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")


def pod_outcome(api: client.ApiClient, namespace: str, name: str) -> str | None:
    """ "pulled" once the container started (or ran), the waiting reason if pulling
    failed, None while undecided."""
    pod = client.CoreV1Api(api).read_namespaced_pod(name, namespace)
    for status in pod.status.container_statuses or []:
        if status.state.running or status.state.terminated:
            return "pulled"
        waiting = status.state.waiting
        if waiting is not None and waiting.reason in PULL_FAILURES:
            return f"{waiting.reason}: {waiting.message}"
    return None


def wait_outcome(api: client.ApiClient, namespace: str, name: str, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        outcome = pod_outcome(api, namespace, name)
        if outcome is not None:
            return outcome
        time.sleep(0.5)
    return "undecided"
