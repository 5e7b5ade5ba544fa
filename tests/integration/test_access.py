"""Access end to end: the operator (in-process, real control plane) keeps robots, pull
Secrets and ServiceAccount references; the token server runs in-process on the very
configuration the operator wrote into the cluster; a real registry trusts its tokens.

Pods do not run on the test bed, so this test plays the kubelet: it copies the token
server's mounted Secret into a file whenever it changes, and pulls with whatever the
namespace's pull Secret holds at that moment.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from berth.auth.config import ConfigFile
from berth.auth.tokenreview import KubernetesTokenReviewer
from berth.auth.tokenserver import create_app
from berth.constants import GROUP, VERSION
from berth.reconcile import access
from berth.registry.client import RegistryClient, RegistryError
from testbed.cluster import KWOK_NAMESPACE_ANNOTATIONS, wait_for
from testbed.images import Pusher, PushError, random_image
from testbed.registry import HtpasswdFile, LocalRegistry, TokenAuth
from tests.integration.node_support import create_registry

pytestmark = pytest.mark.usefixtures("operator")


@dataclass
class Bed:
    api: client.ApiClient
    namespace: str  # the Registry's
    label: str  # the label key whose value "push" selects namespaces for push access
    push_a: str
    push_b: str
    pull_only: str
    registry: LocalRegistry

    @property
    def secret_name(self) -> str:
        return f"berth-{self.namespace}-reg"

    def credential(self, namespace: str) -> tuple[str, str]:
        secret = client.CoreV1Api(self.api).read_namespaced_secret(self.secret_name, namespace)
        found = access.credential_of({"data": secret.data})
        assert found is not None
        return found


def _registry_spec(label: str, pull_only: str) -> dict[str, Any]:
    return {
        "storage": {"emptyDir": {}},
        "tls": {"mode": "Disabled"},
        "auth": {"mode": "Token"},
        "access": [
            {
                "namespaceSelector": {"matchLabels": {label: "push"}},
                "serviceAccounts": ["default", "builder"],
                "permission": "push",
            },
            {"namespaces": [pull_only], "permission": "pull", "serviceAccounts": ["*"]},
        ],
    }


def _make_namespace(api: client.ApiClient, labels: dict[str, str] | None = None) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    metadata = {"name": name, "labels": labels or {}, "annotations": KWOK_NAMESPACE_ANNOTATIONS}
    client.CoreV1Api(api).create_namespace({"metadata": metadata})
    return name


def _secret_exists(api: client.ApiClient, name: str, namespace: str) -> bool:
    try:
        client.CoreV1Api(api).read_namespaced_secret(name, namespace)
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def _pull_secret_refs(api: client.ApiClient, namespace: str, account: str) -> list[str]:
    sa = client.CoreV1Api(api).read_namespaced_service_account(account, namespace)
    return [ref.name for ref in sa.image_pull_secrets or []]


async def _copy_mounted_config(api: client.ApiClient, bed_namespace: str, target: Path) -> None:
    """Plays the kubelet: the token server's Secret, written to disk whenever it changes
    (paths adjusted to this machine)."""
    last = None
    core = client.CoreV1Api(api)
    while True:
        with contextlib.suppress(ApiException):
            secret = await asyncio.to_thread(
                core.read_namespaced_secret, "reg-auth-config", bed_namespace
            )
            text = base64.b64decode(secret.data["config.json"]).decode()
            if text != last:
                document = json.loads(text)
                document["signingKeyFile"] = str(target.parent / "tls.key")
                document["signingCertFile"] = str(target.parent / "tls.crt")
                staging = target.with_suffix(".tmp")
                staging.write_text(json.dumps(document))
                staging.replace(target)
                last = text
        await asyncio.sleep(0.3)


async def eventually(what: str, check: Any, timeout: float) -> None:
    """wait_for without blocking the event loop the token server runs on."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await asyncio.to_thread(check):
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.1)


@pytest.fixture
def fast_rotation() -> Iterator[None]:
    saved = (access.TIMING.propagation, access.TIMING.retire_grace)
    access.TIMING.propagation = access.datetime.timedelta(seconds=3)
    access.TIMING.retire_grace = access.datetime.timedelta(seconds=6)
    yield
    access.TIMING.propagation, access.TIMING.retire_grace = saved


@pytest.fixture
async def bed(
    api_client: client.ApiClient, namespace: str, kubeconfig: Path, tmp_path: Path
) -> AsyncIterator[Bed]:
    core = client.CoreV1Api(api_client)
    label = f"access.berth.dev/{uuid.uuid4().hex[:8]}"
    push_a = _make_namespace(api_client, {label: "push"})
    push_b = _make_namespace(api_client, {label: "push"})
    pull_only = _make_namespace(api_client)
    created = [push_a, push_b, pull_only]
    create_registry(api_client, namespace, "reg", _registry_spec(label, pull_only))
    try:
        for ns in created:
            wait_for(
                f"the pull Secret in {ns}",
                lambda ns=ns: _secret_exists(api_client, f"berth-{namespace}-reg", ns),
                timeout=20,
            )
        wait_for(
            "the token server config",
            lambda: _secret_exists(api_client, "reg-auth-config", namespace),
            timeout=20,
        )
        signing = core.read_namespaced_secret("reg-token-signing", namespace).data
        for key in ("tls.crt", "tls.key"):
            (tmp_path / key).write_bytes(base64.b64decode(signing[key]))
        config_path = tmp_path / "config.json"
        kubelet = asyncio.create_task(_copy_mounted_config(api_client, namespace, config_path))
        await eventually("the mounted config", config_path.exists, timeout=10)
        reviewer = KubernetesTokenReviewer(str(kubeconfig))
        runner = web.AppRunner(create_app(ConfigFile(config_path, reload_interval=0.2), reviewer))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        realm = f"http://127.0.0.1:{runner.addresses[0][1]}/token"
        registry = LocalRegistry(
            tmp_path / "registry",
            auth=TokenAuth(
                realm, f"reg.{namespace}.svc", "berth", (tmp_path / "tls.crt").read_bytes()
            ),
        )
        await asyncio.to_thread(registry.start)
        try:
            yield Bed(api_client, namespace, label, push_a, push_b, pull_only, registry)
        finally:
            registry.stop()
            kubelet.cancel()
            await runner.cleanup()
            reviewer.close()
    finally:
        for ns in created:
            core.delete_namespace(ns)


async def _push(bed: Bed, credential: tuple[str, str], repository: str) -> None:
    async with Pusher(bed.registry.url, username=credential[0], password=credential[1]) as pusher:
        await pusher.push(repository, "v1", random_image())


async def _pull(bed: Bed, credential: tuple[str, str], repository: str) -> str:
    async with RegistryClient(
        bed.registry.url, username=credential[0], password=credential[1], retries=0
    ) as registry_client:
        return (await registry_client.get_manifest(repository, "v1")).digest


async def test_each_namespace_reaches_only_its_own_repositories(bed: Bed) -> None:
    a, b, p = bed.credential(bed.push_a), bed.credential(bed.push_b), bed.credential(bed.pull_only)
    await _push(bed, a, f"{bed.push_a}/app")
    await _push(bed, b, f"{bed.push_b}/app")
    assert await _pull(bed, a, f"{bed.push_a}/app")

    with pytest.raises(RegistryError) as refused:
        await _pull(bed, a, f"{bed.push_b}/app")
    assert refused.value.status in (401, 403)
    with pytest.raises(PushError):  # pull-only: the registry refuses the push
        await _push(bed, p, f"{bed.pull_only}/app")
    with pytest.raises(PushError):
        await _push(bed, a, f"{bed.push_b}/app")


async def test_pull_secret_names_every_registry_host(bed: Bed) -> None:
    secret = client.CoreV1Api(bed.api).read_namespaced_secret(bed.secret_name, bed.push_a)
    auths = json.loads(base64.b64decode(secret.data[".dockerconfigjson"]))["auths"]
    service = client.CoreV1Api(bed.api).read_namespaced_service("reg", bed.namespace)
    assert set(auths) == {
        f"reg.{bed.namespace}.svc:5000",
        f"reg.{bed.namespace}.svc.cluster.local:5000",
        f"{service.spec.cluster_ip}:5000",
    }
    assert secret.type == "kubernetes.io/dockerconfigjson"


async def test_service_account_token_gets_its_namespace_grants(bed: Bed) -> None:
    core = client.CoreV1Api(bed.api)
    core.create_namespaced_service_account(bed.push_a, {"metadata": {"name": "builder"}})
    token = core.create_namespaced_service_account_token(
        "builder", bed.push_a, {"spec": {"expirationSeconds": 600}}
    ).status.token
    credential = ("builder", token)
    await _push(bed, credential, f"{bed.push_a}/built")
    with pytest.raises(PushError):
        await _push(bed, credential, f"{bed.push_b}/built")


async def test_labelled_namespace_is_served_within_seconds_and_unlabelled_cleaned(
    bed: Bed,
) -> None:
    api, core = bed.api, client.CoreV1Api(bed.api)
    newcomer = _make_namespace(api)
    try:
        wait_for("the default ServiceAccount", lambda: _has_sa(api, newcomer, "default"), 15)
        # Somebody else's entry, which Berth must never clobber.
        core.patch_namespaced_service_account(
            "default", newcomer, {"imagePullSecrets": [{"name": "someone-elses"}]}
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        core.patch_namespace(newcomer, {"metadata": {"labels": {bed.label: "push"}}})
        wait_for(
            "the Secret and the ServiceAccount reference",
            lambda: (
                _secret_exists(api, bed.secret_name, newcomer)
                and bed.secret_name in _pull_secret_refs(api, newcomer, "default")
            ),
            timeout=5,
            interval=0.1,
        )
        assert loop.time() - started < 5
        assert "someone-elses" in _pull_secret_refs(api, newcomer, "default")

        core.patch_namespace(newcomer, {"metadata": {"labels": {bed.label: None}}})
        wait_for(
            "the Secret and the reference to go",
            lambda: (
                not _secret_exists(api, bed.secret_name, newcomer)
                and bed.secret_name not in _pull_secret_refs(api, newcomer, "default")
            ),
            timeout=10,
        )
        assert _pull_secret_refs(api, newcomer, "default") == ["someone-elses"]
    finally:
        core.delete_namespace(newcomer)


def _has_sa(api: client.ApiClient, namespace: str, name: str) -> bool:
    try:
        client.CoreV1Api(api).read_namespaced_service_account(name, namespace)
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


async def test_pulls_never_fail_during_a_rotation(bed: Bed, fast_rotation: None) -> None:
    repository = f"{bed.push_a}/app"
    await _push(bed, bed.credential(bed.push_a), repository)
    before = bed.credential(bed.push_a)
    client.CustomObjectsApi(bed.api).patch_namespaced_custom_object(
        GROUP,
        VERSION,
        bed.namespace,
        "registries",
        "reg",
        {"metadata": {"annotations": {"berth.dev/rotate-credentials": "now-1"}}},
    )
    pulls, failures, seen = 0, [], {before[0]}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 40
    while loop.time() < deadline:
        credential = await asyncio.to_thread(bed.credential, bed.push_a)  # as the kubelet does
        seen.add(credential[0])
        try:
            await _pull(bed, credential, repository)
        except RegistryError as error:
            failures.append(f"{credential[0]}: {error}")
        pulls += 1
        if credential[0] != before[0] and pulls > 20 and await _old_robot_gone(bed, before):
            break
        await asyncio.sleep(0.1)
    assert len(seen) == 2, f"the credential was rotated (saw {seen})"
    assert not failures, failures
    assert await _old_robot_gone(bed, before), "the old credential is revoked after its grace"
    status = client.CustomObjectsApi(bed.api).get_namespaced_custom_object(
        GROUP, VERSION, bed.namespace, "registries", "reg"
    )["status"]
    assert status["lastCredentialRotation"]
    assert status["accessNamespaces"] == 3


async def _old_robot_gone(bed: Bed, old: tuple[str, str]) -> bool:
    try:
        await _pull(bed, old, f"{bed.push_a}/app")
    except RegistryError as error:
        return error.status == 401
    return False


async def test_no_credential_reaches_the_logs(bed: Bed, operator: Any) -> None:
    await _push(bed, bed.credential(bed.push_a), f"{bed.push_a}/app")
    core = client.CoreV1Api(bed.api)
    values = [bed.credential(ns)[1] for ns in (bed.push_a, bed.push_b, bed.pull_only)]
    admin = core.read_namespaced_secret("reg-admin", bed.namespace).data["password"]
    http = core.read_namespaced_secret("reg-secrets", bed.namespace).data["http-secret"]
    values += [base64.b64decode(admin).decode(), base64.b64decode(http).decode()]
    logs = operator.log_text()
    assert logs, "the operator logged something to scan"
    assert not [v[:4] for v in values if v in logs]


async def test_deleting_the_registry_removes_every_copy(bed: Bed) -> None:
    client.CoreV1Api(bed.api).create_namespaced_service_account(
        bed.push_a, {"metadata": {"name": "builder"}}
    )
    wait_for(
        "builder's reference",
        lambda: bed.secret_name in _pull_secret_refs(bed.api, bed.push_a, "builder"),
        timeout=10,
    )
    client.CustomObjectsApi(bed.api).delete_namespaced_custom_object(
        GROUP, VERSION, bed.namespace, "registries", "reg"
    )
    wait_for(
        "every pull Secret, reference and the ClusterRoleBinding to go",
        lambda: (
            not any(
                _secret_exists(bed.api, bed.secret_name, ns)
                or bed.secret_name in _pull_secret_refs(bed.api, ns, "default")
                for ns in (bed.push_a, bed.push_b, bed.pull_only)
            )
            and bed.secret_name not in _pull_secret_refs(bed.api, bed.push_a, "builder")
            and not _crb_exists(bed.api, f"berth:{bed.namespace}:reg-auth")
        ),
        timeout=20,
    )


def _crb_exists(api: client.ApiClient, name: str) -> bool:
    try:
        client.RbacAuthorizationV1Api(api).read_cluster_role_binding(name)
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


async def test_htpasswd_mode_robots_log_in_and_changes_roll_the_pods(
    api_client: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    label = f"access.berth.dev/{uuid.uuid4().hex[:8]}"
    spec = {
        "storage": {"emptyDir": {}},
        "tls": {"mode": "Disabled"},
        "auth": {"mode": "Htpasswd"},
        "access": [{"namespaceSelector": {"matchLabels": {label: "push"}}, "permission": "push"}],
    }
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Registry", "metadata": {"name": "basic"}}
    client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        GROUP, VERSION, namespace, "registries", {**body, "spec": spec}
    )
    core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    secret_name = f"berth-{namespace}-basic"

    def checksum() -> str:
        deployment = apps.read_namespaced_deployment("basic", namespace)
        return str(deployment.spec.template.metadata.annotations["berth.dev/config-checksum"])

    await eventually("the Deployment", lambda: _has_deployment(api_client, namespace), 20)
    before = checksum()
    team = _make_namespace(api_client, {label: "push"})
    try:
        await eventually(
            "the pull Secret", lambda: _secret_exists(api_client, secret_name, team), 20
        )
        username, password = access.credential_of(
            {"data": core.read_namespaced_secret(secret_name, team).data}
        ) or ("", "")

        def htpasswd_has_robot() -> bool:
            data = core.read_namespaced_secret("basic-secrets", namespace).data
            return f"{username}:" in base64.b64decode(data["htpasswd"]).decode()

        await eventually("the robot in htpasswd", htpasswd_has_robot, 20)
        await eventually("a rolling restart", lambda: checksum() != before, 20)

        # The very htpasswd file the Pods mount, served by the real registry.
        htpasswd = base64.b64decode(
            core.read_namespaced_secret("basic-secrets", namespace).data["htpasswd"]
        ).decode()
        registry = LocalRegistry(tmp_path / "registry", auth=HtpasswdFile(htpasswd))
        await asyncio.to_thread(registry.start)
        try:
            await _push(
                Bed(api_client, namespace, label, team, team, team, registry),
                (username, password),
                f"{team}/app",
            )
            with pytest.raises(PushError):
                await _push(
                    Bed(api_client, namespace, label, team, team, team, registry),
                    (username, "wrong"),
                    f"{team}/app",
                )
        finally:
            registry.stop()
    finally:
        core.delete_namespace(team)


def _has_deployment(api: client.ApiClient, namespace: str) -> bool:
    try:
        client.AppsV1Api(api).read_namespaced_deployment("basic", namespace)
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True
