"""The Helm chart and the kustomize base, without a cluster: `helm lint`,
what `helm template` renders, the strict values schema, the CRD copies, and that
`kubectl kustomize manifests/` renders the chart's objects.

helm and kubectl are the test bed's own builds (hack/testbin)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

import installgen
from berth import cli
from testbed.testbin import ensure_built

CHART = installgen.CHART_DIR
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
CHART_META = yaml.safe_load((CHART / "Chart.yaml").read_text())
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
CRD_NAMES = {
    yaml.safe_load(path.read_text())["metadata"]["name"]
    for path in installgen.CRDS_DIR.glob("*.yaml")
}
# Values that switch on every optional branch of the templates at once.
EVERYTHING = [
    "--set", "operator.watchNamespaces={team-a,team-b}",
    "--set", "operator.verbose=true",
    "--set", "operator.extraEnv[0].name=TZ,operator.extraEnv[0].value=UTC",
    "--set", "metrics.serviceMonitor.enabled=true",
    "--set", "metrics.serviceMonitor.labels.release=prometheus",
    "--set", "serviceAccount.annotations.example\\.com/role=berth",
    "--set", "imagePullSecrets[0].name=pull",
    "--set", "podAnnotations.example\\.com/a=b,podLabels.team=platform",
    "--set", "nodeSelector.kubernetes\\.io/os=linux",
    "--set", "tolerations[0].key=dedicated,tolerations[0].operator=Exists",
    "--set", "priorityClassName=system-cluster-critical",
    "--set", "image.digest=sha256:" + "a" * 64,
]  # fmt: skip


@pytest.fixture(scope="module")
def helm() -> Path:
    return ensure_built() / "helm"


@pytest.fixture(scope="module")
def kubectl() -> Path:
    return ensure_built() / "kubectl"


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), *args], capture_output=True, text=True, check=False)


def render(helm: Path, *args: str, release: str = installgen.RELEASE) -> list[dict[str, Any]]:
    result = run_helm(
        helm, "template", release, str(CHART), "--namespace", installgen.NAMESPACE, *args
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", f"helm template warned: {result.stderr}"
    return installgen.objects(result.stdout)


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["operator"]
    return dict(containers[0])


# -- lint and render ---------------------------------------------------------------------


@pytest.mark.parametrize("values", [[], EVERYTHING], ids=["defaults", "everything"])
def test_helm_lint_strict_is_clean(helm: Path, values: list[str]) -> None:
    result = run_helm(helm, "lint", "--strict", str(CHART), *values)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "1 chart(s) linted, 0 chart(s) failed" in output
    assert "[WARNING]" not in output, output
    assert "[ERROR]" not in output, output


def test_default_rendering_is_the_operator_and_its_crds(helm: Path) -> None:
    objects = render(helm)
    assert {installgen.object_key(obj) for obj in objects} == {
        *(("apiextensions.k8s.io/v1", "CustomResourceDefinition", "", n) for n in CRD_NAMES),
        ("v1", "ServiceAccount", "berth-system", "berth"),
        ("rbac.authorization.k8s.io/v1", "ClusterRole", "", "berth"),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "", "berth"),
        ("v1", "Service", "berth-system", "berth-metrics"),
        ("v1", "Service", "berth-system", "berth-notifications"),
        ("apps/v1", "Deployment", "berth-system", "berth"),
    }
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "berth"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/version"] == CHART_META["appVersion"]


def test_everything_renders_and_names_follow_the_release(helm: Path) -> None:
    objects = render(helm, *EVERYTHING, release="ops")
    assert one(objects, "ServiceMonitor")["spec"]["endpoints"] == [
        {"port": "metrics", "interval": "30s"}
    ]
    binding = one(objects, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == one(objects, "ClusterRole")["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "ops-berth", "namespace": installgen.NAMESPACE}
    ]
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "ops-berth"
    assert pod["imagePullSecrets"] == [{"name": "pull"}]
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]


# -- the values schema -------------------------------------------------------------------


def _object_schemas(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if "properties" in schema:
        found.append((path or "<root>", schema))
        for key, sub in schema["properties"].items():
            found += _object_schemas(sub, f"{path}.{key}")
    return found


def test_schema_is_strict_and_knows_every_default_value() -> None:
    for path, schema in _object_schemas(SCHEMA):
        assert schema.get("additionalProperties") is False, f"{path} accepts unknown keys"

    def walk(values: dict[str, Any], schema: dict[str, Any], path: str) -> None:
        for key, value in values.items():
            assert key in schema["properties"], f"values.yaml {path}{key} is not in the schema"
            sub = schema["properties"][key]
            if isinstance(value, dict) and "properties" in sub:
                walk(value, sub, f"{path}{key}.")

    walk(VALUES, SCHEMA, "")


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("imagee.tag=1", "imagee"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("crds.enabled=maybe", "enabled"),
        ("crds.kep=true", "kep"),
        ("operator.healthPort=0", "healthPort"),
        ("operator.watchNamespaces={Not_A_Namespace}", "watchNamespaces"),
        ("metrics.serviceMonitor.interval=soon", "interval"),
        ("image.digest=latest", "digest"),
    ],
)
def test_schema_rejects_unknown_keys_and_bad_values(
    helm: Path, setting: str, complaint: str
) -> None:
    result = run_helm(helm, "template", "berth", str(CHART), "--set", setting)
    assert result.returncode != 0, f"--set {setting} was accepted"
    assert "values don't meet the specifications of the schema" in result.stderr
    assert complaint in result.stderr


def test_service_monitor_needs_the_metrics_service(helm: Path) -> None:
    result = run_helm(
        helm,
        "template",
        "berth",
        str(CHART),
        "--set",
        "metrics.serviceMonitor.enabled=true,metrics.service.enabled=false",
    )
    assert result.returncode != 0
    assert "metrics.serviceMonitor.enabled needs metrics.service.enabled" in result.stderr


# -- CRDs ----------------------------------------------------------------------------------


def test_chart_crd_templates_are_generated_from_crds() -> None:
    """`make chart-crds` output is committed; a CRD change without it fails here."""
    on_disk = {path.name: path.read_text() for path in installgen.CHART_CRDS_DIR.glob("*.yaml")}
    assert on_disk == installgen.chart_crd_templates(), "run `make chart-crds`"


@pytest.mark.parametrize(
    ("settings", "installed", "kept"),
    [([], True, True), (["crds.keep=false"], True, False), (["crds.enabled=false"], False, False)],
)
def test_crds_enabled_and_keep(
    helm: Path, settings: list[str], installed: bool, kept: bool
) -> None:
    args = [arg for setting in settings for arg in ("--set", setting)]
    crds = of_kind(render(helm, *args), "CustomResourceDefinition")
    generated = {
        doc["metadata"]["name"]: doc
        for path in installgen.CRDS_DIR.glob("*.yaml")
        for doc in [yaml.safe_load(path.read_text())]
    }
    if not installed:
        assert crds == []
        return
    assert {crd["metadata"]["name"] for crd in crds} == set(generated)
    for crd in crds:
        assert crd["spec"] == generated[crd["metadata"]["name"]]["spec"]
        annotations = crd["metadata"].get("annotations") or {}
        assert annotations == ({"helm.sh/resource-policy": "keep"} if kept else {})
        assert crd["metadata"]["labels"]["app.kubernetes.io/component"] == "crds"


# -- the operator Deployment -------------------------------------------------------------


def test_deployment_is_one_restricted_operator_with_probes(helm: Path) -> None:
    objects = render(helm)
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "runAsUser" not in pod["securityContext"]  # OpenShift assigns one
    operator = container(objects)
    security = operator["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    ports = {port["name"]: port["containerPort"] for port in operator["ports"]}
    assert ports == {"health": 8080, "metrics": 8081, "notifications": 8082}
    env = {e["name"]: e.get("value") for e in operator["env"]}
    # Managed registries notify the operator through its Service.
    assert env["BERTH_NOTIFICATIONS_URL"] == (
        "http://berth-notifications.berth-system.svc:8082/notifications"
    )
    assert "--notifications-address=0.0.0.0:8082" in operator["args"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert operator[probe]["httpGet"] == {"path": "/healthz", "port": "health"}, probe
    # The Deployment's selector picks out its Pods and nothing the operator creates
    # (Berth's children say app.kubernetes.io/managed-by: berth and name: registry).
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert selector["app.kubernetes.io/component"] == "operator"
    services = {s["metadata"]["name"]: s for s in of_kind(objects, "Service")}
    assert sorted(services) == ["berth-metrics", "berth-notifications"]
    for name, port in (("berth-metrics", "metrics"), ("berth-notifications", "notifications")):
        assert services[name]["spec"]["selector"] == selector
        assert services[name]["spec"]["ports"][0]["targetPort"] == port


def _operator_params(args: list[str]) -> dict[str, Any]:
    """The chart's container args parsed by the real `berth` command line."""
    assert args[0] in cli.main.commands, f"`berth {args[0]}` is not a command"
    command = cli.main.commands[args[0]]
    with command.make_context(args[0], list(args[1:])) as ctx:
        return dict(ctx.params)


def test_args_are_options_of_the_berth_command_and_match_the_ports(helm: Path) -> None:
    objects = render(helm)
    operator = container(objects)
    params = _operator_params(operator["args"])
    assert params["all_namespaces"] is True
    assert params["namespaces"] == ()
    assert params["standalone"] is True
    assert params["verbose"] is False
    assert params["liveness"] == "http://0.0.0.0:8080/healthz"
    assert params["metrics_port"] == 8081

    watched = container(render(helm, *EVERYTHING))
    params = _operator_params(watched["args"])
    assert params["namespaces"] == ("team-a", "team-b")
    assert params["all_namespaces"] is False
    assert params["verbose"] is True
    assert {"name": "TZ", "value": "UTC"} in watched["env"]


REPOSITORY = VALUES["image"]["repository"]
DIGEST = "sha256:" + "b" * 64


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ([], f"{REPOSITORY}:{CHART_META['appVersion']}"),
        (["image.tag=1.2.3"], f"{REPOSITORY}:1.2.3"),
        (["image.repository=registry.example/b,image.tag=1.2.3"], "registry.example/b:1.2.3"),
        ([f"image.tag=1.2.3,image.digest={DIGEST}"], f"{REPOSITORY}@{DIGEST}"),
    ],
)
def test_operator_image_is_the_image_it_runs_children_from(
    helm: Path, settings: list[str], expected: str
) -> None:
    args = [arg for setting in settings for arg in ("--set", setting)]
    operator = container(render(helm, *args))
    assert operator["image"] == expected
    env = {item["name"]: item.get("value") for item in operator["env"]}
    assert env["BERTH_OPERATOR_IMAGE"] == expected


# -- RBAC --------------------------------------------------------------------------------


def allows(
    rules: list[dict[str, Any]], group: str, resource: str, verb: str, name: str | None = None
) -> bool:
    return any(
        group in rule["apiGroups"]
        and resource in rule["resources"]
        and verb in rule["verbs"]
        and (not rule.get("resourceNames") or name in rule["resourceNames"])
        for rule in rules
    )


def test_rbac_names_everything_and_binds_only_auth_delegator(helm: Path) -> None:
    rules = one(render(helm), "ClusterRole")["rules"]
    for rule in rules:
        for field in ("apiGroups", "resources", "verbs"):
            assert rule[field], f"{rule} has no {field}"
            assert not any("*" in item for item in rule[field]), f"wildcard in {rule}"
        assert not {"escalate", "impersonate"} & set(rule["verbs"]), rule
        # Berth writes with PATCH only; OpenShift checks `update` on custom-host for PATCHes.
        if "update" in rule["verbs"]:
            assert rule["resources"] == ["routes/custom-host"], rule
        if "bind" in rule["verbs"]:
            assert rule["resources"] == ["clusterroles"]
            assert rule["resourceNames"] == ["system:auth-delegator"]
    rbac = "rbac.authorization.k8s.io"
    assert allows(rules, rbac, "clusterroles", "bind", "system:auth-delegator")
    assert not allows(rules, rbac, "clusterroles", "bind", "cluster-admin")
    # The operator reads but never writes CRDs: the chart (or `berth crds apply`) does.
    assert not allows(rules, "apiextensions.k8s.io", "customresourcedefinitions", "patch")


def test_rbac_covers_every_child_of_a_registry(helm: Path) -> None:
    """The table of a Registry's children is what the operator writes: for each kind in
    it, read and apply (get, create, patch), delete where the table deletes it, and
    list and watch where the operator watches it."""
    from berth.resources.registry import CHILDREN

    rules = one(render(helm), "ClusterRole")["rules"]
    for child in CHILDREN:
        group, _, plural = child.kind.resource
        verbs = {"get", "create", "patch"}
        if child.deleted_ever:
            verbs.add("delete")
        if child.watched:
            verbs |= {"list", "watch"}
        for verb in sorted(verbs):
            assert allows(rules, group, plural, verb), (child.kind.kind, child.name, verb)


def test_rbac_holds_what_the_prune_cluster_role_hands_out(helm: Path) -> None:
    """The API server refuses a ClusterRole granting more than its creator holds."""
    from berth.resources.pruneschedule import WORKLOAD_READ_RULES

    rules = one(render(helm), "ClusterRole")["rules"]
    for granted in WORKLOAD_READ_RULES:
        for group in granted["apiGroups"]:
            for resource in granted["resources"]:
                for verb in granted["verbs"]:
                    assert allows(rules, group, resource, verb), (group, resource, verb)


# -- kustomize -----------------------------------------------------------------------------


def test_manifests_are_generated_from_the_chart(helm: Path) -> None:
    """`make manifests` output is committed; a chart change without it fails here."""
    wanted = installgen.manifest_files(installgen.helm_template(helm))
    on_disk = {
        str(path.relative_to(installgen.MANIFESTS_DIR)): path.read_text()
        for path in installgen.generated_manifest_paths()
    }
    assert on_disk == wanted, "run `make manifests`"


def test_kustomize_base_renders_the_charts_objects(helm: Path, kubectl: Path) -> None:
    """`kubectl apply -k manifests/` installs what the chart installs with default values.

    Compared after `installgen.normalised`, which drops only the `helm.sh/chart` and
    `app.kubernetes.io/managed-by` labels and the `helm.sh/resource-policy` annotation;
    the base's one extra object is its Namespace."""
    chart = {
        installgen.object_key(obj): installgen.normalised(obj)
        for obj in installgen.objects(installgen.helm_template(helm))
    }
    base = {
        installgen.object_key(obj): installgen.normalised(obj)
        for obj in installgen.objects(installgen.kustomize(kubectl))
    }
    namespace = ("v1", "Namespace", "", installgen.NAMESPACE)
    assert set(base) - set(chart) == {namespace}
    assert base[namespace]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == (
        "restricted"
    )
    del base[namespace]
    assert set(base) == set(chart)
    for key, obj in chart.items():
        assert base[key] == obj, f"{key} differs between the chart and manifests/"


def test_notifications_can_be_switched_off(helm: Path) -> None:
    objects = render(helm, "--set", "operator.notifications.enabled=false")
    services = [o["metadata"]["name"] for o in objects if o["kind"] == "Service"]
    assert services == ["berth-metrics"]
    operator = container(objects)
    assert "--notifications-address=" in operator["args"]
    assert "BERTH_NOTIFICATIONS_URL" not in {e["name"] for e in operator["env"]}
    assert "notifications" not in {p["name"] for p in operator["ports"]}
