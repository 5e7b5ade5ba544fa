"""A Managed Registry on the real node, the operator running as a process on the machine:
its registry and token-server Pods are started by containerd and Ready through their own
probes, the registry answers the machine at its ClusterIP with a token challenge (TLS
verified with Berth's CA, by curl), and the token server gives a robot a signed token
that the registry accepts."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import urllib.parse
from pathlib import Path

import pytest
from kubernetes import client

from berth.k8s.api import Kube
from testbed.cluster import wait_for
from testbed.node import RealNode
from testbed.nodeimages import BUSYBOX_IMAGE
from testbed.served import served
from tests.conftest import RunningOperator
from tests.integration import node_support as ns

pytestmark = [pytest.mark.cluster, pytest.mark.node]


def _curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "--silent", "--show-error", "--max-time", "10", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def _b64url(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_registry_pods_run_and_answer_with_a_token_challenge(
    api_client: client.ApiClient,
    operator: RunningOperator,
    node_namespace: str,
    real_node: RealNode,
    tmp_path: Path,
) -> None:
    team = ns.labelled_namespace(api_client, f"{node_namespace}-team", ns.PUSH_LABEL)
    try:
        ns.create_registry(api_client, node_namespace, "reg", ns.registry_spec({"emptyDir": {}}))
        ns.wait_ready(api_client, node_namespace, "reg")

        for component in ("registry", "token-server"):
            pods = ns.running_pods(
                api_client, node_namespace, f"app.kubernetes.io/component={component}"
            )
            assert len(pods) == 1, component
            ns.assert_really_running(pods[0])

        registry = served(api_client, node_namespace, "reg")
        ca = registry.write_ca(tmp_path / "ca") / "ca.crt"
        # From the machine, at the Service's ClusterIP: TLS verified with Berth's CA.
        challenge = _curl(
            "--cacert", str(ca), "--include", f"https://{registry.cluster_ip}:5000/v2/"
        )
        assert challenge.returncode == 0, challenge.stderr
        lines = [line.strip() for line in challenge.stdout.splitlines()]
        status_line, *headers = lines[: lines.index("")]
        assert " 401" in status_line, challenge.stdout
        authenticate = [h for h in headers if h.lower().startswith("www-authenticate:")]
        assert len(authenticate) == 1, challenge.stdout
        authenticate = authenticate[0]
        assert 'Bearer realm="https://' in authenticate, authenticate
        realm = authenticate.split('realm="', 1)[1].split('"', 1)[0]
        service = authenticate.split('service="', 1)[1].split('"', 1)[0]
        assert urllib.parse.urlsplit(realm).hostname == registry.auth_host

        # A robot of the team's pull Secret asks the token server (its Service, the realm's
        # name pinned to its ClusterIP) for push on its own repository.
        user, password = ns.robot_credential(api_client, team, registry)
        scope = f"repository:{team}/app:pull,push"
        query = urllib.parse.urlencode({"service": service, "scope": scope})
        port = urllib.parse.urlsplit(realm).port or 443
        answer = _curl(
            "--cacert", str(ca),
            "--resolve", f"{registry.auth_host}:{port}:{registry.auth_ip}",
            "--user", f"{user}:{password}",
            f"{realm}?{query}",
        )  # fmt: skip
        assert answer.returncode == 0, answer.stderr
        token = json.loads(answer.stdout)["token"]
        header, payload, signature = token.split(".")
        assert json.loads(_b64url(header))["alg"] in ("ES256", "RS256"), header
        claims = json.loads(_b64url(payload))
        assert claims["sub"] == user
        assert claims["access"] == [
            {"type": "repository", "name": f"{team}/app", "actions": ["pull", "push"]}
        ]
        assert _b64url(signature)
        # The registry verifies the signature: with the token, /v2/ answers 200.
        accepted = _curl(
            "--cacert", str(ca), "--output", "/dev/null", "--write-out", "%{http_code}",
            "--header", f"Authorization: Bearer {token}",
            f"https://{registry.cluster_ip}:5000/v2/",
        )  # fmt: skip
        assert accepted.stdout == "200", accepted
    finally:
        ns.delete_namespaces(api_client, team)


def test_kube_reads_the_log_of_a_pod_on_the_real_node(
    api_client: client.ApiClient, node_namespace: str, real_node: RealNode, kubeconfig: Path
) -> None:
    """Storage GC reads the collector's log this way; kwok serves no logs, so only a real
    kubelet can show that the API server hands the log to Kube (it negotiates the text
    only from Accept */*)."""
    ns.run_pod(api_client, node_namespace, "logger", BUSYBOX_IMAGE, "echo collected; echo done",
               restart="Never")  # fmt: skip
    core = client.CoreV1Api(api_client)

    def finished() -> bool:
        phase = core.read_namespaced_pod("logger", node_namespace).status.phase
        return phase in ("Succeeded", "Failed")

    wait_for("the logger Pod to finish", finished, 90)

    async def read() -> str:
        kube = Kube.from_environment(str(kubeconfig))
        try:
            return await kube.pod_log(node_namespace, "logger", request_timeout=30)
        finally:
            kube.close()

    assert asyncio.run(read()) == "collected\ndone\n"
