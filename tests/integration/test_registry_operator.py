"""The Registry reconciler against the real control plane, with the operator running
in-process: children, readiness, drift, scaling, Pod Security, Unmanaged probes,
InvalidSpec, Removed and deletion."""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from berth import pki
from berth.constants import GROUP, LABEL_INSTANCE, VERSION
from berth.k8s.api import Kube
from berth.reconcile import rotation
from berth.reconcile.registry import reconcile_registry
from testbed.cluster import free_port, wait_for
from testbed.registry import LocalRegistry
from testbed.testbin import REPO_ROOT
from tests.integration.node_support import condition, create_registry, get_registry

SAMPLE = yaml.safe_load((REPO_ROOT / "manifests/samples/registry.yaml").read_text())
CHILD_KINDS = {
    ("v1", "ServiceAccount", "serviceaccounts"),
    ("v1", "ConfigMap", "configmaps"),
    ("v1", "Secret", "secrets"),
    ("v1", "Service", "services"),
    ("v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
    ("apps/v1", "Deployment", "deployments"),
    ("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    ("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies"),
    ("networking.k8s.io/v1", "Ingress", "ingresses"),
}

pytestmark = pytest.mark.usefixtures("operator")


def _custom(api_client: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client)


def wait_condition(
    api_client: client.ApiClient,
    namespace: str,
    name: str,
    status: str,
    *,
    condition_type: str = "Ready",
    reason: str | None = None,
    timeout: float = 20,
) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def check() -> bool:
        nonlocal seen
        seen = condition(get_registry(api_client, namespace, name), condition_type)
        return seen.get("status") == status and (reason is None or seen.get("reason") == reason)

    try:
        wait_for(f"{condition_type}={status} on {namespace}/{name}", check, timeout)
    except Exception as error:
        raise AssertionError(f"{error}; last seen: {seen}") from None
    return seen


def owned_children(api_client: client.ApiClient, namespace: str, name: str) -> set[tuple[str, str]]:
    """Every object in the namespace labelled as this Registry's, by (kind, name)."""
    found = set()
    for api_version, kind, plural in CHILD_KINDS:
        prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        response = api_client.call_api(
            "GET",
            f"{api_client.configuration.host}{prefix}/namespaces/{namespace}/{plural}"
            f"?labelSelector={LABEL_INSTANCE}%3D{name}",
            {"Accept": "application/json"},
        )
        data = yaml.safe_load(response.read())
        found |= {(kind, item["metadata"]["name"]) for item in data.get("items") or []}
    return found


def test_sample_gets_every_child_and_becomes_ready(
    api_client: client.ApiClient, namespace: str
) -> None:
    create_registry(api_client, namespace, "registry", SAMPLE["spec"])
    ready = wait_condition(api_client, namespace, "registry", "True", timeout=20)
    assert ready["reason"] == "Available"

    children = owned_children(api_client, namespace, "registry")
    assert {
        ("ServiceAccount", "registry-registry"),
        ("ConfigMap", "registry-config"),
        ("ConfigMap", "registry-ca"),
        ("Secret", "registry-secrets"),
        ("Secret", "registry-tls"),
        ("Secret", "registry-ca"),
        ("Secret", "registry-admin"),
        ("Secret", "registry-token-signing"),
        ("Service", "registry"),
        ("Deployment", "registry"),
        ("NetworkPolicy", "registry"),
    } <= children
    status = get_registry(api_client, namespace, "registry")["status"]
    assert status["endpoint"]["internal"] == f"registry.{namespace}.svc:5000"
    assert status["readyReplicas"] == 1
    assert status["caConfigMap"] == "registry-ca"
    assert status["observedGeneration"] == 1
    # Ready (serving) and Progressing (rolling out) may overlap for a moment.
    wait_condition(api_client, namespace, "registry", "False", condition_type="Progressing")
    for condition_type, expected in [("Degraded", "False"), ("StorageReady", "True")]:
        assert (
            condition(get_registry(api_client, namespace, "registry"), condition_type)["status"]
            == expected
        )


def test_serving_certificate_covers_every_service_name(
    api_client: client.ApiClient, namespace: str
) -> None:
    create_registry(api_client, namespace, "certs", SAMPLE["spec"])
    wait_condition(api_client, namespace, "certs", "True")
    core = client.CoreV1Api(api_client)
    secret = core.read_namespaced_secret("certs-tls", namespace)
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret.data["tls.crt"]))
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = set(sans.get_values_for_type(x509.DNSName))
    ips = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    assert {f"certs.{namespace}.svc", f"certs.{namespace}.svc.cluster.local"} <= names
    service = core.read_namespaced_service("certs", namespace)
    assert service.spec.cluster_ip in ips
    published = core.read_namespaced_config_map("certs-ca", namespace).data["ca.crt"]
    ca = x509.load_pem_x509_certificate(published.encode())
    cert.verify_directly_issued_by(ca)


def test_deleted_deployment_comes_back_and_replicas_follow_the_spec(
    api_client: client.ApiClient, namespace: str
) -> None:
    spec = copy.deepcopy(SAMPLE["spec"])
    spec["storage"] = {"pvc": {"size": "1Gi", "accessModes": ["ReadWriteMany"]}}
    create_registry(api_client, namespace, "drift", spec)
    wait_condition(api_client, namespace, "drift", "True")
    apps = client.AppsV1Api(api_client)
    original_uid = apps.read_namespaced_deployment("drift", namespace).metadata.uid

    apps.delete_namespaced_deployment("drift", namespace)

    def recreated() -> bool:
        try:
            return bool(
                apps.read_namespaced_deployment("drift", namespace).metadata.uid != original_uid
            )
        except ApiException as error:
            if error.status == 404:
                return False
            raise

    wait_for("the Deployment to be recreated", recreated, timeout=15)
    wait_condition(api_client, namespace, "drift", "True")

    _custom(api_client).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "registries", "drift", {"spec": {"replicas": 3}}
    )
    wait_for(
        "the Deployment to follow spec.replicas",
        lambda: apps.read_namespaced_deployment("drift", namespace).spec.replicas == 3,
        timeout=15,
    )
    wait_for(
        "status.readyReplicas to reach 3",
        lambda: (
            get_registry(api_client, namespace, "drift").get("status", {}).get("readyReplicas") == 3
        ),
        timeout=30,
    )
    # More than one replica: a PodDisruptionBudget keeps one available.
    client.PolicyV1Api(api_client).read_namespaced_pod_disruption_budget("drift", namespace)


def test_hand_edit_of_a_child_is_reverted(api_client: client.ApiClient, namespace: str) -> None:
    create_registry(api_client, namespace, "edited", SAMPLE["spec"])
    wait_condition(api_client, namespace, "edited", "True")
    core = client.CoreV1Api(api_client)
    original = core.read_namespaced_config_map("edited-config", namespace).data["config.yml"]
    core.patch_namespaced_config_map(
        "edited-config", namespace, {"data": {"config.yml": "version: 0.1\n"}}
    )
    wait_for(
        "the registry config to be restored",
        lambda: (
            core.read_namespaced_config_map("edited-config", namespace).data["config.yml"]
            == original
        ),
        timeout=15,
    )


def test_registry_in_a_restricted_namespace_gets_ready(
    api_client: client.ApiClient, namespace: str
) -> None:
    client.CoreV1Api(api_client).patch_namespace(
        namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )
    create_registry(api_client, namespace, "secure", SAMPLE["spec"])
    wait_condition(api_client, namespace, "secure", "True")
    pods = (
        client.CoreV1Api(api_client)
        .list_namespaced_pod(namespace, label_selector=f"{LABEL_INSTANCE}=secure")
        .items
    )
    assert pods, "the real Pod Security admission let the registry's Pods in"


def test_unmanaged_registry_is_ready_when_it_answers(
    api_client: client.ApiClient, namespace: str, registry: LocalRegistry
) -> None:
    spec = {"managementState": "Unmanaged", "external": {"url": registry.url}}
    create_registry(api_client, namespace, "outside", spec)
    ready = wait_condition(api_client, namespace, "outside", "True")
    assert ready["reason"] == "Reachable"
    assert not owned_children(api_client, namespace, "outside")  # Berth runs nothing


def test_unmanaged_registry_on_a_closed_port_says_why(
    api_client: client.ApiClient, namespace: str
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    create_registry(
        api_client, namespace, "nowhere", {"managementState": "Unmanaged", "external": {"url": url}}
    )
    ready = wait_condition(api_client, namespace, "nowhere", "False", reason="Unreachable")
    assert f"cannot connect to {url}" in ready["message"]
    assert "spec.external.url" in ready["message"]


def test_unmanaged_registry_with_htpasswd_needs_the_right_credentials(
    api_client: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    from testbed.registry import HtpasswdAuth

    with LocalRegistry(
        tmp_path / "reg", auth=HtpasswdAuth({"berth": "s3cret-passw0rd"})
    ) as guarded:
        spec = {"managementState": "Unmanaged", "external": {"url": guarded.url}}
        create_registry(api_client, namespace, "guarded", spec)
        ready = wait_condition(api_client, namespace, "guarded", "False", reason="Unauthorized")
        assert "credentialsSecretRef" in ready["message"]

        client.CoreV1Api(api_client).create_namespaced_secret(
            namespace,
            {
                "metadata": {"name": "creds"},
                "type": "kubernetes.io/basic-auth",
                "stringData": {"username": "berth", "password": "s3cret-passw0rd"},
            },
        )
        spec["external"]["credentialsSecretRef"] = {"name": "creds"}
        _custom(api_client).patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "registries", "guarded", {"spec": spec}
        )
        wait_condition(api_client, namespace, "guarded", "True", reason="Reachable")


def test_spec_that_cannot_work_is_invalid_and_others_still_reconcile(
    api_client: client.ApiClient, namespace: str
) -> None:
    spec = copy.deepcopy(SAMPLE["spec"])
    spec["storage"] = {"pvc": {"existingClaim": "no-such-claim"}}
    create_registry(api_client, namespace, "broken", spec)
    create_registry(api_client, namespace, "healthy", SAMPLE["spec"])

    ready = wait_condition(api_client, namespace, "broken", "False", reason="InvalidSpec")
    assert "spec.storage.pvc.existingClaim" in ready["message"]
    assert "no-such-claim" in ready["message"]
    wait_condition(api_client, namespace, "healthy", "True")

    def warned() -> bool:
        events = (
            client.CoreV1Api(api_client)
            .list_namespaced_event(namespace, field_selector="involvedObject.name=broken")
            .items
        )
        return any(e.reason == "InvalidSpec" and e.type == "Warning" for e in events)

    wait_for("a Warning Event about the invalid spec", warned, timeout=10)

    # What was missing appears: the next pass heals the Registry.
    client.CoreV1Api(api_client).create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": "no-such-claim"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    _custom(api_client).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "registries", "broken", {"metadata": {"labels": {"nudge": "1"}}}
    )
    wait_condition(api_client, namespace, "broken", "True", timeout=30)


def test_removed_deletes_the_workload_and_keeps_storage(
    api_client: client.ApiClient, namespace: str
) -> None:
    spec = copy.deepcopy(SAMPLE["spec"])
    spec["storage"] = {"pvc": {"size": "1Gi"}}
    create_registry(api_client, namespace, "retire", spec)
    wait_condition(api_client, namespace, "retire", "True")
    _custom(api_client).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "registries", "retire", {"spec": {"managementState": "Removed"}}
    )
    wait_condition(api_client, namespace, "retire", "False", reason="Removed")
    wait_for(
        "the workload to be deleted",
        lambda: (
            not {("Deployment", "retire"), ("Service", "retire")}
            & owned_children(api_client, namespace, "retire")
        ),
        timeout=15,
    )
    assert ("PersistentVolumeClaim", "retire-data") in owned_children(
        api_client, namespace, "retire"
    )


def test_deleting_the_registry_leaves_nothing_behind(
    api_client: client.ApiClient, namespace: str
) -> None:
    spec = copy.deepcopy(SAMPLE["spec"])
    spec["storage"] = {"pvc": {"size": "1Gi", "accessModes": ["ReadWriteMany"]}}
    spec["replicas"] = 2
    spec["expose"] = {"ingress": {"host": "registry.example.test"}}
    create_registry(api_client, namespace, "doomed", spec)
    wait_condition(api_client, namespace, "doomed", "True")
    assert {
        ("PodDisruptionBudget", "doomed"),
        ("Ingress", "doomed"),
        ("PersistentVolumeClaim", "doomed-data"),
    } <= owned_children(api_client, namespace, "doomed")

    _custom(api_client).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, "registries", "doomed"
    )
    wait_for(
        "every child to be garbage-collected",
        lambda: not owned_children(api_client, namespace, "doomed"),
        timeout=30,
    )


def test_a_drift_pass_that_finds_nothing_makes_no_writes(
    api_client: client.ApiClient, namespace: str, kubeconfig: Path
) -> None:
    create_registry(api_client, namespace, "steady", SAMPLE["spec"])
    wait_condition(api_client, namespace, "steady", "True")

    async def one_pass() -> tuple[int, int]:
        kube = Kube.from_environment(str(kubeconfig))
        try:
            outcome = await reconcile_registry(kube, namespace, "steady")
            assert outcome is not None
            return outcome.writes, kube.writes  # children, and everything incl. status
        finally:
            kube.close()

    # The operator's own passes may still be settling; a quiet pass must come soon.
    results = []
    for _ in range(10):
        child_writes, all_writes = asyncio.run(one_pass())
        results.append((child_writes, all_writes))
        if all_writes == 0:
            break
    assert results[-1] == (0, 0), results


def test_rendered_config_runs_on_the_real_registry(
    api_client: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    """The ConfigMap and Secrets the operator wrote start Debian's docker-registry and
    serve TLS that verifies against the published CA."""
    create_registry(api_client, namespace, "real", SAMPLE["spec"])
    wait_condition(api_client, namespace, "real", "True")
    core = client.CoreV1Api(api_client)
    config = yaml.safe_load(
        core.read_namespaced_config_map("real-config", namespace).data["config.yml"]
    )
    tls = core.read_namespaced_secret("real-tls", namespace).data
    auth = core.read_namespaced_secret("real-secrets", namespace).data
    for name, data in [("tls.crt", tls), ("tls.key", tls), ("token-ca.crt", auth)]:
        (tmp_path / name).write_bytes(base64.b64decode(data[name]))
    port, debug_port = free_port(), free_port()
    # Only what differs between a Pod and this machine: paths and loopback ports.
    config["storage"]["filesystem"]["rootdirectory"] = str(tmp_path / "store")
    config["http"]["addr"] = f"127.0.0.1:{port}"
    config["http"]["debug"]["addr"] = f"127.0.0.1:{debug_port}"
    config["http"]["tls"] = {
        "certificate": str(tmp_path / "tls.crt"),
        "key": str(tmp_path / "tls.key"),
    }
    config["auth"]["token"]["rootcertbundle"] = str(tmp_path / "token-ca.crt")
    (tmp_path / "config.yml").write_text(yaml.safe_dump(config))
    log = (tmp_path / "registry.log").open("wb")
    process = subprocess.Popen(
        ["/usr/bin/docker-registry", "serve", str(tmp_path / "config.yml")],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={"REGISTRY_HTTP_SECRET": base64.b64decode(auth["http-secret"]).decode()},
    )
    try:
        ca = core.read_namespaced_config_map("real-ca", namespace).data["ca.crt"]
        context = ssl.create_default_context(cadata=ca)
        context.check_hostname = False  # the certificate names the Service, not 127.0.0.1

        def answers_401() -> bool:
            try:
                urllib.request.urlopen(f"https://127.0.0.1:{port}/v2/", context=context, timeout=2)
            except urllib.error.HTTPError as error:
                return error.code == 401 and "Bearer realm=" in error.headers["WWW-Authenticate"]
            return False

        try:
            wait_for("the registry to serve TLS and ask for a token", answers_401, timeout=15)
        except Exception:
            raise AssertionError((tmp_path / "registry.log").read_text()[-3000:]) from None
        with urllib.request.urlopen(
            f"http://127.0.0.1:{debug_port}/debug/health", timeout=2
        ) as health:
            assert health.status == 200
    finally:
        process.terminate()
        process.wait(10)
        log.close()


@pytest.fixture
def cert_manager_api(api_client: client.ApiClient) -> Any:
    """cert-manager's Certificate API without its controller: the test plays the issuer."""
    extensions = client.ApiextensionsV1Api(api_client)
    name = "certificates.cert-manager.io"
    extensions.create_custom_resource_definition(
        {
            "metadata": {"name": name},
            "spec": {
                "group": "cert-manager.io",
                "scope": "Namespaced",
                "names": {
                    "plural": "certificates",
                    "singular": "certificate",
                    "kind": "Certificate",
                },
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {
                            "openAPIV3Schema": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            }
                        },
                    }
                ],
            },
        }
    )
    yield
    extensions.delete_custom_resource_definition(name)


def test_cert_manager_mode_requests_a_certificate_and_waits_for_it(
    api_client: client.ApiClient, namespace: str, cert_manager_api: Any
) -> None:
    spec = copy.deepcopy(SAMPLE["spec"])
    spec["tls"] = {"mode": "CertManager", "issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}}
    # The operator re-checks a missing API within a minute; a spec change asks again now.
    create_registry(api_client, namespace, "issued", spec)
    ready = wait_condition(
        api_client, namespace, "issued", "False", reason="WaitingForCertificate", timeout=90
    )
    assert "issued-tls" in ready["message"]
    certificate = _custom(api_client).get_namespaced_custom_object(
        "cert-manager.io", "v1", namespace, "certificates", "issued-tls"
    )
    assert certificate["spec"]["secretName"] == "issued-tls"
    assert f"issued.{namespace}.svc" in certificate["spec"]["dnsNames"]
    assert certificate["spec"]["issuerRef"]["kind"] == "ClusterIssuer"

    issued = pki.issue_serving(pki.new_ca("corp CA"), certificate["spec"]["dnsNames"])
    client.CoreV1Api(api_client).create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "issued-tls"},
            "type": "kubernetes.io/tls",
            "stringData": {"tls.crt": issued.cert_pem, "tls.key": issued.key_pem},
        },
    )
    _custom(api_client).patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "registries",
        "issued",
        {"metadata": {"labels": {"issued": "yes"}}},
    )
    wait_condition(api_client, namespace, "issued", "True", timeout=30)


def test_maintenance_annotation_switches_to_read_only_and_back(
    api_client: client.ApiClient, namespace: str
) -> None:
    create_registry(api_client, namespace, "maint", SAMPLE["spec"])
    wait_condition(api_client, namespace, "maint", "True")
    core = client.CoreV1Api(api_client)

    def config_read_only() -> bool:
        config = yaml.safe_load(
            core.read_namespaced_config_map("maint-config", namespace).data["config.yml"]
        )
        return bool(config["storage"]["maintenance"]["readonly"]["enabled"])

    assert not config_read_only()
    annotate = {"metadata": {"annotations": {"berth.dev/maintenance": "read-only"}}}
    _custom(api_client).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "registries", "maint", annotate
    )
    wait_condition(
        api_client, namespace, "maint", "True", condition_type="ReadOnly", reason="Maintenance"
    )
    assert config_read_only()

    annotate["metadata"]["annotations"]["berth.dev/maintenance"] = None  # type: ignore[index]
    _custom(api_client).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "registries", "maint", annotate
    )
    wait_condition(
        api_client, namespace, "maint", "False", condition_type="ReadOnly", reason="ReadWrite"
    )
    assert not config_read_only()


@pytest.fixture
def fast_ca_rotation() -> Any:
    saved = (rotation.TIMING.propagation, rotation.TIMING.retire_grace)
    rotation.TIMING.propagation = datetime.timedelta(seconds=3)
    rotation.TIMING.retire_grace = datetime.timedelta(seconds=6)
    yield
    rotation.TIMING.propagation, rotation.TIMING.retire_grace = saved


def _pems(bundle: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(bundle.encode())


@pytest.mark.usefixtures("fast_ca_rotation")
def test_a_ca_rotation_is_trusted_before_it_signs_and_the_old_ca_leaves_last(
    api_client: client.ApiClient, namespace: str
) -> None:
    """Every sample sees the serving certificates' CA in the published bundle; the new
    CA signs only after it was published, and the old one leaves once nothing it signed
    is served."""
    # The nodes' part (the new CA signs only once every agent holds it) is shown on the
    # real node (test_node_chart); here no node is waited for.
    spec = copy.deepcopy(SAMPLE["spec"])
    spec["nodeIntegration"] = {"enabled": False}
    create_registry(api_client, namespace, "rot", spec)
    wait_condition(api_client, namespace, "rot", "True")
    core = client.CoreV1Api(api_client)

    def serving() -> list[x509.Certificate]:
        return [
            x509.load_pem_x509_certificate(
                base64.b64decode(core.read_namespaced_secret(name, namespace).data["tls.crt"])
            )
            for name in ("rot-tls", "rot-auth-tls")
        ]

    def bundle() -> list[x509.Certificate]:
        return _pems(core.read_namespaced_config_map("rot-ca", namespace).data["ca.crt"])

    [first] = bundle()
    assert all(pki.issued_by(cert, _pem(first)) for cert in serving())
    _custom(api_client).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "registries", "rot",
        {"metadata": {"annotations": {"berth.dev/rotate-ca": "1"}}},
    )  # fmt: skip
    bundles: list[int] = [1]
    signers: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        certs, trusted = serving(), bundle()  # the certificates first, the trust after
        for cert in certs:
            assert any(pki.issued_by(cert, _pem(ca)) for ca in trusted), "served untrusted"
        signer = "old" if pki.issued_by(certs[0], _pem(first)) else "new"
        if not signers or signers[-1] != signer:
            signers.append(signer)
        if not bundles or bundles[-1] != len(trusted):
            bundles.append(len(trusted))
        if bundles[-1] == 1 and signer == "new":
            break
        time.sleep(0.2)
    assert signers == ["old", "new"], (signers, bundles, _ca_state(api_client, namespace))
    assert bundles == [1, 2, 1], bundles  # staged, kept through the switch, retired
    [last] = bundle()
    assert last != first
    assert all(pki.issued_by(cert, _pem(last)) for cert in serving())
    ca_secret = core.read_namespaced_secret("rot-ca", namespace)
    assert base64.b64decode(ca_secret.data["ca.crt"]).decode() == _pem(last)

    def reasons() -> set[str]:
        selector = "involvedObject.name=rot,involvedObject.kind=Registry"
        events = core.list_namespaced_event(namespace, field_selector=selector).items
        return {event.reason for event in events}

    # Each step's Event is posted after the status write of its pass.
    wanted = {"CARotationStaged", "CARotated", "CARetired"}
    wait_for("the rotation's Events", lambda: wanted <= reasons(), 20)
    # The same request again is no new rotation.
    time.sleep(5)
    assert bundle() == [last]


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _hosting(api_client: client.ApiClient) -> Any:
    try:
        return client.CoreV1Api(api_client).read_namespaced_config_map(
            "local-registry-hosting", "kube-public"
        )
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def test_the_local_registry_is_published_once_and_never_over_someone_elses(
    api_client: client.ApiClient, namespace: str
) -> None:
    """KEP-1755: the Registry marked as the cluster's local registry is named in
    kube-public/local-registry-hosting; a second one is told who holds it; a ConfigMap
    Berth did not make is left alone."""
    assert _hosting(api_client) is None
    spec = copy.deepcopy(SAMPLE["spec"])
    spec["nodeIntegration"] = {"localRegistryHosting": True}
    create_registry(api_client, namespace, "local", spec)
    wait_condition(api_client, namespace, "local", "True", condition_type="LocalRegistryHosting")
    published = yaml.safe_load(_hosting(api_client).data["localRegistryHosting.v1"])
    internal = f"local.{namespace}.svc:5000"
    assert published == {
        "host": internal,
        "hostFromClusterNetwork": internal,
        "hostFromContainerRuntime": internal,
    }
    create_registry(api_client, namespace, "second", spec)
    held = wait_condition(
        api_client, namespace, "second", "False", condition_type="LocalRegistryHosting",
        reason="HeldByOther",
    )  # fmt: skip
    assert f"Registry {namespace}/local" in held["message"]
    # The first one lets go of it when it no longer asks: then the second takes it.
    _custom(api_client).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "registries", "local",
        {"spec": {"nodeIntegration": {"localRegistryHosting": False}}},
    )  # fmt: skip
    wait_condition(
        api_client, namespace, "second", "True", condition_type="LocalRegistryHosting", timeout=90
    )
    assert f"second.{namespace}.svc:5000" in _hosting(api_client).data["localRegistryHosting.v1"]
    # Deleting the holder deletes it; a ConfigMap someone else made stays as it is.
    _custom(api_client).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, "registries", "second"
    )
    wait_for("the ConfigMap gone", lambda: _hosting(api_client) is None, 30)
    core = client.CoreV1Api(api_client)
    foreign = {"metadata": {"name": "local-registry-hosting"},
               "data": {"localRegistryHosting.v1": 'host: "localhost:5001"\n'}}  # fmt: skip
    core.create_namespaced_config_map("kube-public", foreign)
    try:
        _custom(api_client).patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "registries", "local",
            {"spec": {"nodeIntegration": {"localRegistryHosting": True}}},
        )  # fmt: skip
        wait_condition(
            api_client, namespace, "local", "False", condition_type="LocalRegistryHosting",
            reason="HeldByOther",
        )  # fmt: skip
        assert _hosting(api_client).data == foreign["data"]
    finally:
        core.delete_namespaced_config_map("local-registry-hosting", "kube-public")


def _ca_state(api_client: client.ApiClient, namespace: str) -> Any:
    secret = client.CoreV1Api(api_client).read_namespaced_secret("rot-ca", namespace)
    record = base64.b64decode(secret.data.get("rotation.json", "")).decode()
    registry = get_registry(api_client, namespace, "rot")
    pods = client.CoreV1Api(api_client).list_namespaced_pod("berth-node").items
    nodes_ready = condition(registry, "NodesReady")
    return record[-300:], nodes_ready, [(p.metadata.name, p.status.phase) for p in pods]
