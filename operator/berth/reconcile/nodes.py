"""Node integration, the operator's side: the node agent's install, each Registry's plan
for the nodes, and what the agents' reports say of it (status.nodes, NodesReady).

The agent (berth.node.agent) writes the files; the formats are in
berth.resources.nodeagent. A node counts as configured for a Registry when its agent
reports the Registry's current plan (by checksum) written, and containerd reads it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Final

from berth.api.registry import RegistryConditionType
from berth.constants import operator_image
from berth.k8s.api import JSON, Kube
from berth.k8s.kinds import CONFIG_MAP, DAEMON_SET, NODE, POD
from berth.reconcile.conditions import Cond, find
from berth.reconcile.kit import Note
from berth.resources.nodeagent import (
    AGENT,
    LOCAL_HOSTING_NAME,
    LOCAL_HOSTING_NAMESPACE,
    OWNER_ANNOTATION,
    PLAN_KEY,
    NodeAgentSettings,
    NodePlan,
    NodeReport,
    agent_objects,
    agent_selector,
    agent_settings,
    checksum,
    local_registry_hosting,
    missing_labels,
    node_plan,
    plan_config_map,
    plan_name,
    tolerated,
)
from berth.resources.registry import RegistryInputs

NODES_READY: Final = RegistryConditionType.NODES_READY
LOCAL_HOSTING: Final = RegistryConditionType.LOCAL_REGISTRY_HOSTING
# The agent's install is checked again this often (and at once when its settings change).
INSTALL_RECHECK_SECONDS: Final = 60.0
# How many nodes a NodesReady message names.
NAMED_NODES: Final = 5


@dataclass
class NodesResult:
    condition: Cond
    fields: dict[str, Any] = field(default_factory=dict)
    writes: int = 0
    events: list[Note] = field(default_factory=list)


# -- the agent's install ---------------------------------------------------------------


class _Install:
    """The agent's objects were last checked at `at` for settings `key`."""

    key: str = ""
    at: float = 0.0


_install = _Install()


async def ensure_agent(kube: Kube, settings: NodeAgentSettings) -> int:
    """The agent's namespace, identity, rights and DaemonSet, applied when they differ
    (checked at most once a minute per operator); with the agent switched off, its
    DaemonSet is deleted. Returns the writes."""
    key = settings.model_dump_json() + operator_image()
    if key == _install.key and time.monotonic() - _install.at < INSTALL_RECHECK_SECONDS:
        return 0
    writes = 0
    if settings.enabled:
        for obj in agent_objects(settings, operator_image()):
            written, _ = await kube.ensure(obj)
            writes += written
    elif await kube.get(DAEMON_SET, settings.namespace, AGENT) is not None:
        writes += await kube.delete(DAEMON_SET, settings.namespace, AGENT)
    _install.key, _install.at = key, time.monotonic()
    return writes


# -- a Registry's plan -----------------------------------------------------------------


async def integrate(
    kube: Kube, inputs: RegistryInputs, registry_ip: str | None, token_ip: str | None
) -> NodesResult:
    """Publish the Registry's plan for the nodes and say how far the nodes are."""
    settings = agent_settings()
    if not inputs.spec.node_integration.enabled:
        writes = await withdraw(kube, inputs.namespace, inputs.names.registry, settings)
        return NodesResult(
            Cond(NODES_READY, False, "Disabled",
                 "spec.nodeIntegration.enabled is false: Berth configures no node for it"),
            {"nodes": None},
            writes,
        )  # fmt: skip
    if not settings.enabled:
        writes = await withdraw(kube, inputs.namespace, inputs.names.registry, settings)
        return NodesResult(
            Cond(NODES_READY, False, "NodeAgentDisabled",
                 "the node agent is switched off for this cluster (chart value "
                 "nodeAgent.enabled=false): nodes must be configured by hand"),
            {"nodes": None},
            writes,
        )  # fmt: skip
    writes = await ensure_agent(kube, settings)
    plan = node_plan(inputs, registry_ip, token_ip)
    desired = plan_config_map(settings, plan)
    written, _ = await kube.ensure(desired)
    writes += written
    digest = checksum(desired["data"][PLAN_KEY])
    nodes = [node async for node in kube.list(NODE)]
    pods = [
        pod async for pod in kube.list(POD, settings.namespace, label_selector=agent_selector())
    ]
    condition, counts = nodes_condition(plan.owner, digest, nodes, pods, settings)
    return NodesResult(condition, {"nodes": counts}, writes)


async def withdraw(kube: Kube, namespace: str, name: str, settings: NodeAgentSettings) -> int:
    """Delete the Registry's plan (the agents remove its files from every node) and its
    KEP-1755 ConfigMap, if it holds it."""
    writes = await _withdraw_local_hosting(kube, f"{namespace}/{name}")
    config_map = plan_name(namespace, name)
    if await kube.get(CONFIG_MAP, settings.namespace, config_map) is None:
        return writes
    return writes + int(await kube.delete(CONFIG_MAP, settings.namespace, config_map))


# -- KEP-1755 --------------------------------------------------------------------------


async def local_hosting(kube: Kube, inputs: RegistryInputs, endpoint: JSON) -> NodesResult:
    """Publish kube-public/local-registry-hosting for a Registry that asks for it, unless
    someone else holds it (another Registry, or a tool such as kind's setup script): that
    one is never replaced."""
    owner = f"{inputs.namespace}/{inputs.names.registry}"
    if not inputs.spec.node_integration.local_registry_hosting:
        writes = await _withdraw_local_hosting(kube, owner)
        return NodesResult(Cond(LOCAL_HOSTING, False, "NotRequested", ""), writes=writes)
    live = await kube.get(CONFIG_MAP, LOCAL_HOSTING_NAMESPACE, LOCAL_HOSTING_NAME)
    holder = _holder(live)
    if live is not None and holder != owner:
        held_by = f"Registry {holder}" if holder else "something other than Berth"
        message = (
            f"{LOCAL_HOSTING_NAMESPACE}/{LOCAL_HOSTING_NAME} is held by {held_by}: Berth does "
            "not replace it (one registry per cluster is the local one)"
        )
        before = find((inputs.owner.get("status") or {}).get("conditions"), LOCAL_HOSTING)
        new = before is None or before.get("reason") != "HeldByOther"
        return NodesResult(
            Cond(LOCAL_HOSTING, False, "HeldByOther", message),
            events=[Note("LocalRegistryHostingHeld", message)] if new else [],
        )
    desired = local_registry_hosting(owner, endpoint["internal"], endpoint.get("external"))
    written, _ = await kube.ensure(desired)
    message = f"{LOCAL_HOSTING_NAMESPACE}/{LOCAL_HOSTING_NAME} names this registry"
    return NodesResult(Cond(LOCAL_HOSTING, True, "Published", message), writes=int(written))


def _holder(config_map: JSON | None) -> str | None:
    annotations = ((config_map or {}).get("metadata") or {}).get("annotations") or {}
    return annotations.get(OWNER_ANNOTATION)


async def _withdraw_local_hosting(kube: Kube, owner: str) -> int:
    live = await kube.get(CONFIG_MAP, LOCAL_HOSTING_NAMESPACE, LOCAL_HOSTING_NAME)
    if live is None or _holder(live) != owner:
        return 0
    return int(await kube.delete(CONFIG_MAP, LOCAL_HOSTING_NAMESPACE, LOCAL_HOSTING_NAME))


async def agents_hold(kube: Kube, namespace: str, name: str, ca_pem: str) -> bool:
    """Whether every running agent has written a plan for the Registry whose CA bundle
    holds `ca_pem` (a CA rotation waits for this before the new CA signs). Nodes with no
    agent are not waited for: Berth does not configure them; nor is a runtime that does
    not read the files (it trusts no Berth CA, the old one neither)."""
    settings = agent_settings()
    found = await kube.get(CONFIG_MAP, settings.namespace, plan_name(namespace, name))
    text = ((found or {}).get("data") or {}).get(PLAN_KEY)
    if not settings.enabled or not text:
        return not settings.enabled
    plan = NodePlan.from_json(text)
    if plan.trusts and not all(ca_pem.strip() in trust.ca_pem for trust in plan.trusts):
        return False
    digest, owner = checksum(text), f"{namespace}/{name}"
    async for pod in kube.list(POD, settings.namespace, label_selector=agent_selector()):
        if (pod.get("status") or {}).get("phase") != "Running":
            continue
        report = NodeReport.from_pod(pod)
        entry = report.registries.get(owner) if report else None
        if entry is None or entry.plan != digest or not entry.written:
            return False
    return True


# -- what the reports say --------------------------------------------------------------


def _why_no_agent(node: JSON, settings: NodeAgentSettings) -> tuple[str, str]:
    missing = missing_labels(node, settings.node_selector)
    if missing:
        wanted = ",".join(f"{k}={v}" for k, v in sorted(missing.items()))
        return "OutOfScope", f"outside the agent's nodeSelector ({wanted})"
    for taint in (node.get("spec") or {}).get("taints") or []:
        if not tolerated(taint, settings.tolerations):
            value = f"={taint['value']}" if taint.get("value") else ""
            return "NoNodeAgent", (
                f"no node agent runs there: its taint {taint.get('key')}{value}:"
                f"{taint.get('effect')} is not tolerated (chart value nodeAgent.tolerations)"
            )
    return "NoNodeAgent", "no node agent runs there yet"


def node_state(
    node: JSON, pod: JSON | None, owner: str, digest: str, settings: NodeAgentSettings
) -> tuple[bool, str, str]:
    """(configured, reason, why) of one node for one Registry's plan."""
    if pod is None:
        return (False, *_why_no_agent(node, settings))
    phase = (pod.get("status") or {}).get("phase")
    if phase != "Running":
        return False, "NodeAgentNotRunning", f"its agent Pod {pod['metadata']['name']} is {phase}"
    report = NodeReport.from_pod(pod)
    entry = report.registries.get(owner) if report else None
    if entry is None or entry.plan != digest:
        return False, "PlanNotApplied", "its agent has not written the current plan yet"
    if not entry.configured:
        return False, entry.reason, entry.message
    return True, "Configured", ""


def nodes_condition(
    owner: str, digest: str, nodes: list[JSON], pods: list[JSON], settings: NodeAgentSettings
) -> tuple[Cond, dict[str, int]]:
    """NodesReady and status.nodes from the cluster's nodes and the agents' Pods."""
    by_node: dict[str, JSON] = {}
    for pod in pods:
        node_name = (pod.get("spec") or {}).get("nodeName")
        if node_name and not (pod.get("metadata") or {}).get("deletionTimestamp"):
            by_node[str(node_name)] = pod
    not_configured: list[tuple[str, str, str]] = []
    for node in sorted(nodes, key=lambda n: str(n["metadata"]["name"])):
        name = str(node["metadata"]["name"])
        configured, reason, why = node_state(node, by_node.get(name), owner, digest, settings)
        if not configured:
            not_configured.append((name, reason, why))
    total = len(nodes)
    counts = {"configured": total - len(not_configured), "total": total}
    summary = f"{counts['configured']} of {total} nodes resolve and trust the registry"
    if not not_configured:
        return Cond(NODES_READY, True, "AllNodesConfigured", summary), counts
    reasons = {reason for _, reason, _ in not_configured}
    reason = reasons.pop() if len(reasons) == 1 else "NodesNotConfigured"
    named = "; ".join(f"{name}: {why}" for name, _, why in not_configured[:NAMED_NODES])
    more = len(not_configured) - NAMED_NODES
    if more > 0:
        named += f"; and {more} more"
    return Cond(NODES_READY, False, reason, f"{summary}; {named}"), counts
