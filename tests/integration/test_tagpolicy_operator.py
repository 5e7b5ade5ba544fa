"""TagPolicies with the operator in-process, against two real registries: `upstream`
plays an outside registry images are imported from, `local` is the cluster's registry
(an Unmanaged Registry with basic auth) and sends its push notifications to the
operator's endpoint."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from kubernetes import client
from prometheus_client import REGISTRY

from berth.cli import main
from berth.constants import GROUP, VERSION
from berth.registry.client import RegistryClient
from testbed.cluster import KWOK_NAMESPACE_ANNOTATIONS, free_port, wait_for
from testbed.images import Image, Index, push_sync, random_image, random_index
from testbed.registry import HtpasswdAuth, LocalRegistry

from .prune_support import condition, create_object, custom, get_object, wait_condition

pytestmark = pytest.mark.usefixtures("operator")

USER, PASSWORD = "berth-test", "tagpolicy-test-password"
PLURAL = "tagpolicies"
# Pushed blobs arrive through the upload endpoint: PATCH/PUT on .../blobs/uploads/<uuid>.
# The registry's access log (combined format): pushed blob data arrives by PATCH or PUT
# on .../blobs/uploads/<session>; a mount is a POST .../blobs/uploads/?mount=... that
# answers 201 Created.
BLOB_UPLOAD_RE = re.compile(r'"(?:PUT|PATCH) /v2/\S+/blobs/uploads/\S* HTTP/1\.1" 20\d')


@dataclass
class Registries:
    namespace: str
    upstream: LocalRegistry
    local: LocalRegistry

    def push_upstream(self, repository: str, tag: str, artifact: Image | Index) -> None:
        push_sync(self.upstream.url, [(repository, tag, artifact)])

    def push_local(self, repository: str, tag: str, artifact: Image | Index) -> None:
        push_sync(self.local.url, [(repository, tag, artifact)], username=USER, password=PASSWORD)

    def local_digest(self, repository: str, tag: str) -> str:
        async def head() -> str:
            async with RegistryClient(self.local.url, username=USER, password=PASSWORD) as c:
                return (await c.head_manifest(repository, tag)).digest

        return asyncio.run(head())

    def local_log(self) -> str:
        return self.local.log_path.read_text()


def _setup(
    api_client: client.ApiClient,
    namespace: str,
    tmp_path: Path,
    notifications_url: str | None,
) -> Iterator[Registries]:
    core = client.CoreV1Api(api_client)
    token = secrets.token_urlsafe(24)
    # The notifications token is the user's to choose for an Unmanaged registry: the
    # operator keeps a Secret that exists.
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "local-notifications"}, "stringData": {"token": token}}
    )
    core.create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "local-creds"},
            "type": "kubernetes.io/basic-auth",
            "stringData": {"username": USER, "password": PASSWORD},
        },
    )
    notifications = []
    if notifications_url:
        notifications.append(
            {
                "name": "berth",
                "url": f"{notifications_url}/{namespace}/local",
                "headers": {"Authorization": [f"Bearer {token}"]},
                "timeout": "2s",
                "threshold": 3,
                "backoff": "1s",
                "ignoredmediatypes": ["application/octet-stream"],
            }
        )
    upstream = LocalRegistry(tmp_path / "upstream")
    local = LocalRegistry(
        tmp_path / "local", auth=HtpasswdAuth({USER: PASSWORD}), notifications=notifications
    )
    with upstream, local:
        create_object(
            api_client,
            namespace,
            "registries",
            "Registry",
            "local",
            {
                "managementState": "Unmanaged",
                "external": {"url": local.url, "credentialsSecretRef": {"name": "local-creds"}},
            },
        )
        yield Registries(namespace, upstream, local)


@pytest.fixture
def registries(
    api_client: client.ApiClient, namespace: str, tmp_path: Path, operator: Any
) -> Iterator[Registries]:
    yield from _setup(api_client, namespace, tmp_path, operator.notifications_url)


@pytest.fixture
def polled_registries(
    api_client: client.ApiClient, namespace: str, tmp_path: Path, operator: Any
) -> Iterator[Registries]:
    """The local registry sends no notifications; the operator polls every 2 s."""
    before = operator.memo.tag_poll_interval
    operator.memo.tag_poll_interval = 2.0
    try:
        yield from _setup(api_client, namespace, tmp_path, None)
    finally:
        operator.memo.tag_poll_interval = before


def create_policy(
    api_client: client.ApiClient, namespace: str, name: str, spec: dict[str, Any]
) -> None:
    create_object(
        api_client, namespace, PLURAL, "TagPolicy", name, {"registryRef": {"name": "local"}, **spec}
    )


def tag_status(api_client: client.ApiClient, namespace: str, name: str, tag: str) -> dict[str, Any]:
    policy = get_object(api_client, namespace, PLURAL, name)
    for entry in (policy.get("status") or {}).get("tags") or []:
        if entry["tag"] == tag:
            return dict(entry)
    return {}


def history(api_client: client.ApiClient, namespace: str, name: str, tag: str) -> list[str]:
    return [
        item["digest"] for item in tag_status(api_client, namespace, name, tag).get("items", [])
    ]


def wait_history(
    api_client: client.ApiClient,
    namespace: str,
    name: str,
    tag: str,
    expected: list[str],
    timeout: float = 30,
) -> list[dict[str, Any]]:
    seen: list[str] = []

    def check() -> bool:
        nonlocal seen
        seen = history(api_client, namespace, name, tag)
        return seen == expected

    try:
        wait_for(f"history of {name}:{tag}", check, timeout, interval=0.2)
    except Exception as error:
        raise AssertionError(f"{error}; history is {seen}, expected {expected}") from None
    return list(tag_status(api_client, namespace, name, tag)["items"])


def tag_condition(entry: dict[str, Any], condition_type: str) -> dict[str, Any]:
    for item in entry.get("conditions") or []:
        if item["type"] == condition_type:
            return dict(item)
    return {}


def events(api_client: client.ApiClient, namespace: str, reason: str) -> list[str]:
    listed = client.CoreV1Api(api_client).list_namespaced_event(namespace)
    return [e.message for e in listed.items if e.reason == reason]


# -- import ----------------------------------------------------------------------------


def test_import_of_single_and_multi_platform_images_keeps_upstream_digests(
    api_client: client.ApiClient, registries: Registries
) -> None:
    ns = registries.namespace
    single = random_image(layers=2)
    multi = random_index(platforms=("linux/amd64", "linux/arm64", "linux/s390x"))
    registries.push_upstream("library/app", "single", single)
    registries.push_upstream("library/app", "multi", multi)
    upstream = registries.upstream.host
    create_policy(
        api_client,
        ns,
        "web",
        {
            "tags": [
                {
                    "name": "single",
                    "from": {"image": f"{upstream}/library/app:single"},
                    "importPolicy": {"insecure": True},
                },
                {
                    "name": "multi",
                    "from": {"image": f"{upstream}/library/app:multi"},
                    "importPolicy": {"insecure": True},
                },
            ]
        },
    )
    ready = wait_condition(api_client, ns, PLURAL, "web", "Ready", "True")
    assert ready["message"] == f"2 of 2 tags in place in {ns}/web"
    policy = get_object(api_client, ns, PLURAL, "web")
    assert policy["status"]["pullSpec"] == f"{registries.local.host}/{ns}/web"

    for tag, artifact in (("single", single), ("multi", multi)):
        entry = tag_status(api_client, ns, "web", tag)
        (item,) = entry["items"]
        assert item["digest"] == artifact.digest
        assert item["source"] == f"{upstream}/library/app:{tag}"
        assert item["generation"] == 1
        imported = tag_condition(entry, "ImportSuccess")
        assert imported["status"] == "True", imported
        assert imported["reason"] == "Imported"

    async def pull_back() -> None:
        async with RegistryClient(registries.local.url, username=USER, password=PASSWORD) as c:
            assert (await c.get_manifest(f"{ns}/web", "single")).digest == single.digest
            index = await c.get_manifest(f"{ns}/web", "multi")
            assert index.digest == multi.digest
            assert [m.digest for m in index.children] == [i.digest for i in multi.images]
            for image in (single, *multi.images):
                manifest = await c.get_manifest(f"{ns}/web", image.digest)
                for blob in image.blobs:
                    assert await c.get_blob(f"{ns}/web", blob.digest) == blob.data
                assert manifest.digest == image.digest

    asyncio.run(pull_back())


def test_scheduled_import_follows_upstream_and_adds_history_only_on_change(
    api_client: client.ApiClient, registries: Registries
) -> None:
    ns = registries.namespace
    first, second = random_image(), random_image()
    registries.push_upstream("team/base", "latest", first)
    source = f"{registries.upstream.host}/team/base:latest"
    create_policy(
        api_client,
        ns,
        "base",
        {
            "tags": [
                {
                    "name": "latest",
                    "from": {"image": source},
                    "importPolicy": {"scheduled": True, "interval": "2s", "insecure": True},
                }
            ]
        },
    )
    wait_history(api_client, ns, "base", "latest", [first.digest])

    # Unchanged upstream: the source is asked again and again, and nothing is added.
    def head_requests() -> int:
        text = registries.upstream.log_path.read_text()
        return text.count('"HEAD /v2/team/base/manifests/latest HTTP/1.1" 200')

    asked = head_requests()
    wait_for("two more scheduled checks", lambda: head_requests() >= asked + 2, 20, interval=0.5)
    assert history(api_client, ns, "base", "latest") == [first.digest]

    # Upstream moves: re-imported, and history grows, newest first.
    registries.push_upstream("team/base", "latest", second)
    items = wait_history(api_client, ns, "base", "latest", [second.digest, first.digest])
    assert [item["source"] for item in items] == [source, source]
    assert items[0]["created"] >= items[1]["created"]
    assert registries.local_digest(f"{ns}/base", "latest") == second.digest


def test_a_failed_import_is_reported_per_tag_with_a_readable_reason(
    api_client: client.ApiClient, registries: Registries
) -> None:
    ns = registries.namespace
    registries.push_upstream("team/base", "v1", random_image())
    upstream = registries.upstream.host
    create_policy(
        api_client,
        ns,
        "mixed",
        {
            "tags": [
                {
                    "name": "good",
                    "from": {"image": f"{upstream}/team/base:v1"},
                    "importPolicy": {"insecure": True},
                },
                {
                    "name": "bad",
                    "from": {"image": f"{upstream}/team/base:missing"},
                    "importPolicy": {"insecure": True},
                },
            ]
        },
    )
    ready = wait_condition(api_client, ns, PLURAL, "mixed", "Ready", "False", reason="ImportFailed")
    assert f"bad: {upstream}/team/base:missing" in ready["message"]
    bad = tag_condition(tag_status(api_client, ns, "mixed", "bad"), "ImportSuccess")
    assert bad["status"] == "False"
    assert bad["reason"] == "NotFound"
    assert bad["message"] == f"{upstream}/team/base:missing: not found in its registry"
    good = tag_condition(tag_status(api_client, ns, "mixed", "good"), "ImportSuccess")
    assert good["status"] == "True"
    wait_for("an ImportFailed event", lambda: events(api_client, ns, "ImportFailed"), 10)


# -- immutable tags --------------------------------------------------------------------


def _overwrite_and_time_the_revert(
    api_client: client.ApiClient, registries: Registries, name: str
) -> float:
    ns = registries.namespace
    original, intruder = random_image(), random_image()
    registries.push_local(f"{ns}/{name}", "v1.0.0", original)
    create_policy(api_client, ns, name, {"immutableTags": ["v*"]})
    wait_history(api_client, ns, name, "v1.0.0", [original.digest])

    registries.push_local(f"{ns}/{name}", "v1.0.0", intruder)
    pushed = time.monotonic()
    # The push landed (a HEAD right after may already see the revert).
    wait_for(
        "the tag to be back on its recorded digest",
        lambda: (
            registries.local_digest(f"{ns}/{name}", "v1.0.0") == original.digest
            and "ImmutableTagReverted"
            in "".join(
                e.reason or "" for e in client.CoreV1Api(api_client).list_namespaced_event(ns).items
            )
        ),
        timeout=15,
        interval=0.1,
    )
    elapsed = time.monotonic() - pushed
    entry = tag_status(api_client, ns, name, "v1.0.0")
    assert [i["digest"] for i in entry["items"]] == [original.digest]
    reverted = tag_condition(entry, "Immutable")
    assert reverted["reason"] == "Reverted"
    assert intruder.digest in reverted["message"]
    assert original.digest in reverted["message"]
    (message,) = events(api_client, ns, "ImmutableTagReverted")
    assert f"moved it to {intruder.digest}" in message
    return elapsed


def test_an_immutable_tag_moved_by_a_push_is_put_back_through_notifications(
    api_client: client.ApiClient, registries: Registries, operator: Any
) -> None:
    # The operator polls every 300 s here: only the notification can be this fast.
    assert operator.memo.tag_poll_interval >= 300
    woken = REGISTRY.get_sample_value("berth_notification_wakeups_total") or 0.0
    elapsed = _overwrite_and_time_the_revert(api_client, registries, "pinned")
    assert elapsed < 10, f"reverted after {elapsed:.1f} s"
    assert (REGISTRY.get_sample_value("berth_notification_wakeups_total") or 0.0) > woken


def test_an_immutable_tag_on_a_registry_without_notifications_is_put_back_by_polling(
    api_client: client.ApiClient, polled_registries: Registries
) -> None:
    elapsed = _overwrite_and_time_the_revert(api_client, polled_registries, "pinned")
    assert elapsed < 10, f"reverted after {elapsed:.1f} s"


# -- promotion -------------------------------------------------------------------------


def test_promotion_dev_stage_prod_mounts_blobs_and_keeps_history_limit(
    api_client: client.ApiClient, registries: Registries
) -> None:
    ns = registries.namespace
    app, release = f"{ns}/app", f"{ns}/release"
    builds = [random_image(layers=3) for _ in range(3)]
    registries.push_local(app, "dev", builds[0])
    log_before = len(registries.local_log())
    create_policy(
        api_client,
        ns,
        "app",
        {
            "historyLimit": 2,
            "tags": [
                {"name": "dev"},
                {"name": "stage", "from": {"tag": "dev"}},
                {"name": "prod", "from": {"tag": "stage"}},
                # Follows dev on every push, where stage was promoted once.
                {"name": "live", "from": {"tag": "dev"}, "importPolicy": {"scheduled": True}},
            ],
        },
    )
    create_policy(
        api_client,
        ns,
        "release",
        {"tags": [{"name": "prod", "from": {"repository": app, "tag": "prod"}}]},
    )
    wait_condition(api_client, ns, PLURAL, "app", "Ready", "True")
    wait_condition(api_client, ns, PLURAL, "release", "Ready", "True", timeout=40)
    digest = builds[0].digest
    for repository, tag in ((app, "stage"), (app, "prod"), (release, "prod")):
        assert registries.local_digest(repository, tag) == digest
    prod = tag_status(api_client, ns, "release", "prod")
    assert prod["items"][0]["source"] == f"{app}:prod"
    assert tag_condition(prod, "ImportSuccess")["reason"] == "Promoted"

    # No layer data moved: every blob of the release repository was mounted from app,
    # and no upload (PATCH/PUT of a blob) happened after the dev push.
    log = registries.local_log()[log_before:]
    mounts = re.findall(
        rf'"POST /v2/{re.escape(release)}/blobs/uploads/\?\S*mount=sha256:[0-9a-f]+\S*'
        r' HTTP/1\.1" 201',
        log,
    )
    assert len(mounts) == len(builds[0].blobs), log[-3000:]
    assert BLOB_UPLOAD_RE.findall(log) == []

    # historyLimit: 2 of dev's three images are kept, newest first.
    dev = [builds[0].digest]
    for build in builds[1:]:
        registries.push_local(app, "dev", build)
        wait_for(
            "live to follow dev",
            lambda build=build: registries.local_digest(app, "live") == build.digest,
            timeout=10,
            interval=0.2,
        )
        dev = [build.digest, *dev][:2]
        wait_history(api_client, ns, "app", "dev", dev)
    assert history(api_client, ns, "app", "dev") == [builds[2].digest, builds[1].digest]
    # stage and prod were promoted once; dev moving does not move them.
    assert registries.local_digest(app, "prod") == digest


# -- permissions -----------------------------------------------------------------------


def test_a_policy_may_only_name_repositories_its_namespace_may_push_to(
    api_client: client.ApiClient, registries: Registries
) -> None:
    ns = registries.namespace
    core = client.CoreV1Api(api_client)
    other = f"{ns}-b"
    core.create_namespace(
        {
            "metadata": {
                "name": other,
                "labels": {"berth.dev/test": "true"},
                "annotations": KWOK_NAMESPACE_ANNOTATIONS,
            }
        }
    )
    try:
        custom(api_client).patch_namespaced_custom_object(
            GROUP,
            VERSION,
            ns,
            "registries",
            "local",
            {"spec": {"access": [{"namespaces": [other], "permission": "push"}]}},
        )
        ref = {"name": "local", "namespace": ns}
        create_object(
            api_client,
            other,
            PLURAL,
            "TagPolicy",
            "own",
            {"registryRef": ref, "tags": [{"name": "x"}]},
        )
        create_object(
            api_client,
            other,
            PLURAL,
            "TagPolicy",
            "theirs",
            {"registryRef": ref, "repository": f"{ns}/secret", "tags": [{"name": "x"}]},
        )
        wait_condition(api_client, other, PLURAL, "own", "Ready", "True")
        refused = wait_condition(
            api_client, other, PLURAL, "theirs", "Ready", "False", reason="RepositoryNotAllowed"
        )
        assert refused["message"].startswith(
            f"spec.repository: namespace {other} may not push to {ns}/secret on Registry {ns}/local"
        )
        wait_for(
            "a RepositoryNotAllowed event",
            lambda: events(api_client, other, "RepositoryNotAllowed"),
            10,
        )
        assert (
            condition(get_object(api_client, other, PLURAL, "theirs"), "Ready")["status"] == "False"
        )
    finally:
        core.delete_namespace(other)


# -- the CLI ---------------------------------------------------------------------------


def test_cli_promote_mounts_and_tags_shows_the_history(
    api_client: client.ApiClient, registries: Registries, kubeconfig: Path
) -> None:
    ns = registries.namespace
    host = registries.local.host
    build = random_image(layers=2)
    registries.push_local(f"{ns}/app", "stage", build)
    create_policy(api_client, ns, "app", {"tags": [{"name": "stage"}, {"name": "prod"}]})
    wait_history(api_client, ns, "app", "stage", [build.digest])
    cli = ["--kubeconfig", str(kubeconfig)]
    # A Registry whose credentials are missing does not stop the search by host.
    create_object(
        api_client,
        ns,
        "registries",
        "Registry",
        "broken",
        {
            "managementState": "Unmanaged",
            "external": {
                "url": f"http://127.0.0.1:{free_port()}",
                "credentialsSecretRef": {"name": "missing"},
            },
        },
    )

    result = CliRunner().invoke(
        main, ["promote", f"{host}/{ns}/app:stage", f"{host}/{ns}/shipped:prod", *cli]
    )
    assert result.exit_code == 0, result.output
    assert f"{host}/{ns}/shipped:prod is now {build.digest}" in result.output
    assert f"Registry {ns}/local" in result.output
    assert f"{len(build.blobs)} blobs mounted" in result.output
    assert "0 uploaded" in result.output
    assert registries.local_digest(f"{ns}/shipped", "prod") == build.digest

    # Within the policy's repository, the push notification records it in history.
    result = CliRunner().invoke(
        main, ["promote", f"{host}/{ns}/app:stage", f"{host}/{ns}/app:prod", *cli]
    )
    assert result.exit_code == 0, result.output
    wait_history(api_client, ns, "app", "prod", [build.digest])

    result = CliRunner().invoke(main, ["tags", f"{ns}/app", *cli])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.split("│")[1].strip() == "stage" for line in lines if "│" in line)
    assert build.digest[:19] in result.output
    assert f"{host}/{ns}/app" in result.output
    as_json = CliRunner().invoke(main, ["tags", f"{ns}/app", "-o", "json", *cli])
    entries = {e["tag"]: e for e in json.loads(as_json.output)}
    assert entries["prod"]["items"][0]["digest"] == build.digest
    assert entries["prod"]["items"][0]["source"] == "push"

    # Refusals are readable and exit non-zero.
    other_host = CliRunner().invoke(
        main, ["promote", f"{host}/{ns}/app:stage", f"elsewhere.example/{ns}/app:prod", *cli]
    )
    assert other_host.exit_code == 1
    assert "name different registries" in other_host.output
    missing = CliRunner().invoke(main, ["tags", f"{ns}/nope", *cli])
    assert missing.exit_code == 1
    assert f"TagPolicy {ns}/nope does not exist" in missing.output


# -- Managed registries ------------------------------------------------------------------


def test_a_managed_registry_is_configured_to_notify_the_operator(
    api_client: client.ApiClient,
    namespace: str,
    tmp_path: Path,
    operator: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The endpoint list the operator writes for a Managed registry, given to the real
    docker-registry as the Pod would get it (REGISTRY_NOTIFICATIONS_ENDPOINTS from the
    Secret): a push reaches the operator's endpoint and is accepted."""
    monkeypatch.setenv("BERTH_NOTIFICATIONS_URL", operator.notifications_url)
    create_object(
        api_client,
        namespace,
        "registries",
        "Registry",
        "managed",
        {"storage": {"emptyDir": {}}, "tls": {"mode": "Disabled"}, "auth": {"mode": "None"}},
    )
    wait_condition(api_client, namespace, "registries", "managed", "Ready", "True", timeout=60)
    core = client.CoreV1Api(api_client)
    deployment = client.AppsV1Api(api_client).read_namespaced_deployment("managed", namespace)
    env = {e.name: e for e in deployment.spec.template.spec.containers[0].env}
    ref = env["REGISTRY_NOTIFICATIONS_ENDPOINTS"].value_from.secret_key_ref
    assert (ref.name, ref.key) == ("managed-notifications", "endpoints")
    stored = core.read_namespaced_secret("managed-notifications", namespace).data
    endpoints = base64.b64decode(stored["endpoints"]).decode()
    http_secret = core.read_namespaced_secret("managed-secrets", namespace).data["http-secret"]
    config = yaml.safe_load(
        core.read_namespaced_config_map("managed-config", namespace).data["config.yml"]
    )
    port, debug_port = free_port(), free_port()
    # Only what differs between a Pod and this machine: paths and loopback ports.
    config["storage"]["filesystem"]["rootdirectory"] = str(tmp_path / "store")
    config["http"]["addr"] = f"127.0.0.1:{port}"
    config["http"]["debug"]["addr"] = f"127.0.0.1:{debug_port}"
    (tmp_path / "config.yml").write_text(yaml.safe_dump(config))
    accepted = (
        REGISTRY.get_sample_value("berth_registry_notifications_total", {"result": "accepted"})
        or 0.0
    )
    with (tmp_path / "registry.log").open("wb") as log:
        process = subprocess.Popen(
            ["/usr/bin/docker-registry", "serve", str(tmp_path / "config.yml")],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={
                "REGISTRY_HTTP_SECRET": base64.b64decode(http_secret).decode(),
                "REGISTRY_NOTIFICATIONS_ENDPOINTS": endpoints,
            },
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for("the registry", lambda: _answers(url), timeout=15)
            push_sync(url, [("team/app", "v1", random_image())])
            wait_for(
                "the operator to accept the registry's notification",
                lambda: (
                    (
                        REGISTRY.get_sample_value(
                            "berth_registry_notifications_total", {"result": "accepted"}
                        )
                        or 0.0
                    )
                    > accepted
                ),
                timeout=15,
            )
        finally:
            process.terminate()
            process.wait(10)
    log_text = (tmp_path / "registry.log").read_text()
    assert (
        f"configuring endpoint berth ({operator.notifications_url}/{namespace}/managed)" in log_text
    )


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v2/", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def test_the_notifications_endpoint_refuses_a_wrong_token(
    registries: Registries, operator: Any
) -> None:
    body = json.dumps({"events": []}).encode()
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        request = urllib.request.Request(
            f"{operator.notifications_url}/{registries.namespace}/local",
            data=body,
            headers={"Content-Type": "application/json", **headers},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 401
    # An unknown registry looks the same: no token, no entry.
    request = urllib.request.Request(
        f"{operator.notifications_url}/{registries.namespace}/nope", data=body
    )
    with pytest.raises(urllib.error.HTTPError) as unknown:
        urllib.request.urlopen(request, timeout=5)
    assert unknown.value.code == 401
