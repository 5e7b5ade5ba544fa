"""The node agent's decisions on real files: converge to the plans, report each
Registry, remove only what it made and only when sure; when stopped, whether its node
left its scope; and the operator's reading of the reports (NodesReady)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from berth.k8s.diff import is_subset
from berth.node.agent import NodePaths, converge
from berth.reconcile.nodes import nodes_condition
from berth.resources.nodeagent import (
    REPORT_ANNOTATION,
    HostTrust,
    NodeAgentSettings,
    NodePlan,
    NodeReport,
    RegistryReport,
    agent_objects,
    left_scope,
    plan_config_map,
)

CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
CONTAINERD_CONFIG = (
    'version = 3\n[plugins."io.containerd.cri.v1.images".registry]\nconfig_path = "{}"\n'
)


@pytest.fixture
def paths(tmp_path: Path) -> NodePaths:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    certs = tmp_path / "certs.d"
    certs.mkdir()
    config = tmp_path / "config.toml"
    config.write_text(CONTAINERD_CONFIG.format(certs))
    crio = tmp_path / "crio"
    crio.mkdir()
    return NodePaths(hosts, config, certs, str(certs), crio)


def _plan(owner: str, ip: str = "10.96.0.10") -> dict[str, Any]:
    namespace, _, name = owner.partition("/")
    plan = NodePlan(owner, {f"{name}.{namespace}.svc": ip},
                    [HostTrust(f"{name}.{namespace}.svc:5000", CA)])  # fmt: skip
    return plan_config_map(NodeAgentSettings(), plan)


def test_converge_writes_every_plan_and_reports_it(paths: NodePaths) -> None:
    report = converge(paths, "node-1", [_plan("team/reg"), _plan("other/reg", "10.96.0.11")])
    assert report.node == "node-1"
    assert report.runtime_problem == ""
    assert set(report.registries) == {"team/reg", "other/reg"}
    assert all(entry.configured for entry in report.registries.values())
    hosts = paths.hosts_file.read_text()
    assert "10.96.0.10 reg.team.svc # berth team/reg" in hosts
    assert hosts.startswith("127.0.0.1 localhost\n")
    assert (paths.containerd_certs_dir / "reg.team.svc:5000" / "ca.crt").read_text() == CA
    assert paths.crio_certs_dir is not None
    assert (paths.crio_certs_dir / "reg.other.svc:5000" / "ca.crt").read_text() == CA


def test_a_plan_gone_takes_its_files_and_no_others(paths: NodePaths) -> None:
    converge(paths, "node-1", [_plan("team/reg"), _plan("other/reg", "10.96.0.11")])
    foreign = paths.containerd_certs_dir / "foreign:5000"
    foreign.mkdir()
    (foreign / "hosts.toml").write_text("server = 'https://foreign:5000'\n")
    report = converge(paths, "node-1", [_plan("other/reg", "10.96.0.11")])
    assert set(report.registries) == {"other/reg"}
    assert "team/reg" not in paths.hosts_file.read_text()
    assert not (paths.containerd_certs_dir / "reg.team.svc:5000").exists()
    assert (paths.containerd_certs_dir / "reg.other.svc:5000" / "ca.crt").exists()
    assert (foreign / "hosts.toml").exists()


def test_an_unreadable_plan_keeps_its_owners_files(paths: NodePaths) -> None:
    converge(paths, "node-1", [_plan("team/reg")])
    broken = _plan("team/reg")
    broken["data"] = {"plan.json": "{not json"}
    report = converge(paths, "node-1", [broken])
    assert report.registries == {}
    assert "# berth team/reg" in paths.hosts_file.read_text()
    assert (paths.containerd_certs_dir / "reg.team.svc:5000" / "ca.crt").exists()


def test_containerd_reading_elsewhere_is_reported_with_the_files_written(
    paths: NodePaths,
) -> None:
    paths.containerd_config.write_text(CONTAINERD_CONFIG.format("/etc/containerd/certs.d"))
    report = converge(paths, "node-1", [_plan("team/reg")])
    entry = report.registries["team/reg"]
    assert not entry.configured
    assert entry.reason == "ContainerdCertsDirNotRead"
    assert entry.written  # a CA rotation need not wait for this node
    assert (paths.containerd_certs_dir / "reg.team.svc:5000" / "ca.crt").exists()


# -- leaving the scope ------------------------------------------------------------------


def _node(labels: dict[str, str] | None = None, taints: list[dict[str, str]] | None = None,
          **metadata: Any) -> dict[str, Any]:  # fmt: skip
    return {"metadata": {"name": "node-1", "labels": labels or {}, **metadata},
            "spec": {"taints": taints or []}}  # fmt: skip


def _daemon_set(selector: dict[str, str] | None = None,
                tolerations: list[dict[str, str]] | None = None,
                **metadata: Any) -> dict[str, Any]:  # fmt: skip
    pod_spec: dict[str, Any] = {"nodeSelector": selector or {}, "tolerations": tolerations or []}
    return {"metadata": {"name": "berth-node-agent", **metadata},
            "spec": {"template": {"spec": pod_spec}}}  # fmt: skip


def test_a_restart_keeps_the_files() -> None:
    assert left_scope(_node({"pool": "a"}), _daemon_set({"pool": "a"})) is None
    # A NoSchedule taint added later does not evict a running DaemonSet Pod.
    tainted = _node(taints=[{"key": "maintenance", "effect": "NoSchedule"}])
    assert left_scope(tainted, _daemon_set()) is None
    tolerated = _node(taints=[{"key": "dedicated", "value": "gpu", "effect": "NoExecute"}])
    toleration = {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoExecute"}
    assert left_scope(tolerated, _daemon_set(tolerations=[toleration])) is None


@pytest.mark.parametrize(
    ("node", "daemon_set", "why"),
    [
        (_node(), None, "DaemonSet is deleted"),
        (_node(), _daemon_set(deletionTimestamp="2026-12-02T00:00:00Z"), "DaemonSet is deleted"),
        (None, _daemon_set(), "node is deleted"),
        (_node({"pool": "b"}), _daemon_set({"pool": "a"}), "lacks the nodeSelector's pool"),
        (_node(taints=[{"key": "drain", "effect": "NoExecute"}]), _daemon_set(),
         "taint drain:NoExecute"),
    ],
)  # fmt: skip
def test_leaving_the_scope_is_told_apart(
    node: dict[str, Any] | None, daemon_set: dict[str, Any] | None, why: str
) -> None:
    reason = left_scope(node, daemon_set)
    assert reason is not None
    assert why in reason


def test_leaving_removes_every_file_the_agent_made(paths: NodePaths) -> None:
    converge(paths, "node-1", [_plan("team/reg"), _plan("other/reg", "10.96.0.11")])
    converge(paths, "node-1", [])  # what `stopping` does once the node has left
    assert paths.hosts_file.read_text() == "127.0.0.1 localhost\n"
    assert list(paths.containerd_certs_dir.iterdir()) == []


# -- the operator's reading of the reports --------------------------------------------


def _agent_pod(node: str, report: NodeReport | None, phase: str = "Running") -> dict[str, Any]:
    annotations = {REPORT_ANNOTATION: report.to_json()} if report else {}
    return {"metadata": {"name": f"agent-{node}", "annotations": annotations},
            "spec": {"nodeName": node}, "status": {"phase": phase}}  # fmt: skip


def test_nodes_ready_counts_and_names_what_is_missing() -> None:
    settings = NodeAgentSettings()
    nodes = [_node() | {"metadata": {"name": n}} for n in ("a", "b", "c", "d")]
    nodes.append({"metadata": {"name": "e"},
                  "spec": {"taints": [{"key": "fake", "effect": "NoSchedule"}]}})  # fmt: skip
    pods = [
        _agent_pod("a", NodeReport("a", registries={"t/r": RegistryReport("p1", True)})),
        _agent_pod("b", NodeReport("b", registries={"t/r": RegistryReport("old", True)})),
        _agent_pod("c", None, phase="Pending"),
        _agent_pod(
            "d",
            NodeReport(
                "d",
                registries={
                    "t/r": RegistryReport(
                        "p1", False, "ContainerdConfigPathUnset", "set config_path"
                    )
                },
            ),
        ),
    ]
    condition, counts = nodes_condition("t/r", "p1", nodes, pods, settings)
    assert counts == {"configured": 1, "total": 5}
    assert condition.status is False
    assert condition.reason == "NodesNotConfigured"
    assert condition.message.startswith("1 of 5 nodes resolve and trust the registry; ")
    for expected in ("b: its agent has not written the current plan yet",
                     "c: its agent Pod agent-c is Pending", "d: set config_path",
                     "e: no node agent runs there: its taint fake:NoSchedule"):  # fmt: skip
        assert expected in condition.message
    everyone = nodes_condition("t/r", "p1", nodes[:1], pods[:1], settings)
    assert everyone[0].status is True
    assert everyone[0].reason == "AllNodesConfigured"
    assert everyone[1] == {"configured": 1, "total": 1}


def test_a_setting_taken_away_changes_the_daemon_set() -> None:
    """A live DaemonSet with a nodeSelector is a superset of one without: the checksum
    of the settings makes the operator apply it again (and server-side apply drops the
    field)."""
    with_selector = agent_objects(NodeAgentSettings(node_selector={"pool": "a"}), "image")[-1]
    without = agent_objects(NodeAgentSettings(), "image")[-1]
    assert with_selector["kind"] == without["kind"] == "DaemonSet"
    assert not is_subset(without, with_selector)
    assert is_subset(without, agent_objects(NodeAgentSettings(), "image")[-1])
