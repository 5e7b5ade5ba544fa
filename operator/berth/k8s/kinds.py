"""The kinds Berth reads and writes, and where they live in the API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from berth.constants import (
    API_VERSION,
    PRUNE_SCHEDULE_KIND,
    PRUNE_SCHEDULE_PLURAL,
    REGISTRY_KIND,
    REGISTRY_PLURAL,
    TAG_POLICY_KIND,
    TAG_POLICY_PLURAL,
)


@dataclass(frozen=True)
class Kind:
    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def resource(self) -> tuple[str, str, str]:
        """(group, version, plural), as kopf names a resource."""
        group, _, version = self.api_version.rpartition("/")
        return group, version, self.plural

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        base = (
            f"/api/{self.api_version}"
            if "/" not in self.api_version
            else f"/apis/{self.api_version}"
        )
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return f"{base}/{name}" if name else base


_KINDS = [
    Kind("v1", "Namespace", "namespaces", namespaced=False),
    Kind("v1", "Node", "nodes", namespaced=False),
    Kind("v1", "ServiceAccount", "serviceaccounts"),
    Kind("v1", "ConfigMap", "configmaps"),
    Kind("v1", "Secret", "secrets"),
    Kind("v1", "Service", "services"),
    Kind("v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
    Kind("v1", "Pod", "pods"),
    Kind("v1", "Event", "events"),
    Kind("apps/v1", "Deployment", "deployments"),
    Kind("apps/v1", "ReplicaSet", "replicasets"),
    Kind("apps/v1", "StatefulSet", "statefulsets"),
    Kind("apps/v1", "DaemonSet", "daemonsets"),
    Kind("batch/v1", "Job", "jobs"),
    Kind("batch/v1", "CronJob", "cronjobs"),
    Kind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    Kind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies"),
    Kind("networking.k8s.io/v1", "Ingress", "ingresses"),
    Kind("route.openshift.io/v1", "Route", "routes"),
    Kind("rbac.authorization.k8s.io/v1", "Role", "roles"),
    Kind("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings"),
    Kind("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", namespaced=False),
    Kind(
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        namespaced=False,
    ),
    Kind(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        namespaced=False,
    ),
    Kind("storage.k8s.io/v1", "StorageClass", "storageclasses", namespaced=False),
    Kind("authentication.k8s.io/v1", "TokenReview", "tokenreviews", namespaced=False),
    Kind("cert-manager.io/v1", "Certificate", "certificates"),
    Kind(API_VERSION, REGISTRY_KIND, REGISTRY_PLURAL),
    Kind(API_VERSION, TAG_POLICY_KIND, TAG_POLICY_PLURAL),
    Kind(API_VERSION, PRUNE_SCHEDULE_KIND, PRUNE_SCHEDULE_PLURAL),
]
KINDS: dict[tuple[str, str], Kind] = {(k.api_version, k.kind): k for k in _KINDS}


NAMESPACE: Final = KINDS[("v1", "Namespace")]
NODE: Final = KINDS[("v1", "Node")]
SERVICE_ACCOUNT: Final = KINDS[("v1", "ServiceAccount")]
CONFIG_MAP: Final = KINDS[("v1", "ConfigMap")]
SECRET: Final = KINDS[("v1", "Secret")]
SERVICE: Final = KINDS[("v1", "Service")]
PVC: Final = KINDS[("v1", "PersistentVolumeClaim")]
POD: Final = KINDS[("v1", "Pod")]
DEPLOYMENT: Final = KINDS[("apps/v1", "Deployment")]
REPLICA_SET: Final = KINDS[("apps/v1", "ReplicaSet")]
STATEFUL_SET: Final = KINDS[("apps/v1", "StatefulSet")]
DAEMON_SET: Final = KINDS[("apps/v1", "DaemonSet")]
JOB: Final = KINDS[("batch/v1", "Job")]
CRON_JOB: Final = KINDS[("batch/v1", "CronJob")]
PDB: Final = KINDS[("policy/v1", "PodDisruptionBudget")]
NETWORK_POLICY: Final = KINDS[("networking.k8s.io/v1", "NetworkPolicy")]
INGRESS: Final = KINDS[("networking.k8s.io/v1", "Ingress")]
ROUTE: Final = KINDS[("route.openshift.io/v1", "Route")]
ROLE: Final = KINDS[("rbac.authorization.k8s.io/v1", "Role")]
ROLE_BINDING: Final = KINDS[("rbac.authorization.k8s.io/v1", "RoleBinding")]
CLUSTER_ROLE: Final = KINDS[("rbac.authorization.k8s.io/v1", "ClusterRole")]
CLUSTER_ROLE_BINDING: Final = KINDS[("rbac.authorization.k8s.io/v1", "ClusterRoleBinding")]
CRD: Final = KINDS[("apiextensions.k8s.io/v1", "CustomResourceDefinition")]
STORAGE_CLASS: Final = KINDS[("storage.k8s.io/v1", "StorageClass")]
CERTIFICATE: Final = KINDS[("cert-manager.io/v1", "Certificate")]
TOKEN_REVIEW: Final = KINDS[("authentication.k8s.io/v1", "TokenReview")]
REGISTRY: Final = KINDS[(API_VERSION, REGISTRY_KIND)]
PRUNE_SCHEDULE: Final = KINDS[(API_VERSION, PRUNE_SCHEDULE_KIND)]
TAG_POLICY: Final = KINDS[(API_VERSION, TAG_POLICY_KIND)]


def kind_of(obj: dict[str, object]) -> Kind:
    key = (str(obj.get("apiVersion")), str(obj.get("kind")))
    try:
        return KINDS[key]
    except KeyError:
        raise ValueError(f"Berth does not manage {key[1]} ({key[0]})") from None
