"""Node integration: the node agent's install, the plan the operator hands it for each
Registry, and the report it gives back.

    operator (registry pass)                      node agent (one Pod per node)
    plan ConfigMap <agent ns>/<ns>.<name>   ->    writes /etc/hosts lines and certs.d
    status.nodes, NodesReady                <-    report: annotation on its own Pod

The operator decides everything (names, addresses, CA bundle); the agent only writes
files and says what it wrote, so it needs to read ConfigMaps in its own namespace and
patch its own Pod, nothing else. Both sides use the formats defined here.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from pydantic import Field, ValidationError

from berth.api.common import BerthModel
from berth.api.registry import AuthMode, TLSMode
from berth.constants import (
    ANNOTATION_CONFIG_CHECKSUM,
    GROUP,
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    MANAGED_BY,
)
from berth.resources.registry import RegistryInputs, service_hosts, token_realm
from berth.resources.render import labels, render, rights, selector_labels

JSON = dict[str, Any]

SETTINGS_ENV: Final = "BERTH_NODE_AGENT"
AGENT: Final = "berth-node-agent"
COMPONENT: Final = "node-agent"
PLAN_LABEL: Final = f"{GROUP}/node-plan"
PLAN_KEY: Final = "plan.json"
REPORT_ANNOTATION: Final = f"{GROUP}/node-report"
OWNER_ANNOTATION: Final = f"{GROUP}/registry"  # on a plan: <namespace>/<name>
# Where the agent's container sees the node's files.
HOST_ROOT: Final = "/host"


class NodeAgentSettings(BerthModel):
    """The node agent of this install: the chart's `nodeAgent` values, handed to the
    operator as JSON in BERTH_NODE_AGENT."""

    enabled: bool = True
    """Run the agent; false switches node integration off cluster-wide."""
    namespace: str = "berth-node"
    """Where the agent runs; the operator labels it Pod Security `privileged` (the agent
    mounts host paths). Nothing else of Berth runs there."""
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    hosts_file: str = "/etc/hosts"
    """The node's hosts file, where the agent keeps marked lines."""
    containerd_config: str = "/etc/containerd/config.toml"
    """containerd's configuration, read to learn where it reads hosts.toml from."""
    containerd_certs_dir: str = "/etc/containerd/certs.d"
    """Where the agent writes <host>/hosts.toml and ca.crt for containerd."""
    crio_certs_dir: str | None = "/etc/containers/certs.d"
    """Where the agent writes <host>/ca.crt for CRI-O and podman; null: not at all."""
    image: str | None = None
    """The agent's image; by default the operator's own."""


def agent_settings(environ: Mapping[str, str] | None = None) -> NodeAgentSettings:
    """The install's settings; a value that does not parse is an error at start-up,
    not a silent default."""
    environ = os.environ if environ is None else environ
    raw = environ.get(SETTINGS_ENV)
    if not raw:
        return NodeAgentSettings()
    try:
        return NodeAgentSettings.model_validate_json(raw)
    except ValidationError as error:
        raise ValueError(f"{SETTINGS_ENV} is not valid node-agent settings: {error}") from None


# -- the plan (operator -> agent) ------------------------------------------------------


@dataclass(frozen=True)
class HostTrust:
    """What one registry host needs on a node: the CA bundle to verify it with."""

    host: str  # host[:port], as image references name it
    ca_pem: str


@dataclass
class NodePlan:
    """What every node must hold for one Registry."""

    owner: str  # <namespace>/<name>: marks every file and line made for this Registry
    addresses: dict[str, str] = field(default_factory=dict)  # name -> IP
    trusts: list[HostTrust] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, indent=1)

    @classmethod
    def from_json(cls, text: str) -> NodePlan:
        data = json.loads(text)
        return cls(
            owner=str(data["owner"]),
            addresses={str(k): str(v) for k, v in (data.get("addresses") or {}).items()},
            trusts=[HostTrust(str(t["host"]), str(t["ca_pem"])) for t in data.get("trusts") or []],
        )


def checksum(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def plan_name(namespace: str, name: str) -> str:
    """One ConfigMap per Registry in the agent's namespace; a namespace has no dots, so
    the first dot separates it from the Registry's name."""
    return f"{namespace}.{name}"


def plan_config_map(settings: NodeAgentSettings, plan: NodePlan) -> JSON:
    namespace, _, name = plan.owner.partition("/")
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": plan_name(namespace, name),
            "namespace": settings.namespace,
            "labels": {**labels(name, COMPONENT), PLAN_LABEL: "true"},
            "annotations": {OWNER_ANNOTATION: plan.owner},
        },
        "data": {PLAN_KEY: plan.to_json()},
    }


# -- the report (agent -> operator) ----------------------------------------------------


# Reasons for a node whose files are written but whose runtime does not read them.
CONFIG_PATH_UNSET: Final = "ContainerdConfigPathUnset"
CERTS_DIR_NOT_READ: Final = "ContainerdCertsDirNotRead"
RUNTIME_PROBLEMS: Final = frozenset({CONFIG_PATH_UNSET, CERTS_DIR_NOT_READ})


@dataclass
class RegistryReport:
    """What the agent did on its node for one plan."""

    plan: str  # checksum of the plan it acted on
    configured: bool
    reason: str = "Configured"
    message: str = ""

    @property
    def written(self) -> bool:
        """The plan's files are on the node (whether or not the runtime reads them)."""
        return self.configured or self.reason in RUNTIME_PROBLEMS


@dataclass
class NodeReport:
    node: str
    runtime_problem: str = ""  # why containerd does not read what the agent writes
    registries: dict[str, RegistryReport] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_pod(cls, pod: JSON) -> NodeReport | None:
        raw = ((pod.get("metadata") or {}).get("annotations") or {}).get(REPORT_ANNOTATION)
        if not raw:
            return None
        try:
            data = json.loads(raw)
            return cls(
                node=str(data["node"]),
                runtime_problem=str(data.get("runtime_problem") or ""),
                registries={
                    str(owner): RegistryReport(**entry)
                    for owner, entry in (data.get("registries") or {}).items()
                },
            )
        except (ValueError, KeyError, TypeError):
            return None  # not a report this operator can read: "not reported"


# -- the agent's install ---------------------------------------------------------------


def agent_labels() -> dict[str, str]:
    return labels(AGENT, COMPONENT, name="berth")


def agent_selector() -> str:
    return ",".join(f"{k}={v}" for k, v in selector_labels(AGENT, COMPONENT, "berth").items())


AGENT_RULES: Final = [
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]},
    # Its report goes on its own Pod (RBAC cannot narrow this to one name).
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch"]},
    # When stopped: is it a restart, or has its node left the DaemonSet's scope?
    {"apiGroups": ["apps"], "resources": ["daemonsets"], "verbs": ["get"]},
]
# ... which needs its own Node's labels and taints (cluster-scoped, read-only).
AGENT_NODE_RULES: Final = [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]


def agent_cluster_role(settings: NodeAgentSettings) -> str:
    return f"berth:{settings.namespace}:{AGENT}"


def agent_objects(settings: NodeAgentSettings, image: str) -> list[JSON]:
    """The namespace, identity, rights and DaemonSet of the node agent."""
    common = {"name": AGENT, "namespace": settings.namespace, "labels": agent_labels()}
    account = (settings.namespace, AGENT)
    return [
        render("nodeagent/namespace.yaml.j2", namespace=settings.namespace, labels=agent_labels()),
        render("common/serviceaccount.yaml.j2", **common),
        *rights(AGENT, agent_labels(), AGENT_RULES, account, settings.namespace),
        *rights(agent_cluster_role(settings), agent_labels(), AGENT_NODE_RULES, account),
        render(
            "nodeagent/daemonset.yaml.j2",
            **common,
            selector=selector_labels(AGENT, COMPONENT, "berth"),
            image=settings.image or image,
            settings=settings,
            annotations={
                ANNOTATION_CONFIG_CHECKSUM: checksum(
                    settings.model_dump_json() + (settings.image or image)
                )
            },
            host_root=HOST_ROOT,
            containerd_config_dir=os.path.dirname(settings.containerd_config),
            containerd_config_name=os.path.basename(settings.containerd_config),
        ),
    ]


# DaemonSet Pods tolerate these whatever their spec says (the DaemonSet controller adds
# them), so such a taint does not keep the agent off a node.
DAEMONSET_TOLERATED: Final = frozenset(
    {
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
        "node.kubernetes.io/disk-pressure",
        "node.kubernetes.io/memory-pressure",
        "node.kubernetes.io/pid-pressure",
        "node.kubernetes.io/unschedulable",
        "node.kubernetes.io/network-unavailable",
    }
)


def tolerated(taint: JSON, tolerations: Iterable[JSON]) -> bool:
    """Whether an agent Pod with `tolerations` tolerates `taint`."""
    if taint.get("effect") == "PreferNoSchedule" or taint.get("key") in DAEMONSET_TOLERATED:
        return True
    for toleration in tolerations:
        if toleration.get("effect") and toleration.get("effect") != taint.get("effect"):
            continue
        if toleration.get("operator") == "Exists":
            if not toleration.get("key") or toleration.get("key") == taint.get("key"):
                return True
        elif toleration.get("key") == taint.get("key") and (toleration.get("value") or "") == (
            taint.get("value") or ""
        ):
            return True
    return False


def missing_labels(node: JSON, node_selector: Mapping[str, str]) -> dict[str, str]:
    """The `node_selector` labels `node` lacks (or has with another value)."""
    node_labels = (node.get("metadata") or {}).get("labels") or {}
    return {k: v for k, v in node_selector.items() if node_labels.get(k) != v}


def left_scope(node: JSON | None, daemon_set: JSON | None) -> str | None:
    """Why an agent that is being stopped will not be back on `node` (its files must go
    then), or None when it is a restart (an update of the DaemonSet, a Pod deleted):
    the DaemonSet is gone or going, the node is gone or going, the node no longer has
    the nodeSelector's labels, or it has a NoExecute taint the agent does not tolerate."""
    if daemon_set is None or (daemon_set.get("metadata") or {}).get("deletionTimestamp"):
        return "the node agent's DaemonSet is deleted"
    if node is None or (node.get("metadata") or {}).get("deletionTimestamp"):
        return "the node is deleted"
    pod_spec = ((daemon_set.get("spec") or {}).get("template") or {}).get("spec") or {}
    missing = missing_labels(node, pod_spec.get("nodeSelector") or {})
    if missing:
        return f"the node lacks the nodeSelector's {', '.join(sorted(missing))}"
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") == "NoExecute" and not tolerated(
            taint, pod_spec.get("tolerations") or []
        ):
            return f"the node has the taint {taint.get('key')}:NoExecute"
    return None


def is_agent_pod(pod: JSON) -> bool:
    pod_labels = (pod.get("metadata") or {}).get("labels") or {}
    return (
        pod_labels.get(LABEL_COMPONENT) == COMPONENT
        and pod_labels.get(LABEL_MANAGED_BY) == MANAGED_BY
    )


# -- a Registry's plan -----------------------------------------------------------------


def node_plan(inputs: RegistryInputs, registry_ip: str | None, token_ip: str | None) -> NodePlan:
    """What every node needs for a Managed Registry: its Service names (and its token
    realm's) pinned to the ClusterIPs, and for each registry host the CA bundle to trust
    (SelfSigned), plain HTTP (Disabled), or nothing (a certificate of the user's issuer,
    which nodes trust as they trust that issuer). Only this Registry's own names."""
    spec = inputs.spec
    plan = NodePlan(f"{inputs.namespace}/{inputs.names.registry}")
    hosts = service_hosts(inputs.names.service, inputs.namespace, spec.expose.service.port)
    if registry_ip:
        for host in hosts:
            plan.addresses[host.rsplit(":", 1)[0]] = registry_ip
    if spec.auth.mode is AuthMode.TOKEN and token_ip:
        realm = urlsplit(token_realm(inputs)).hostname
        if realm:
            plan.addresses[realm] = token_ip
    if spec.tls.mode is TLSMode.DISABLED:
        plan.trusts = [HostTrust(host, "") for host in hosts]
    elif spec.tls.mode is TLSMode.SELF_SIGNED and inputs.material.ca is not None:
        plan.trusts = [HostTrust(host, inputs.material.ca_bundle) for host in hosts]
    return plan


# -- KEP-1755: the cluster's local registry --------------------------------------------

LOCAL_HOSTING_NAMESPACE: Final = "kube-public"
LOCAL_HOSTING_NAME: Final = "local-registry-hosting"
LOCAL_HOSTING_KEY: Final = "localRegistryHosting.v1"


def local_registry_hosting(owner: str, internal: str, external: str | None) -> JSON:
    """The KEP-1755 ConfigMap for the Registry `owner` (`<ns>/<name>`): where to push
    from outside the cluster (its external host, else the in-cluster one), and the name
    the cluster network and the nodes' runtime use (the node agent makes them resolve
    it)."""
    _, _, name = owner.partition("/")
    document = {
        "host": external or internal,
        "hostFromClusterNetwork": internal,
        "hostFromContainerRuntime": internal,
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": LOCAL_HOSTING_NAME,
            "namespace": LOCAL_HOSTING_NAMESPACE,
            "labels": labels(name, LOCAL_HOSTING_NAME),
            "annotations": {OWNER_ANNOTATION: owner},
        },
        "data": {
            LOCAL_HOSTING_KEY: "".join(f'{key}: "{value}"\n' for key, value in document.items())
        },
    }
