"""The install paths on the real control plane.

- Every object the chart renders (default values, and every optional branch) and every
  object of the kustomize base passes a server-side apply dry run.
- The chart's RBAC is enough: the chart's objects are applied for real, and the real
  `berth operator` (a subprocess, with the Deployment's own arguments) runs with a token
  of the chart's ServiceAccount. The samples are applied; every Registry and
  PruneSchedule becomes Ready and is deleted again, and the operator's log has no
  refused request.

The RBAC test needs to be the only operator in the cluster: with the in-process one of
the `operator` fixture also running, the objects could be reconciled by an operator with
admin rights. tests/integration/conftest.py runs this module first, and the test
checks that no in-process operator runs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

import installgen
from berth.constants import GROUP, VERSION
from berth.k8s.api import Kube
from berth.k8s.kinds import kind_of
from testbed.cluster import KWOK_NAMESPACE_ANNOTATIONS, free_port
from testbed.node import RealNode
from testbed.testbin import REPO_ROOT, ensure_built

pytestmark = pytest.mark.cluster

FIELD_MANAGER = "berth-install-test"
SAMPLES = REPO_ROOT / "manifests" / "samples"
# The samples that belong together in one namespace (two of them name a PruneSchedule
# "nightly"): the single-kind samples around Registry "registry", and the team example.
SAMPLE_SETS = [["registry.yaml", "tagpolicy.yaml", "pruneschedule.yaml"], ["dev-stage-prod.yaml"]]
# What kopf and the client libraries log when the API server refuses a request.
REFUSAL = re.compile(r"forbidden|not enough permissions|\(403\)|code\W{0,4}403\b", re.I)


@pytest.fixture(scope="module")
def bin_dir() -> Path:
    return ensure_built()


@pytest.fixture
def kube(kubeconfig: Path) -> Iterator[Kube]:
    admin = Kube.from_environment(str(kubeconfig))
    yield admin
    admin.close()


def server_side_apply(kube: Kube, obj: dict[str, Any], *, dry_run: bool) -> dict[str, Any]:
    metadata = obj["metadata"]
    query = {"fieldManager": FIELD_MANAGER, "force": "true"}
    if dry_run:
        query["dryRun"] = "All"
    return kube.request_sync(
        "PATCH",
        kind_of(obj).path(metadata.get("namespace"), metadata["name"]),
        query=query,
        body=obj,
        content_type="application/apply-patch+yaml",
    )


def dry_run_all(kube: Kube, objects: list[dict[str, Any]]) -> None:
    refused = []
    for obj in objects:
        try:
            answer = server_side_apply(kube, obj, dry_run=True)
        except ApiException as error:
            refused.append(f"{installgen.object_key(obj)}: {error.status} {error.body}")
            continue
        assert answer["kind"] == obj["kind"]
        assert answer["metadata"]["name"] == obj["metadata"]["name"]
    assert not refused, "\n".join(refused)


# -- server-side dry runs ----------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        [],
        [
            "--set", "operator.watchNamespaces={team-a,team-b},operator.verbose=true",
            "--set", "crds.keep=false,image.digest=sha256:" + "c" * 64,
            "--set", "nodeSelector.kubernetes\\.io/os=linux",
            "--set", "priorityClassName=system-cluster-critical",
            "--set", "tolerations[0].key=dedicated,tolerations[0].operator=Exists",
        ],
    ],
    ids=["defaults", "options"],
)  # fmt: skip
def test_chart_passes_a_server_side_dry_run(
    bin_dir: Path, kube: Kube, namespace: str, values: list[str]
) -> None:
    rendered = installgen.helm_template(
        bin_dir / "helm", *values, release="dry-run", namespace=namespace
    )
    objects = installgen.objects(rendered)
    assert {obj["kind"] for obj in objects} >= {"CustomResourceDefinition", "Deployment"}
    dry_run_all(kube, objects)


def test_kustomize_base_passes_a_server_side_dry_run(bin_dir: Path, kube: Kube) -> None:
    objects = installgen.objects(installgen.kustomize(bin_dir / "kubectl"))
    [namespace] = [obj for obj in objects if obj["kind"] == "Namespace"]
    # Namespaced objects cannot be dry-run into a namespace that does not exist.
    existed = kube.request_sync("GET", "/api/v1/namespaces")["items"]
    created = namespace["metadata"]["name"] not in {n["metadata"]["name"] for n in existed}
    server_side_apply(kube, namespace, dry_run=not created)
    try:
        dry_run_all(kube, [obj for obj in objects if obj is not namespace])
    finally:
        if created:
            kube.request_sync("DELETE", f"/api/v1/namespaces/{namespace['metadata']['name']}")


# -- RBAC is sufficient ------------------------------------------------------------------


def _token_kubeconfig(api_client: client.ApiClient, token: str, path: Path) -> Path:
    configuration = api_client.configuration
    cluster: dict[str, Any] = {"server": configuration.host}
    if configuration.ssl_ca_cert:
        cluster["certificate-authority"] = configuration.ssl_ca_cert
    else:
        cluster["insecure-skip-tls-verify"] = not configuration.verify_ssl
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "test", "cluster": cluster}],
                "users": [{"name": "berth", "user": {"token": token}}],
                "contexts": [{"name": "berth", "context": {"cluster": "test", "user": "berth"}}],
                "current-context": "berth",
            }
        )
    )
    return path


def _condition(obj: dict[str, Any], condition_type: str) -> dict[str, Any]:
    for item in (obj.get("status") or {}).get("conditions") or []:
        if item["type"] == condition_type:
            return dict(item)
    return {}


class OperatorProcess:
    """`berth operator` as a subprocess, its log in a file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self._log = log.open("wb")
        berth = Path(sys.executable).with_name("berth")
        self.process = subprocess.Popen(
            [str(berth), *args], env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def refusals(self) -> list[str]:
        return [line for line in self.log().splitlines() if REFUSAL.search(line)]

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(
                f"the operator exited with {self.process.returncode}:\n{self.log()[-4000:]}"
            )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()


def _chart_args(deployment: dict[str, Any], health_port: int, metrics_port: int) -> list[str]:
    """The Deployment's own arguments, with loopback ports of our own."""
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    args = []
    for arg in container["args"]:
        if arg.startswith("--liveness="):
            arg = f"--liveness=http://127.0.0.1:{health_port}/healthz"
        elif arg.startswith("--metrics-port="):
            arg = f"--metrics-port={metrics_port}"
        args.append(arg)
    assert args != container["args"], "the chart no longer passes --liveness/--metrics-port"
    return args


def _chart_env(deployment: dict[str, Any], kubeconfig: Path) -> dict[str, str]:
    """Our environment without in-cluster hints, plus the Deployment's env and KUBECONFIG."""
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    env.update({item["name"]: item["value"] for item in container.get("env") or []})
    env["KUBECONFIG"] = str(kubeconfig)
    return env


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def until(what: str, check: Callable[[], bool], timeout: float, context: Callable[[], str]) -> None:
    """Poll `check` (whose exceptions end the wait) until True, or fail with `context()`."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{context()}")
        time.sleep(0.5)


def _create_namespace(core: client.CoreV1Api, name: str, labels: dict[str, str]) -> str:
    labels = {"berth.dev/test": "true", **labels}
    metadata = {"name": name, "labels": labels, "annotations": KWOK_NAMESPACE_ANNOTATIONS}
    core.create_namespace({"metadata": metadata})
    return name


def _default_storage_class(api_client: client.ApiClient) -> str:
    classes = client.StorageV1Api(api_client).list_storage_class().items
    default = "storageclass.kubernetes.io/is-default-class"
    for storage_class in classes:
        if (storage_class.metadata.annotations or {}).get(default) == "true":
            return str(storage_class.metadata.name)
    raise AssertionError(f"no default StorageClass among {[c.metadata.name for c in classes]}")


def _service_account_kubeconfig(
    api_client: client.ApiClient, namespace: str, service_account: str, path: Path
) -> Path:
    """A kubeconfig holding a token of the ServiceAccount (TokenRequest API), checked to
    be that identity and no more."""
    token = (
        client.CoreV1Api(api_client)
        .create_namespaced_service_account_token(
            service_account, namespace, {"spec": {"expirationSeconds": 3600}}
        )
        .status.token
    )
    _token_kubeconfig(api_client, token, path)
    as_sa = Kube.from_environment(str(path))
    try:
        with pytest.raises(ApiException) as refused:
            as_sa.request_sync("GET", "/api/v1/persistentvolumes")
    finally:
        as_sa.close()
    assert refused.value.status == 403
    assert f"system:serviceaccount:{namespace}:{service_account}" in str(refused.value.body)
    return path


def _wide_registry(api_client: client.ApiClient) -> dict[str, Any]:
    """The sample Registry with the children the samples do not have: a
    PodDisruptionBudget, an Ingress, a PVC of a named StorageClass, htpasswd auth."""
    wide = yaml.safe_load((SAMPLES / "registry.yaml").read_text())
    wide["metadata"]["name"] = "wide"
    wide["spec"].update(
        replicas=2,
        storage={
            "pvc": {
                "size": "1Gi",
                "accessModes": ["ReadWriteMany"],
                "storageClassName": _default_storage_class(api_client),
            }
        },
        auth={"mode": "Htpasswd"},
        expose={"ingress": {"host": "registry.example.test"}},
    )
    return dict(wide)


PLURALS = {"Registry": "registries", "TagPolicy": "tagpolicies", "PruneSchedule": "pruneschedules"}


def test_the_operator_works_with_the_charts_rbac(
    bin_dir: Path,
    kube: Kube,
    api_client: client.ApiClient,
    tmp_path: Path,
    session_node: RealNode | None,
) -> None:
    running = [t.name for t in threading.enumerate() if t.name == "berth-operator" and t.is_alive()]
    assert not running, (
        "the in-process operator of the `operator` fixture is running: this test must be the "
        "only operator (tests/integration/conftest.py runs this module first)"
    )
    core = client.CoreV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    suffix = uuid.uuid4().hex[:6]
    release = f"berth-{suffix}"
    # Pod Security "restricted" is enforced where the operator runs.
    install_ns = _create_namespace(
        core, f"berth-system-{suffix}", {"pod-security.kubernetes.io/enforce": "restricted"}
    )
    sample_namespaces = [
        _create_namespace(core, f"t-samples-{suffix}-{i}", {"team": "web"})
        for i in range(len(SAMPLE_SETS))
    ]
    # An image that is neither default: the children must run the chart's image.
    image = f"registry.example/berth-under-test:{suffix}"
    # The node agent runs on the real node: the chart is told where that node keeps its
    # files, as an install on such a node would be.
    agent_values = [
        f"--set=nodeAgent.{key}={value}"
        for key, value in (session_node.agent_settings() if session_node else {}).items()
    ]
    objects = installgen.objects(
        installgen.helm_template(
            bin_dir / "helm",
            # --set-string: a suffix of digits only (e.g. 825720) would be a number.
            "--set-string", f"image.repository={image.split(':')[0]},image.tag={suffix}",
            *agent_values,
            release=release,
            namespace=install_ns,
        )
    )  # fmt: skip
    [deployment] = [obj for obj in objects if obj["kind"] == "Deployment"]
    operator: OperatorProcess | None = None
    try:
        # Install for real; CRDs first (they may already be there, from crds/: the same).
        for obj in sorted(objects, key=lambda o: o["kind"] != "CustomResourceDefinition"):
            server_side_apply(kube, obj, dry_run=False)
        apps = client.AppsV1Api(api_client)
        until(
            "the operator Deployment to be Available (its Pod admitted as restricted)",
            lambda: (
                apps.read_namespaced_deployment(release, install_ns).status.available_replicas == 1
            ),
            60,
            lambda: str(apps.read_namespaced_deployment(release, install_ns).status),
        )

        service_account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        sa_kubeconfig = _service_account_kubeconfig(
            api_client, install_ns, service_account, tmp_path / "sa-kubeconfig"
        )
        health_port = free_port()
        operator = OperatorProcess(
            _chart_args(deployment, health_port, free_port()),
            _chart_env(deployment, sa_kubeconfig),
            tmp_path / "operator.log",
        )

        def log_tail() -> str:
            assert operator is not None
            return f"operator log:\n{operator.log()[-6000:]}"

        def healthy() -> bool:
            assert operator is not None
            operator.check_alive()
            return _healthy(health_port)

        until("the operator's /healthz", healthy, 60, log_tail)

        created: list[tuple[str, str, str]] = []  # (namespace, plural, name)
        for sample_ns, files in zip(sample_namespaces, SAMPLE_SETS, strict=True):
            for file in files:
                for doc in yaml.safe_load_all((SAMPLES / file).read_text()):
                    plural = PLURALS[doc["kind"]]
                    custom.create_namespaced_custom_object(GROUP, VERSION, sample_ns, plural, doc)
                    created.append((sample_ns, plural, doc["metadata"]["name"]))
        assert {plural for _, plural, _ in created} == set(PLURALS.values())
        wide = _wide_registry(api_client)
        custom.create_namespaced_custom_object(
            GROUP, VERSION, sample_namespaces[0], "registries", wide
        )
        created.append((sample_namespaces[0], "registries", wide["metadata"]["name"]))

        def ready(namespace: str, plural: str, name: str) -> bool:
            assert operator is not None
            operator.check_alive()
            # A refusal ends the wait at once: it is the failure this test looks for.
            assert operator.refusals() == [], "\n".join(operator.refusals())
            obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
            return _condition(obj, "Ready").get("status") == "True"

        def status(namespace: str, plural: str, name: str) -> str:
            obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
            return f"status: {obj.get('status')}\n{log_tail()}"

        # TagPolicies are not waited for: no reconciler serves them yet, and their imports
        # need docker.io, which the test bed cannot reach.
        for key in created:
            if key[1] != "tagpolicies":
                until(
                    f"Ready=True on {key[1]} {key[0]}/{key[2]}",
                    lambda key=key: ready(*key),
                    90,
                    lambda key=key: status(*key),
                )

        # The token servers and prune CronJobs run the operator's image (BERTH_OPERATOR_IMAGE).
        apps, batch = client.AppsV1Api(api_client), client.BatchV1Api(api_client)
        children_images = {
            container.image
            for namespace in sample_namespaces
            for workload in [
                *apps.list_namespaced_deployment(
                    namespace, label_selector="app.kubernetes.io/component=token-server"
                ).items,
                *(job.spec.job_template for job in batch.list_namespaced_cron_job(namespace).items),
            ]
            for container in workload.spec.template.spec.containers
        }
        assert children_images == {image}

        # Deletion runs the finalizers: pull Secrets revoked in every namespace, the token
        # servers' ClusterRoleBindings and the prune ClusterRoles removed.
        for namespace, plural, name in created:
            custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)

        def gone(namespace: str, plural: str, name: str) -> bool:
            assert operator is not None
            operator.check_alive()
            assert operator.refusals() == [], "\n".join(operator.refusals())
            try:
                custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
            except ApiException as error:
                if error.status == 404:
                    return True
                raise
            return False

        until("the samples to be deleted", lambda: all(gone(*c) for c in created), 60, log_tail)
        assert operator.refusals() == [], "\n".join(operator.refusals())
        assert _cluster_rbac_about(kube, sample_namespaces) == []  # finalizers left nothing
    finally:
        if operator is not None:
            operator.stop()
        for namespace in [*sample_namespaces, install_ns]:
            core.delete_namespace(namespace)
        for obj in objects:
            if obj["kind"] in ("ClusterRole", "ClusterRoleBinding"):
                kube.request_sync("DELETE", kind_of(obj).path(None, obj["metadata"]["name"]))
        for path in _cluster_rbac_about(kube, sample_namespaces):  # after a failure
            kube.request_sync("DELETE", path)


def _cluster_rbac_about(kube: Kube, namespaces: list[str]) -> list[str]:
    """Paths of ClusterRoles and ClusterRoleBindings that name one of `namespaces`."""
    found = []
    for plural in ("clusterrolebindings", "clusterroles"):
        path = f"/apis/rbac.authorization.k8s.io/v1/{plural}"
        for item in kube.request_sync("GET", path)["items"]:
            name = item["metadata"]["name"]
            if any(ns in json.dumps(item.get("subjects") or name) for ns in namespaces):
                found.append(f"{path}/{name}")
    return found
