"""`berth node-agent`: one per node, it keeps the node resolving and trusting every
Registry whose plan the operator published, and reports what it did.

    list the plans (ConfigMaps in its namespace) -> converge the node's files
    -> report on its own Pod when the report changed -> wait for a plan to change
    (a watch), or a minute, and again

Only a successful list is acted on: when the API cannot be read the files stay as they
are. A plan that cannot be read keeps its owner's files too (the agent is not sure).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from berth.k8s.api import JSON, ApiException, Kube
from berth.k8s.kinds import CONFIG_MAP, DAEMON_SET, NODE, POD
from berth.node.files import (
    NotOurs,
    containerd_registry_dirs,
    hosts_owners,
    hosts_text,
    owners_in,
    remove_host,
    remove_owner,
    write_text_in_place,
    write_trust,
)
from berth.resources.nodeagent import (
    AGENT,
    CERTS_DIR_NOT_READ,
    CONFIG_PATH_UNSET,
    OWNER_ANNOTATION,
    PLAN_KEY,
    PLAN_LABEL,
    REPORT_ANNOTATION,
    NodePlan,
    NodeReport,
    RegistryReport,
    checksum,
    left_scope,
)

logger = logging.getLogger(__name__)

RESYNC_SECONDS: Final = 60  # files are checked again this often with no plan change
RETRY_SECONDS: Final = 5.0


@dataclass(frozen=True)
class NodePaths:
    """The node's files as the agent's container sees them."""

    hosts_file: Path
    containerd_config: Path
    containerd_certs_dir: Path
    containerd_certs_dir_on_node: str  # the same folder, as containerd names it
    crio_certs_dir: Path | None = None

    def trust_roots(self) -> list[tuple[Path, bool]]:
        """(folder, is containerd's) for every certs.d the agent keeps."""
        roots = [(self.containerd_certs_dir, True)]
        if self.crio_certs_dir is not None:
            roots.append((self.crio_certs_dir, False))
        return roots


def runtime_problem(paths: NodePaths) -> tuple[str, str] | None:
    """(reason, message) when containerd would not read what the agent writes. The agent
    never restarts the runtime with another configuration: it says what to set."""
    try:
        config = paths.containerd_config.read_text()
    except FileNotFoundError:
        config = ""  # containerd 2 with no file at all reads its default folders
    try:
        dirs = containerd_registry_dirs(config)
    except ValueError as error:
        return CONFIG_PATH_UNSET, f"containerd's configuration does not parse: {error}"
    wanted = paths.containerd_certs_dir_on_node.rstrip("/")
    if dirs is None:
        return CONFIG_PATH_UNSET, (
            "containerd reads no hosts.toml (registry config_path is unset in its CRI "
            f"configuration, or the deprecated mirrors/configs are in use): set config_path "
            f'= "{wanted}" and restart containerd once; Berth does not restart it'
        )
    if wanted not in [d.rstrip("/") for d in dirs]:
        return CERTS_DIR_NOT_READ, (
            f"containerd reads hosts.toml from {':'.join(dirs)}, not from {wanted} "
            "(the chart's nodeAgent.containerdCertsDir)"
        )
    return None


@dataclass
class _Plans:
    readable: dict[str, tuple[NodePlan, str]]  # owner -> (plan, checksum)
    owners: set[str]  # every owner with a plan, readable or not: their files are kept


def _read_plans(items: list[JSON]) -> _Plans:
    plans = _Plans({}, set())
    for item in items:
        owner = ((item.get("metadata") or {}).get("annotations") or {}).get(OWNER_ANNOTATION)
        if owner:
            plans.owners.add(str(owner))
        text = (item.get("data") or {}).get(PLAN_KEY) or ""
        try:
            plan = NodePlan.from_json(text)
        except (ValueError, KeyError, TypeError):
            logger.warning("plan %s does not parse; its files are kept",
                           (item.get("metadata") or {}).get("name"))  # fmt: skip
            continue
        plans.owners.add(plan.owner)
        plans.readable[plan.owner] = (plan, checksum(text))
    return plans


def converge(paths: NodePaths, node: str, items: list[JSON]) -> NodeReport:
    """Make the node's files say what the plans say; remove what the agent made for
    owners that have no plan any more. Returns the report."""
    plans = _read_plans(items)
    problem = runtime_problem(paths)
    report = NodeReport(node, runtime_problem=problem[1] if problem else "")
    failures: dict[str, tuple[str, str]] = {}
    try:
        _converge_hosts(paths.hosts_file, plans)
    except OSError as error:
        for owner in plans.readable:
            failures[owner] = ("HostsFileNotWritten", f"{paths.hosts_file}: {error}")
    for root, containerd in paths.trust_roots():
        failures.update(_converge_trust(root, containerd, plans))
    for owner, (_, digest) in plans.readable.items():
        if owner in failures:
            reason, message = failures[owner]
            report.registries[owner] = RegistryReport(digest, False, reason, message)
        elif problem is not None:
            report.registries[owner] = RegistryReport(digest, False, problem[0], problem[1])
        else:
            report.registries[owner] = RegistryReport(digest, True)
    return report


def _converge_hosts(path: Path, plans: _Plans) -> None:
    current = path.read_text()
    text = current
    for owner, (plan, _) in plans.readable.items():
        text = hosts_text(text, owner, plan.addresses)
    for owner in hosts_owners(text) - plans.owners:
        logger.info("removing the %s lines of %s (no plan any more)", path, owner)
        text = hosts_text(text, owner, {})
    if text != current:
        write_text_in_place(path, text)


def _converge_trust(root: Path, containerd: bool, plans: _Plans) -> dict[str, tuple[str, str]]:
    failures: dict[str, tuple[str, str]] = {}
    try:
        made = owners_in(root)
        for owner in set(made) - plans.owners:
            logger.info("removing %s of %s (no plan any more)", remove_owner(root, owner), owner)
        for owner, (plan, _) in plans.readable.items():
            wanted = {trust.host for trust in plan.trusts}
            for host in set(made.get(owner, [])) - wanted:
                remove_host(root, owner, host)
            for trust in plan.trusts:
                try:
                    if write_trust(root, owner, trust, containerd=containerd):
                        logger.info("wrote %s/%s for %s", root, trust.host, owner)
                except NotOurs as error:
                    failures[owner] = ("NotOurs", str(error))
    except OSError as error:
        for owner in plans.readable:
            failures[owner] = ("CertsDirNotWritten", f"{root}: {error}")
    return failures


async def run_agent(kube: Kube, paths: NodePaths, *, node: str, pod: str, namespace: str) -> None:
    """The agent's loop, until cancelled (SIGTERM); then, if its node has left the
    agent's scope, its files go too."""
    try:
        await _keep_files(kube, paths, node=node, pod=pod, namespace=namespace)
    except asyncio.CancelledError:
        await asyncio.shield(stopping(kube, paths, node=node, namespace=namespace))
        raise


async def stopping(kube: Kube, paths: NodePaths, *, node: str, namespace: str) -> bool:
    """Remove every file the agent made on `node` if it will not be back there (a
    restart keeps them: the Pod that follows takes them over). Nothing is removed when
    the API cannot say. Returns whether the files were removed."""
    try:
        found_node = await kube.get(NODE, None, node)
        daemon_set = await kube.get(DAEMON_SET, namespace, AGENT)
    except (ApiException, OSError) as error:
        logger.warning("stopping; cannot tell whether the node leaves (%s): files kept", error)
        return False
    why = left_scope(found_node, daemon_set)
    if why is None:
        logger.info("stopping for a restart: the node's files stay")
        return False
    logger.info("stopping for good (%s): removing the agent's files", why)
    converge(paths, node, [])
    return True


async def _keep_files(kube: Kube, paths: NodePaths, *, node: str, pod: str, namespace: str) -> None:
    selector = f"{PLAN_LABEL}=true"
    sent: str | None = None
    while True:
        try:
            items, version = await kube.list_with_version(
                CONFIG_MAP, namespace, label_selector=selector
            )
        except (ApiException, OSError) as error:
            logger.warning("cannot read the plans (%s); the node's files stay as they are", error)
            await asyncio.sleep(RETRY_SECONDS)
            continue
        report = converge(paths, node, items).to_json()
        if report != sent:
            try:
                await kube.merge_patch(
                    POD, namespace, pod, {"metadata": {"annotations": {REPORT_ANNOTATION: report}}}
                )
                sent = report
            except (ApiException, OSError) as error:
                logger.warning("cannot report on Pod %s/%s: %s", namespace, pod, error)
        try:
            await kube.watch_once(
                CONFIG_MAP, namespace, label_selector=selector, version=version,
                seconds=RESYNC_SECONDS,
            )  # fmt: skip
        except (ApiException, OSError) as error:
            logger.warning("watching the plans failed (%s); listing again", error)
            await asyncio.sleep(RETRY_SECONDS)
