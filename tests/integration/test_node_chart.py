"""Berth end to end on the real node, installed as a user installs it.

The chart is installed with Helm (the image built from the repository's Dockerfile is on
the node under the chart's default name); the operator runs as a Pod with the chart's
ServiceAccount. The sample Registry (Token auth, SelfSigned TLS), on a PVC, then:

1. its registry and token-server Pods are Running and Ready through their real probes;
2. a robot credential from a team namespace's pull Secret pushes an image with skopeo to
   the registry's Service (TLS verified with Berth's CA), and is refused another team's
   repository;
3. a Pod in the team namespace runs that image, pulled by the kubelet with the pull
   Secret Berth put on the namespace's default ServiceAccount;
4. a PruneSchedule's CronJob fires: its Job runs `berth prune` from the built image and
   deletes what the rules say (never the image in use), then the GC Job runs the real
   `garbage-collect` on the PVC while the registry is read-only, and it is read-write
   after;
5. a credential rotation while the kubelet pulls in a loop: no pull fails; the same
   for a CA rotation.

Nothing configures the node by hand: Berth's node agent (a DaemonSet the operator runs)
makes it resolve the registry's and its token realm's names and trust Berth's CA; the
chart is told only where the test-bed node keeps containerd's files (nodeAgent values).
Every push and pull below depends on it. This module runs right after
test_install.py, before the session's in-process operator starts: one operator only.
"""

from __future__ import annotations

import base64
import datetime
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from kubernetes import client

from berth import pki
from berth.constants import DEFAULT_OPERATOR_IMAGE, GROUP, VERSION
from berth.resources.access import pull_secret_name
from berth.resources.nodeagent import agent_selector
from testbed.cluster import wait_for
from testbed.node import RealNode
from testbed.nodeimages import workload_image
from testbed.served import Served, served
from testbed.testbin import REPO_ROOT, ensure_built
from tests.integration import node_support as ns

pytestmark = [pytest.mark.cluster, pytest.mark.node]


@dataclass
class Bed:
    api: client.ApiClient
    node: RealNode
    workdir: Path
    release: str
    system: str  # where the chart runs the operator
    home: str  # the Registry's namespace
    team: str  # may push to team/...
    other: str  # another team
    registry: Served | None = None
    creds: tuple[str, str] = ("", "")
    digests: dict[str, str] = field(default_factory=dict)

    @property
    def cert_dir(self) -> Path:
        assert self.registry is not None
        return self.registry.write_ca(self.workdir / "certs")

    def image(self, repository: str, tag: str) -> str:
        assert self.registry is not None
        return f"{self.registry.host}/{repository}:{tag}"


def _helm(kubeconfig: Path, *args: str) -> str:
    result = subprocess.run(
        [str(ensure_built() / "helm"), "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


@pytest.fixture(scope="module")
def bed(
    api_client: client.ApiClient,
    kubeconfig: Path,
    real_node: RealNode,
    berth_crds: list[str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Bed]:
    running = [t.name for t in threading.enumerate() if t.name == "berth-operator"]
    assert not running, "the in-process operator runs: this module must run before it"
    suffix = uuid.uuid4().hex[:6]
    bed = Bed(
        api=api_client,
        node=real_node,
        workdir=tmp_path_factory.mktemp("chart-e2e"),
        release="berth",
        system=ns.labelled_namespace(
            api_client,
            f"berth-system-{suffix}",
            {"pod-security.kubernetes.io/enforce": "restricted"},
        ),
        home=ns.labelled_namespace(api_client, f"registry-{suffix}", {}),
        team=ns.labelled_namespace(api_client, f"team-a-{suffix}", ns.PUSH_LABEL),
        other=ns.labelled_namespace(api_client, f"team-b-{suffix}", ns.PUSH_LABEL),
    )
    _helm(
        kubeconfig,
        "install", bed.release, str(REPO_ROOT / "charts" / "berth"),
        "--namespace", bed.system, *_values(real_node),
    )  # fmt: skip
    try:
        yield bed
    finally:
        # The operator first, so that nothing recreates what the namespaces take away.
        _helm(kubeconfig, "uninstall", bed.release, "--namespace", bed.system, "--wait")
        ns.delete_namespaces(api_client, bed.team, bed.other, bed.home, bed.system)


def _values(node: RealNode, *extra: str) -> list[str]:
    """The chart's values for the test bed, and `extra` ones (--set arguments)."""
    return [
        "--set", "operator.verbose=true",
        # The session applies crds/ (as `berth crds apply` does): the CRDs are managed
        # elsewhere, which the chart is told, as a user would.
        "--set", "crds.enabled=false",
        *_agent_values(node),
        *(argument for value in extra for argument in ("--set", value)),
    ]  # fmt: skip


def _upgrade(bed: Bed, kubeconfig: Path, *extra: str) -> None:
    """helm upgrade with the test bed's values and `extra` ones, nothing else kept."""
    _helm(
        kubeconfig, "upgrade", bed.release, str(REPO_ROOT / "charts" / "berth"),
        "--namespace", bed.system, "--reset-values", *_values(bed.node, *extra),
    )  # fmt: skip


def _agent_values(node: RealNode) -> list[str]:
    """Where this node keeps the files the agent writes: install settings only."""
    values: list[str] = []
    for key, value in node.agent_settings().items():
        values += ["--set", f"nodeAgent.{key}={value}"]
    return values


def _operator_logs(bed: Bed) -> str:
    core = client.CoreV1Api(bed.api)
    pods = core.list_namespaced_pod(bed.system).items
    return "\n".join(
        core.read_namespaced_pod_log(p.metadata.name, bed.system, tail_lines=60) for p in pods
    )


def test_the_chart_runs_the_operator_as_a_pod_of_the_built_image(bed: Bed) -> None:
    core = client.CoreV1Api(bed.api)

    def operator_ready() -> bool:
        pods = core.list_namespaced_pod(bed.system).items
        statuses = pods[0].status.container_statuses if len(pods) == 1 else None
        return bool(statuses) and all(s.ready for s in statuses)

    wait_for("the operator Pod Ready (its /healthz probe)", operator_ready, 120, interval=1)
    [pod] = core.list_namespaced_pod(bed.system).items
    ns.assert_really_running(pod)
    assert pod.spec.containers[0].image == DEFAULT_OPERATOR_IMAGE
    assert pod.spec.service_account_name == bed.release
    # It reached the API server through the `kubernetes` Service with its own token.
    assert "Authentication" not in _operator_logs(bed)


def test_the_sample_registry_on_a_pvc_becomes_ready_with_real_pods(bed: Bed) -> None:
    spec = ns.registry_spec({"pvc": {"size": "1Gi"}})
    ns.create_registry(bed.api, bed.home, "registry", spec)
    try:
        ns.wait_ready(bed.api, bed.home, "registry", timeout=240)
    except AssertionError as error:
        raise AssertionError(f"{error}\noperator log:\n{_operator_logs(bed)}") from None
    for component in ("registry", "token-server"):
        [pod] = ns.running_pods(bed.api, bed.home, f"app.kubernetes.io/component={component}")
        ns.assert_really_running(pod)
    _wait_nodes_ready(bed)
    bed.registry = served(bed.api, bed.home, "registry")
    bed.creds = ns.robot_credential(bed.api, bed.team, bed.registry)


def _wait_nodes_ready(bed: Bed) -> None:
    def nodes_ready() -> bool:
        registry = ns.get_registry(bed.api, bed.home, "registry")
        return ns.condition(registry, "NodesReady").get("status") == "False" and bool(
            (registry.get("status") or {}).get("nodes", {}).get("configured")
        )

    try:
        wait_for("the node agent to configure the real node", nodes_ready, 120, interval=1)
    except Exception as error:
        registry = ns.get_registry(bed.api, bed.home, "registry")
        raise AssertionError(f"{error}: {registry.get('status')}") from None
    registry = ns.get_registry(bed.api, bed.home, "registry")
    # The real node is configured; the kwok node runs no agent, and NodesReady says why.
    assert registry["status"]["nodes"] == {"configured": 1, "total": 2}, registry["status"]
    message = ns.condition(registry, "NodesReady")["message"]
    assert "kwok-node-0: no node agent runs there" in message, message
    assert "kwok.x-k8s.io/node=fake:NoSchedule is not tolerated" in message, message


def _created(minutes_ago: int) -> str:
    moment = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=minutes_ago)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _push(
    bed: Bed, repository: str, tag: str, *, minutes_ago: int
) -> subprocess.CompletedProcess[str]:
    archive = workload_image(
        bed.workdir / f"image-{tag}",
        f"localhost/e2e/{tag}:1",
        {"/proof.txt": f"proof-{tag}\n"},
        created=_created(minutes_ago),
    )
    return ns.skopeo_copy(
        f"oci-archive:{archive}",
        f"docker://{bed.image(repository, tag)}",
        creds=bed.creds,
        cert_dir=bed.cert_dir,
    )


def _digest(bed: Bed, repository: str, tag: str) -> str | None:
    inspected = subprocess.run(
        [
            "skopeo", "inspect", "--format", "{{.Digest}}",
            "--creds", f"{bed.creds[0]}:{bed.creds[1]}", "--cert-dir", str(bed.cert_dir),
            f"docker://{bed.image(repository, tag)}",
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if inspected.returncode == 0:
        return inspected.stdout.strip()
    assert "manifest unknown" in inspected.stderr, inspected.stderr
    return None


def test_a_robot_pushes_with_skopeo_and_is_refused_another_teams_repository(bed: Bed) -> None:
    assert bed.registry is not None, "the Registry test before this one failed"
    app = f"{bed.team}/app"
    # Three images, oldest first: "old" will be the one in use, "middle" the one the
    # rules delete, "new" the newest.
    for tag, minutes_ago in (("old", 30), ("middle", 20), ("new", 10)):
        pushed = _push(bed, app, tag, minutes_ago=minutes_ago)
        assert pushed.returncode == 0, pushed.stderr
        digest = _digest(bed, app, tag)
        assert digest is not None
        assert digest.startswith("sha256:")
        bed.digests[tag] = digest
    assert len(set(bed.digests.values())) == 3

    refused = _push(bed, f"{bed.other}/app", "old", minutes_ago=30)
    assert refused.returncode != 0
    assert "denied" in refused.stderr.lower() or "unauthorized" in refused.stderr.lower(), (
        refused.stderr
    )


def test_the_kubelet_pulls_with_the_pull_secret_on_the_service_account(bed: Bed) -> None:
    assert bed.digests, "the push test before this one failed"
    core = client.CoreV1Api(bed.api)
    secret = pull_secret_name(bed.home, "registry")
    account = core.read_namespaced_service_account("default", bed.team)
    assert secret in [ref.name for ref in account.image_pull_secrets or []]

    image = bed.image(f"{bed.team}/app", "old")
    ns.run_pod(bed.api, bed.team, "app", image, "cat /proof.txt; sleep 3600")
    assert ns.wait_outcome(bed.api, bed.team, "app") == "pulled"
    wait_for(
        "the Pod Ready",
        lambda: bool(core.read_namespaced_pod("app", bed.team).status.container_statuses[0].ready),
        60,
    )
    pod = core.read_namespaced_pod("app", bed.team)
    ns.assert_really_running(pod)
    assert pod.spec.image_pull_secrets[0].name == secret  # from the ServiceAccount
    assert pod.status.container_statuses[0].image_id.endswith(bed.digests["old"])
    assert core.read_namespaced_pod_log("app", bed.team) == "proof-old\n"
    # Without the Secret the same pull is refused: the credential is what let it through.
    # (A ServiceAccount that no grant names gets no pull Secret.)
    core.create_namespaced_service_account(bed.team, {"metadata": {"name": "outsider"}})
    ns.run_pod(bed.api, bed.team, "anonymous", image, "true", pull_always=True,
               service_account="outsider")  # fmt: skip
    outcome = ns.wait_outcome(bed.api, bed.team, "anonymous")
    core.delete_namespaced_pod("anonymous", bed.team, grace_period_seconds=0)
    assert outcome.startswith(("ErrImagePull", "ImagePullBackOff")), outcome
    assert "401" in outcome or "unauthorized" in outcome.lower(), outcome


def _registry(bed: Bed) -> dict[str, Any]:
    return ns.get_registry(bed.api, bed.home, "registry")


def test_a_scheduled_prune_deletes_by_the_rules_and_gc_frees_the_pvc(bed: Bed) -> None:
    assert bed.digests, "the push test before this one failed"
    core, batch = client.CoreV1Api(bed.api), client.BatchV1Api(bed.api)
    volume = _volume_folder(bed)
    stored_before = _bytes_under(volume)
    schedule = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "PruneSchedule",
        "metadata": {"name": "every-minute"},
        "spec": {
            "registryRef": {"name": "registry"},
            "schedule": "* * * * *",
            "repositories": {"include": ["**"]},
            "retention": {"keepLast": 1, "keepYoungerThan": "1m", "deleteUntagged": True},
            "protectInUse": True,
            "garbageCollect": {"enabled": True},
        },
    }
    custom = client.CustomObjectsApi(bed.api)
    custom.create_namespaced_custom_object(GROUP, VERSION, bed.home, "pruneschedules", schedule)
    read_only_seen: list[str] = []

    def finished() -> bool:
        if ns.condition(_registry(bed), "ReadOnly").get("status") == "True":
            read_only_seen.append(ns.condition(_registry(bed), "ReadOnly").get("reason", ""))
        status = (
            custom.get_namespaced_custom_object(
                GROUP, VERSION, bed.home, "pruneschedules", "every-minute"
            ).get("status")
            or {}
        )
        return bool(status.get("lastRun", {}).get("completionTime"))

    try:
        wait_for("the CronJob's run to finish", finished, 240, interval=0.5)
    except Exception as error:
        jobs = batch.list_namespaced_job(bed.home).items
        raise AssertionError(f"{error}\njobs: {[j.status for j in jobs]}") from None
    schedule_now = custom.get_namespaced_custom_object(
        GROUP, VERSION, bed.home, "pruneschedules", "every-minute"
    )
    status = schedule_now["status"]
    succeeded = ns.condition(schedule_now, "LastRunSucceeded")
    assert succeeded.get("status") == "True", status

    # The run was a Job of the CronJob, in a Pod of the built image, on the real node.
    jobs = batch.list_namespaced_job(bed.home).items
    owners = {j.metadata.name: (j.metadata.owner_references or [None])[0] for j in jobs}
    prune_jobs = [name for name, ref in owners.items() if ref is not None and ref.kind == "CronJob"]
    assert prune_jobs, owners
    prune_pods = core.list_namespaced_pod(bed.home, label_selector=f"job-name={prune_jobs[0]}")
    [prune_pod] = prune_pods.items
    assert prune_pod.spec.node_name == ns.NODE_NAME
    assert prune_pod.spec.containers[0].image == DEFAULT_OPERATOR_IMAGE
    assert prune_pod.status.container_statuses[0].container_id.startswith("containerd://")

    # What the rules say: keep the newest and the one in use, delete the middle one.
    deleted = {e["digest"] for e in status["plan"] if e["action"] == "Delete"}
    assert deleted == {bed.digests["middle"]}, status["plan"]
    assert status["lastRun"]["keptInUse"] >= 1

    # GC ran the real `garbage-collect` on the PVC, in a Job's Pod on the real node, while
    # the registry was read-only; the run read the collector's own log.
    gc_jobs = batch.list_namespaced_job(
        bed.home, label_selector="app.kubernetes.io/component=garbage-collect"
    ).items
    assert gc_jobs, [j.metadata.name for j in jobs]
    assert gc_jobs[0].status.succeeded == 1, gc_jobs[0].status
    assert "Maintenance" in read_only_seen, read_only_seen
    assert "garbage-collect:" in succeeded["message"], succeeded
    wait_for(
        "the registry read-write again",
        lambda: ns.condition(_registry(bed), "ReadOnly").get("status") != "True",
        120,
    )
    ns.wait_ready(bed.api, bed.home, "registry")
    # The registry Pod was replaced twice (read-only and back): wait until the new one
    # answers at the Service before reading what is left.
    wait_for("the registry answering at its Service", lambda: _answers(bed), 90, interval=1)
    app = f"{bed.team}/app"
    assert _digest(bed, app, "middle") is None
    assert _digest(bed, app, "old") == bed.digests["old"]
    assert _digest(bed, app, "new") == bed.digests["new"]
    assert _bytes_under(volume) < stored_before, (stored_before, _bytes_under(volume))
    assert status["lastRun"]["bytesReclaimed"] > 0, status["lastRun"]
    after = _push(bed, app, "after-gc", minutes_ago=0)
    assert after.returncode == 0, after.stderr
    custom.delete_namespaced_custom_object(
        GROUP, VERSION, bed.home, "pruneschedules", "every-minute"
    )


def _answers(bed: Bed) -> bool:
    assert bed.registry is not None
    probe = subprocess.run(
        ["curl", "--silent", "--max-time", "3", "--cacert", str(bed.cert_dir / "ca.crt"),
         "--output", "/dev/null", "--write-out", "%{http_code}",
         f"https://{bed.registry.host}/v2/"],
        capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    return probe.stdout == "401"


def _volume_folder(bed: Bed) -> Path:
    """The local volume behind the Registry's PVC: a folder of the node's."""
    core = client.CoreV1Api(bed.api)
    [claim] = core.list_namespaced_persistent_volume_claim(bed.home).items
    volume = core.read_persistent_volume(claim.spec.volume_name)
    return Path(volume.spec.local.path)


def _bytes_under(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_no_pull_fails_during_a_credential_rotation(bed: Bed) -> None:
    assert bed.digests, "the push test before this one failed"
    core = client.CoreV1Api(bed.api)
    image = bed.image(f"{bed.team}/app", "new")
    secret = pull_secret_name(bed.home, "registry")

    def robot() -> str:
        return ns.robot_credential(bed.api, bed.team, bed.registry)[0]  # type: ignore[arg-type]

    first = robot()
    client.CustomObjectsApi(bed.api).patch_namespaced_custom_object(
        GROUP, VERSION, bed.home, "registries", "registry",
        {"metadata": {"annotations": {"berth.dev/rotate-credentials": "e2e-1"}}},
    )  # fmt: skip
    # The new robot reaches the token server first and the pull Secrets only after
    # propagation (90 s): the kubelet pulls throughout, with whatever the Secret holds.
    outcomes: list[tuple[str, str]] = []
    deadline = time.monotonic() + 240
    after_rotation = 0
    index = 0
    while time.monotonic() < deadline and after_rotation < 3:
        holder = robot()
        name = f"puller-{index}"
        ns.run_pod(bed.api, bed.team, name, image, "cat /proof.txt", pull_always=True,
                   restart="Never")  # fmt: skip
        outcomes.append((holder, ns.wait_outcome(bed.api, bed.team, name)))
        core.delete_namespaced_pod(name, bed.team, grace_period_seconds=0)
        after_rotation += holder != first
        index += 1
        time.sleep(2)
    robots_seen = {holder for holder, _ in outcomes}
    assert [o for o in outcomes if o[1] != "pulled"] == []
    assert len(robots_seen) > 1, f"the credential in {secret} never rotated: {robots_seen}"
    assert len(outcomes) > 5
    # The old robot is still accepted until its grace ends; the new one pulled too.
    assert sum(holder != first for holder, _ in outcomes) >= 3


def _serving_signer(bed: Bed, first_ca: str) -> str:
    """Which CA signed the registry's serving certificate: "old" (`first_ca`) or "new"."""
    secret = client.CoreV1Api(bed.api).read_namespaced_secret("registry-tls", bed.home)
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret.data["tls.crt"]))
    return "old" if pki.issued_by(cert, first_ca) else "new"


def _ca_pem(bed: Bed) -> str:
    """The CA that signs (the CA Secret's ca.crt)."""
    secret = client.CoreV1Api(bed.api).read_namespaced_secret("registry-ca", bed.home)
    return base64.b64decode(secret.data["ca.crt"]).decode()


def _rolled_out(bed: Bed) -> bool:
    apps = client.AppsV1Api(bed.api)
    for name in ("registry", "registry-auth"):
        found = apps.read_namespaced_deployment(name, bed.home)
        status, wanted = found.status, found.spec.replicas
        if (status.observed_generation or 0) < found.metadata.generation or (
            status.updated_replicas,
            status.ready_replicas,
            status.replicas,
        ) != (wanted, wanted, wanted):
            return False
    return True


def test_no_pull_fails_during_a_ca_rotation(bed: Bed) -> None:
    """The new CA reaches the node (the agent's ca.crt) and the CA ConfigMap before it
    signs; the registry and token server then roll onto certificates it signed. A Pod
    restarting in a loop and fresh Pods pulling one after another meet every phase."""
    assert bed.digests, "the push test before this one failed"
    try:
        _rotate_the_ca_while_pulling(bed)
    finally:
        # A client of the CA ConfigMap reads it again, as a mounted copy is updated.
        bed.registry = served(bed.api, bed.home, "registry")


def _rotate_the_ca_while_pulling(bed: Bed) -> None:
    core = client.CoreV1Api(bed.api)
    custom = client.CustomObjectsApi(bed.api)
    image = bed.image(f"{bed.team}/app", "new")
    # One Pod can go on serving while the other starts: the volume is on the one node.
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, bed.home, "registries", "registry",
        {"spec": {"rolloutStrategy": "RollingUpdate"}},
    )  # fmt: skip
    wait_for("a rolled-out registry", lambda: _rolled_out(bed), 120, interval=1)
    first_ca = _ca_pem(bed)
    assert _serving_signer(bed, first_ca) == "old"
    node_ca = bed.node.certs_d / f"registry.{bed.home}.svc:5000" / "ca.crt"
    ns.run_pod(bed.api, bed.team, "looping", image, "cat /proof.txt; exit 1", pull_always=True)
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, bed.home, "registries", "registry",
        {"metadata": {"annotations": {"berth.dev/rotate-ca": "e2e-1"}}},
    )  # fmt: skip
    outcomes: list[tuple[str, str]] = []  # (signer before the pull, outcome)
    node_held_new_ca: bool | None = None  # when the new CA was first seen signing
    deadline = time.monotonic() + 360
    after = index = 0
    while time.monotonic() < deadline and after < 3:
        signer = _serving_signer(bed, first_ca)
        if signer == "new" and node_held_new_ca is None:
            # It signs now: the node's ca.crt holds it already, and the old CA still.
            held = node_ca.read_text()
            node_held_new_ca = _ca_pem(bed).strip() in held and first_ca.strip() in held
        name = f"ca-puller-{index}"
        ns.run_pod(bed.api, bed.team, name, image, "cat /proof.txt", pull_always=True,
                   restart="Never")  # fmt: skip
        outcomes.append((signer, ns.wait_outcome(bed.api, bed.team, name)))
        core.delete_namespaced_pod(name, bed.team, grace_period_seconds=0)
        after += signer == "new" and _rolled_out(bed)
        index += 1
        time.sleep(2)
    looping = core.list_namespaced_event(
        bed.team, field_selector="involvedObject.name=looping,involvedObject.kind=Pod"
    ).items
    core.delete_namespaced_pod("looping", bed.team, grace_period_seconds=0)
    assert [o for o in outcomes if o[1] != "pulled"] == []
    signers = [signer for signer, _ in outcomes]
    assert "old" in signers, signers
    assert after >= 3, f"the rotation did not finish: {signers}"
    assert node_held_new_ca, "the node's ca.crt lacked a CA when the new one signed"
    pulled = [e for e in looping if e.reason == "Pulled"]
    failed = [e.message for e in looping if e.reason == "Failed" and "pull" in e.message.lower()]
    assert failed == []
    assert sum(e.count or 1 for e in pulled) >= 3, [(e.reason, e.count) for e in looping]
    # The Pods the registry and token server now run serve the new CA's certificates,
    # and the node trusts them through the agent's file.
    assert bed.registry is not None
    fresh_ca = _ca_pem(bed)
    assert fresh_ca != first_ca
    assert fresh_ca.strip() in node_ca.read_text()
    refreshed = served(bed.api, bed.home, "registry")
    assert fresh_ca.strip().encode() in refreshed.ca_pem


def test_a_pod_runs_within_a_minute_of_the_push_and_an_ungranted_one_meets_auth(
    bed: Bed,
) -> None:
    """Nothing but Berth configured the node: the kubelet resolves the registry's name
    and its token realm's, and trusts the CA, through the agent's files alone."""
    assert bed.registry is not None, "the Registry test failed"
    core = client.CoreV1Api(bed.api)
    image = bed.image(f"{bed.team}/fresh", "1")
    archive = workload_image(bed.workdir / "fresh", "localhost/e2e/fresh:1",
                             {"/proof.txt": "fresh\n"})  # fmt: skip
    pushed = ns.skopeo_copy(f"oci-archive:{archive}", f"docker://{image}", creds=bed.creds,
                            cert_dir=bed.cert_dir)  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr
    pushed_at = time.monotonic()
    ns.run_pod(bed.api, bed.team, "fresh", image, "cat /proof.txt; sleep 3600")

    def running() -> bool:
        pod = core.read_namespaced_pod("fresh", bed.team)
        return pod.status.phase == "Running"

    wait_for("the Pod Running", running, 60, interval=0.5)
    assert time.monotonic() - pushed_at < 60
    ns.assert_really_running(core.read_namespaced_pod("fresh", bed.team))

    # A namespace no grant selects: no pull Secret, so the registry refuses the kubelet.
    # The refusal is an authorization error: the name resolved and TLS verified.
    outsider = ns.labelled_namespace(bed.api, f"outsider-{uuid.uuid4().hex[:6]}", {})
    try:
        ns.run_pod(bed.api, outsider, "intruder", image, "true")
        outcome = ns.wait_outcome(bed.api, outsider, "intruder")
    finally:
        ns.delete_namespaces(bed.api, outsider)
    assert outcome.startswith(("ErrImagePull", "ImagePullBackOff")), outcome
    assert "401" in outcome or "unauthorized" in outcome.lower(), outcome
    for other_failure in ("x509", "certificate", "no such host", "connection refused"):
        assert other_failure not in outcome, outcome


def _agent_files(bed: Bed) -> tuple[bool, bool]:
    """(hosts lines, certs.d folder) of the agent's for the Registry, on the node."""
    owner = f"{bed.home}/registry"
    hosts_file = Path(bed.node.agent_settings()["hostsFile"])
    folder = bed.node.certs_d / f"registry.{bed.home}.svc:5000"
    return f"# berth {owner}" in hosts_file.read_text(), (folder / ".berth-owner").is_file()


def test_a_node_leaving_the_agents_scope_loses_its_files_and_gets_them_back(
    bed: Bed, kubeconfig: Path
) -> None:
    """The agent's nodeSelector no longer matches the node: the DaemonSet stops its Pod
    there, and the agent, told apart from a restart, removes its files. The node
    labelled to match again gets an agent and its files back."""
    assert _agent_files(bed) == (True, True)
    core = client.CoreV1Api(bed.api)
    label = "berth.dev/e2e-agent"
    restored = False
    _upgrade(bed, kubeconfig, f"nodeAgent.nodeSelector.{label.replace('.', chr(92) + '.')}=yes")
    try:
        wait_for("the agent's files gone", lambda: _agent_files(bed) == (False, False), 180,
                 interval=1)  # fmt: skip

        def out_of_scope() -> bool:
            message = ns.condition(_registry(bed), "NodesReady").get("message", "")
            return f"{ns.NODE_NAME}: outside the agent's nodeSelector ({label}=yes)" in message

        wait_for("NodesReady to say why", out_of_scope, 120, interval=1)
        assert _registry(bed)["status"]["nodes"] == {"configured": 0, "total": 2}
        core.patch_node(ns.NODE_NAME, {"metadata": {"labels": {label: "yes"}}})
        wait_for("the agent's files back", lambda: _agent_files(bed) == (True, True), 180,
                 interval=1)  # fmt: skip
        wait_for(
            "the real node configured again",
            lambda: _registry(bed)["status"]["nodes"] == {"configured": 1, "total": 2},
            120,
            interval=1,
        )
        # Back to no nodeSelector: the DaemonSet replaces its Pod on the node, a restart,
        # and the files stay throughout.
        [before] = _agent_pods(bed)
        _upgrade(bed, kubeconfig)
        samples: list[tuple[bool, bool]] = []

        def replaced() -> bool:
            samples.append(_agent_files(bed))
            pods = _agent_pods(bed)
            return bool(pods) and before not in pods

        restored = True
        wait_for("the agent Pod replaced", replaced, 180, interval=0.5)
        assert set(samples) == {(True, True)}, samples
    finally:
        if not restored:
            _upgrade(bed, kubeconfig)
        core.patch_node(ns.NODE_NAME, {"metadata": {"labels": {label: None}}})


def _agent_pods(bed: Bed) -> list[str]:
    core = client.CoreV1Api(bed.api)
    pods = core.list_namespaced_pod("berth-node", label_selector=agent_selector()).items
    return [p.metadata.name for p in pods if p.status.phase == "Running"]


def test_deleting_the_registry_removes_the_agents_files_and_no_others(bed: Bed) -> None:
    owner = f"{bed.home}/registry"
    hosts_file = Path(bed.node.agent_settings()["hostsFile"])
    certs = [bed.node.certs_d, Path(bed.node.agent_settings()["crioCertsDir"])]
    host = f"registry.{bed.home}.svc:5000"
    for root in certs:
        assert (root / host / ".berth-owner").read_text().strip() == owner
    assert f"# berth {owner}" in hosts_file.read_text()
    # Someone else's files in the same places.
    foreign = bed.node.certs_d / "foreign.example:5000"
    foreign.mkdir()
    (foreign / "hosts.toml").write_text('server = "https://foreign.example:5000"\n')
    foreign_line = "10.1.2.3 foreign.example # not Berth's"
    with hosts_file.open("a") as file:
        file.write(foreign_line + "\n")
    try:
        client.CustomObjectsApi(bed.api).delete_namespaced_custom_object(
            GROUP, VERSION, bed.home, "registries", "registry"
        )

        def gone() -> bool:
            return f"# berth {owner}" not in hosts_file.read_text() and not any(
                (root / host).exists() for root in certs
            )

        wait_for("the agent to remove its files", gone, 90, interval=1)
        assert (foreign / "hosts.toml").read_text() == 'server = "https://foreign.example:5000"\n'
        assert foreign_line in hosts_file.read_text().splitlines()
    finally:
        (foreign / "hosts.toml").unlink(missing_ok=True)
        foreign.rmdir()
        text = hosts_file.read_text()
        with hosts_file.open("r+") as file:
            file.write("".join(f"{line}\n" for line in text.splitlines() if line != foreign_line))
            file.truncate()
