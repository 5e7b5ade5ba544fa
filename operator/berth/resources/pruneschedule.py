"""The children of a PruneSchedule and the storage-GC Job, built from specs: pure
functions, no I/O.

A PruneSchedule gets a CronJob that runs `berth prune --schedule <ns>/<name>` with a
ServiceAccount of its own. Its rights are split by reach:
- a ClusterRole (cluster-scoped, removed by the operator's finalizer): get/list Pods,
  the workload kinds whose Pod templates name images, and TagPolicies, everywhere;
- a Role in the schedule's namespace (owned, garbage-collected): read the schedule,
  write its status, post Events;
- a Role in the Registry's namespace: read the Registry and exactly the Secrets and
  ConfigMaps that hold its credentials and CA; for storage GC also patch the Registry
  (the maintenance annotation), run Jobs and read their logs. When the Registry lives
  in the schedule's namespace this is the same Role; otherwise an owner reference cannot
  cross namespaces, and the finalizer removes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from berth.api.pruneschedule import PruneScheduleSpec
from berth.api.registry import (
    SINGLE_NODE_ACCESS_MODES,
    AuthMode,
    ManagementState,
    RegistrySpec,
    TLSMode,
)
from berth.constants import (
    DEFAULT_OPERATOR_IMAGE,
    GROUP,
    LABEL_INSTANCE,
)
from berth.resources.registry import (
    CONFIG_DIR,
    DATA_PATH,
    NON_OPENSHIFT_UID,
    RegistryNames,
)
from berth.resources.render import labels, owned_by, render, rights

# Identifies children that an owner reference cannot reach (cluster-scoped, or in the
# Registry's namespace), so that the finalizer and a changed registryRef find them.
LABEL_SCHEDULE_NAMESPACE: Final = f"{GROUP}/prune-schedule-namespace"
COMPONENT: Final = "prune"
APP_NAME: Final = "prune"
DEFAULT_PRUNE_RESOURCES: Final[dict[str, Any]] = {
    "requests": {"cpu": "50m", "memory": "128Mi"},
    "limits": {"memory": "512Mi"},
}
GC_CONFIG_PATH: Final = f"{CONFIG_DIR}/config.yml"
GC_COMPONENT: Final = "garbage-collect"
# Finished GC Jobs stay a day for `kubectl logs`, then the TTL controller removes them.
GC_JOB_TTL: Final = 86400

# What the in-use scan lists, in every namespace.
WORKLOAD_READ_RULES: Final[list[dict[str, list[str]]]] = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
    {
        "apiGroups": ["apps"],
        "resources": ["deployments", "replicasets", "statefulsets", "daemonsets"],
        "verbs": ["get", "list"],
    },
    {"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": ["get", "list"]},
    {"apiGroups": [GROUP], "resources": ["tagpolicies"], "verbs": ["get", "list"]},
]


def garbage_collect_command(executable: str, config_path: str) -> list[str]:
    """The collector's command line; the Job and the tests run exactly this."""
    return [executable, "garbage-collect", config_path]


@dataclass(frozen=True)
class PruneNames:
    """Names of a PruneSchedule's children. RBAC names may contain ':', which keeps
    `<namespace>:<name>` unambiguous where `-` would not be."""

    schedule: str
    namespace: str

    @property
    def service_account(self) -> str:
        return f"{self.schedule}-prune"

    @property
    def cron_job(self) -> str:
        return f"{self.schedule}-prune"

    @property
    def role(self) -> str:
        return f"{self.schedule}-prune"

    @property
    def cluster_role(self) -> str:
        return f"berth:prune:{self.namespace}:{self.schedule}"

    @property
    def registry_role(self) -> str:
        """The Role in the Registry's namespace, when that is another namespace."""
        return self.cluster_role


@dataclass(frozen=True)
class PruneInputs:
    """Everything the builders need: the schedule, its Registry and the platform."""

    owner: dict[str, Any]  # the PruneSchedule: apiVersion, kind, metadata.name/namespace/uid
    spec: PruneScheduleSpec
    registry_name: str
    registry_namespace: str
    registry_spec: RegistrySpec
    image: str = DEFAULT_OPERATOR_IMAGE
    openshift: bool = False

    @property
    def names(self) -> PruneNames:
        metadata = self.owner["metadata"]
        return PruneNames(metadata["name"], metadata["namespace"])

    @property
    def cross_namespace(self) -> bool:
        return self.registry_namespace != self.names.namespace

    @property
    def garbage_collects(self) -> bool:
        """Whether runs may do storage GC. Not from another namespace: GC makes the whole
        registry read-only, which is the Registry owner's call, not a tenant's."""
        return (
            self.spec.garbage_collect.enabled
            and not self.cross_namespace
            and gc_storage(self.registry_spec) is not None
        )


def gc_storage(spec: RegistrySpec) -> str | None:
    """Why storage GC can run on this Registry ("pvc" or "s3"), None when it cannot:
    Unmanaged (not Berth's storage) or emptyDir (the volume lives inside the registry
    Pod; no other Pod can reach it)."""
    if spec.management_state is not ManagementState.MANAGED or spec.storage is None:
        return None
    if spec.storage.pvc is not None:
        return "pvc"
    if spec.storage.s3 is not None:
        return "s3"
    return None


def child_labels(names: PruneNames) -> dict[str, str]:
    return {
        **labels(names.schedule, COMPONENT, name=APP_NAME),
        LABEL_SCHEDULE_NAMESPACE: names.namespace,
    }


def unowned_selector(names: PruneNames) -> str:
    """Label selector for the children the finalizer removes."""
    return f"{LABEL_INSTANCE}={names.schedule},{LABEL_SCHEDULE_NAMESPACE}={names.namespace}"


def registry_secret_names(spec: RegistrySpec, registry_name: str) -> list[str]:
    """The Secrets in the Registry's namespace a prune reads: credentials and CA."""
    names = RegistryNames(registry_name)
    if spec.management_state is ManagementState.UNMANAGED:
        external = spec.external
        assert external is not None  # admission requires it
        found = [
            ref.name
            for ref in (external.credentials_secret_ref, external.ca_secret_ref)
            if ref is not None
        ]
        return sorted(set(found))
    found = []
    if spec.auth.mode is not AuthMode.NONE:
        found.append(names.admin)
    if spec.tls.mode is TLSMode.SECRET and spec.tls.secret_name:
        found.append(spec.tls.secret_name)  # its ca.crt, when it has one
    elif spec.tls.mode is TLSMode.CERT_MANAGER:
        found.append(names.tls)
    return found


def _schedule_rules(names: PruneNames) -> list[dict[str, list[str]]]:
    return [
        {
            "apiGroups": [GROUP],
            "resources": ["pruneschedules"],
            "resourceNames": [names.schedule],
            "verbs": ["get"],
        },
        {
            "apiGroups": [GROUP],
            "resources": ["pruneschedules/status"],
            "resourceNames": [names.schedule],
            "verbs": ["get", "patch"],
        },
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    ]


def _registry_rules(inputs: PruneInputs) -> list[dict[str, list[str]]]:
    spec, registry = inputs.registry_spec, inputs.registry_name
    names = RegistryNames(registry)
    rules: list[dict[str, list[str]]] = [
        {
            "apiGroups": [GROUP],
            "resources": ["registries"],
            "resourceNames": [registry],
            "verbs": ["get", "patch"] if inputs.garbage_collects else ["get"],
        }
    ]
    secrets = registry_secret_names(spec, registry)
    # An empty resourceNames would grant every Secret: leave the rule out instead.
    if secrets:
        rules.append(
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "resourceNames": secrets,
                "verbs": ["get"],
            }
        )
    if spec.management_state is ManagementState.MANAGED:
        rules.append(
            {
                "apiGroups": [""],
                "resources": ["services"],
                "resourceNames": [names.service],
                "verbs": ["get"],
            }
        )
        if spec.tls.mode is TLSMode.SELF_SIGNED:
            rules.append(
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": [names.ca_config_map],
                    "verbs": ["get"],
                }
            )
    if inputs.garbage_collects:
        # Job names are generated per run, so create/get/delete cannot name them.
        rules.append(
            {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "delete"]}
        )
        rules.append({"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]})
    return rules


def desired_children(inputs: PruneInputs) -> list[dict[str, Any]]:
    """The namespaced children in the schedule's namespace, owned by the schedule."""
    names = inputs.names
    child = child_labels(names)
    rules = _schedule_rules(names)
    if not inputs.cross_namespace:
        rules += _registry_rules(inputs)
    account = (names.namespace, names.service_account)
    children = [
        render(
            "common/serviceaccount.yaml.j2",
            name=names.service_account,
            namespace=names.namespace,
            labels=child,
        ),
        *rights(names.role, child, rules, account, names.namespace),
        cron_job(inputs),
    ]
    return [owned_by(manifest, inputs.owner) for manifest in children]


def unowned_children(inputs: PruneInputs) -> list[dict[str, Any]]:
    """Children no owner reference can collect: the ClusterRole and its binding, and
    the Role and RoleBinding in the Registry's namespace when that is another one."""
    names = inputs.names
    child = child_labels(names)
    account = (names.namespace, names.service_account)
    children = rights(names.cluster_role, child, WORKLOAD_READ_RULES, account)
    if inputs.cross_namespace:
        registry_rules = _registry_rules(inputs)
        children += rights(
            names.registry_role, child, registry_rules, account, inputs.registry_namespace
        )
    return children


def cron_job(inputs: PruneInputs) -> dict[str, Any]:
    names, spec = inputs.names, inputs.spec
    return render(
        "prune/cronjob.yaml.j2",
        names=names,
        labels=child_labels(names),
        schedule=spec.schedule,
        time_zone=spec.time_zone,
        suspend=spec.suspend,
        successful_history=spec.successful_jobs_history_limit,
        failed_history=spec.failed_jobs_history_limit,
        image=inputs.image,
        command=["berth", "prune", "--schedule", f"{names.namespace}/{names.schedule}"],
        resources=spec.resources if spec.resources is not None else DEFAULT_PRUNE_RESOURCES,
        run_as_uid=None if inputs.openshift else NON_OPENSHIFT_UID,
    )


def single_node_volume(spec: RegistrySpec) -> bool:
    """Whether the registry's data volume mounts on one node only (ReadWriteOnce)."""
    pvc = spec.storage.pvc if spec.storage else None
    return pvc is not None and bool(SINGLE_NODE_ACCESS_MODES.intersection(pvc.access_modes))


def gc_job(
    registry: dict[str, Any],
    spec: RegistrySpec,
    *,
    job_name: str,
    node_name: str | None,
    openshift: bool,
    active_deadline: int,
    executable: str = "registry",
) -> dict[str, Any]:
    """The Job that runs the garbage collector on a Managed registry's storage: the
    registry's image, its config (mounted where the Deployment mounts it) and its data
    volume or S3 keys. `node_name` pins it to a node (a ReadWriteOnce volume's)."""
    storage = spec.storage
    assert storage is not None and gc_storage(spec) is not None
    names = RegistryNames(registry["metadata"]["name"])
    claim = None
    if storage.pvc is not None:
        claim = storage.pvc.existing_claim or names.pvc
    s3_secret = storage.s3.secret_ref.name if storage.s3 and storage.s3.secret_ref else None
    job = render(
        "prune/gc-job.yaml.j2",
        job_name=job_name,
        namespace=registry["metadata"]["namespace"],
        names=names,
        labels=labels(names.registry, GC_COMPONENT),
        active_deadline=active_deadline,
        ttl=GC_JOB_TTL,
        run_as_uid=None if openshift else NON_OPENSHIFT_UID,
        node_name=node_name,
        node_selector=spec.node_selector or {},
        tolerations=spec.tolerations or [],
        image=spec.image,
        command=garbage_collect_command(executable, GC_CONFIG_PATH),
        s3_secret=s3_secret,
        resources=spec.resources or {},
        config_dir=CONFIG_DIR,
        data_volume=claim,
        data_path=DATA_PATH,
    )
    return owned_by(job, registry)
