"""The token server in front of the real registry (Debian's distribution 2.8) and, for
ServiceAccount tokens, the real API server.

Every test starts the token server in-process on a free loopback port and a registry
whose `auth.token` trusts its signing certificate (or that certificate's CA), then
pushes and pulls as real clients do: testbed's Pusher, a small bearer-flow client and
skopeo. Logs are captured at DEBUG in every test and must never contain a password, a
hash or a token.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from kubernetes import client

from berth import pki as berth_pki
from berth.auth.config import ConfigFile
from berth.auth.jwt import generate_signing_key_pair
from berth.auth.robots import RobotCredential, new_robot
from berth.auth.tokenreview import KubernetesTokenReviewer, TokenReviewer
from berth.auth.tokenserver import create_app
from testbed.images import MANIFEST_ACCEPT, Pusher, PushError, random_image
from testbed.pki import CertificateAuthority
from testbed.registry import LocalRegistry, TokenAuth

pytestmark = pytest.mark.registry

ISSUER = "berth-test-issuer"
SERVICE = "berth-test-registry"
RELOAD_INTERVAL = 0.1


# -- log hygiene ------------------------------------------------------------------------


@pytest.fixture
def secrets_to_hide() -> list[str]:
    """Tests add every password, hash and token they handle; none may reach a log."""
    return []


class _RawCapture(logging.Handler):
    """Keeps each record as text the moment it is emitted, before any handler's
    SecretRedactor filter can rewrite it: the check must not rely on the redactor."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(autouse=True)
def no_credentials_in_logs(
    caplog: pytest.LogCaptureFixture, secrets_to_hide: list[str]
) -> Iterator[list[str]]:
    caplog.set_level(logging.DEBUG)
    capture = _RawCapture()
    root = logging.getLogger()
    root.handlers.insert(0, capture)  # first, ahead of handlers that redact in place
    try:
        yield capture.lines
    finally:
        root.removeHandler(capture)
    text = "\n".join(capture.lines)
    leaked = [f"{s[:4]}... ({len(s)} chars)" for s in secrets_to_hide if s in text]
    assert not leaked, f"credentials in the logs: {leaked}"


# -- the test bed -----------------------------------------------------------------------


def robot_entry(
    robot: RobotCredential, *actions: str, repositories: tuple[str, ...] = ("{namespace}/**",)
) -> dict[str, object]:
    return {
        "username": robot.username,
        "passwordHash": robot.password_hash,
        "namespace": robot.namespace,
        "grants": [{"repositories": list(repositories), "actions": list(actions)}],
    }


@dataclass
class Bed:
    registry: LocalRegistry
    token_url: str
    config_path: Path
    issuer: str = ISSUER
    documents: list[dict[str, object]] = field(default_factory=list)

    def write_config(
        self,
        robots: list[dict[str, object]],
        *,
        namespace_grants: dict[str, object] | None = None,
        token_review: bool = False,
    ) -> None:
        document = {
            "issuer": self.issuer,
            "service": SERVICE,
            "tokenTTLSeconds": 300,
            "signingKeyFile": "signing.key",
            "signingCertFile": "signing.crt",
            "robots": robots,
            "namespaceGrants": namespace_grants or {},
            "tokenReview": token_review,
        }
        # Mounted Secrets change by an atomic symlink swap; a rename is the same to a reader.
        staging = self.config_path.with_suffix(".tmp")
        staging.write_text(json.dumps(document))
        os.replace(staging, self.config_path)


StartBed = Callable[..., Awaitable[Bed]]


@pytest.fixture
async def start_bed(tmp_path: Path) -> AsyncIterator[StartBed]:
    """Starts a token server and a registry trusting `rootcert_pem`; stops them after."""
    numbers = itertools.count()
    async with contextlib.AsyncExitStack() as stack:

        async def start(
            *,
            key_pem: bytes,
            cert_pem: bytes,
            rootcert_pem: bytes,
            robots: list[dict[str, object]],
            namespace_grants: dict[str, object] | None = None,
            token_review: bool = False,
            reviewer: TokenReviewer | None = None,
            issuer: str = ISSUER,
        ) -> Bed:
            workdir = tmp_path / f"bed-{next(numbers)}"
            workdir.mkdir()
            (workdir / "signing.key").write_bytes(key_pem)
            (workdir / "signing.crt").write_bytes(cert_pem)
            config_path = workdir / "config.json"
            bed = Bed(LocalRegistry(workdir / "registry"), "", config_path, issuer)
            bed.write_config(robots, namespace_grants=namespace_grants, token_review=token_review)

            source = ConfigFile(config_path, reload_interval=RELOAD_INTERVAL)
            runner = web.AppRunner(create_app(source, reviewer))
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            bed.token_url = f"http://127.0.0.1:{port}/token"

            bed.registry.auth = TokenAuth(bed.token_url, SERVICE, ISSUER, rootcert_pem)
            await asyncio.to_thread(bed.registry.start)
            stack.callback(bed.registry.stop)
            return bed

        yield start


@pytest.fixture
def authority() -> CertificateAuthority:
    return CertificateAuthority("berth-token-ca")


@pytest.fixture
def team_a_pusher(secrets_to_hide: list[str]) -> RobotCredential:
    return hidden(new_robot("team-a", "test"), secrets_to_hide)


@pytest.fixture
def team_a_puller(secrets_to_hide: list[str]) -> RobotCredential:
    return hidden(new_robot("team-a", "test"), secrets_to_hide)


@pytest.fixture
def team_b_pusher(secrets_to_hide: list[str]) -> RobotCredential:
    return hidden(new_robot("team-b", "test"), secrets_to_hide)


def hidden(robot: RobotCredential, secrets_to_hide: list[str]) -> RobotCredential:
    secrets_to_hide.extend([robot.password, robot.password_hash])
    return robot


@pytest.fixture
async def bed(
    start_bed: StartBed,
    authority: CertificateAuthority,
    team_a_pusher: RobotCredential,
    team_a_puller: RobotCredential,
    team_b_pusher: RobotCredential,
) -> Bed:
    """Robots of team-a (push, pull-only) and team-b (push); the registry trusts the CA
    that issued the signing certificate."""
    signing = authority.issue("berth-token-signer")
    return await start_bed(
        key_pem=signing.key_pem,
        cert_pem=signing.cert_pem,
        rootcert_pem=authority.cert_pem,
        robots=[
            robot_entry(team_a_pusher, "push"),
            robot_entry(team_a_puller, "pull"),
            robot_entry(team_b_pusher, "push"),
        ],
    )


# -- clients ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Pull:
    """What each side answered: the token server, then (with its token) the registry."""

    token_status: int
    registry_status: int | None = None
    token: str | None = None


async def pull_manifest(
    registry: LocalRegistry,
    repository: str,
    reference: str,
    username: str,
    password: str,
    secrets_to_hide: list[str],
) -> Pull:
    """GET a manifest the way every client does: challenge, token, retry with it."""
    url = f"{registry.url}/v2/{repository}/manifests/{reference}"
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers={"Accept": MANIFEST_ACCEPT}) as response:
            assert response.status == 401
            challenge = dict(re.findall(r'(\w+)="([^"]*)"', response.headers["WWW-Authenticate"]))
        realm = challenge.pop("realm")
        assert challenge == {"service": SERVICE, "scope": f"repository:{repository}:pull"}
        async with session.get(
            realm, params=challenge, headers={"Authorization": basic(username, password)}
        ) as response:
            if response.status != 200:
                return Pull(response.status)
            token = (await response.json())["token"]
        secrets_to_hide.append(token)
        headers = {"Accept": MANIFEST_ACCEPT, "Authorization": f"Bearer {token}"}
        async with session.get(url, headers=headers) as response:
            return Pull(200, response.status, token)


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


async def push_image(bed: Bed, repository: str, username: str, password: str) -> str:
    async with Pusher(bed.registry.url, username=username, password=password) as pusher:
        return await pusher.push(repository, "v1", random_image())


async def skopeo_inspect(bed: Bed, image: str, username: str, password: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        "skopeo",
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        f"{username}:{password}",
        f"docker://{bed.registry.host}/{image}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return process.returncode, (stdout if process.returncode == 0 else stderr).decode()


async def eventually(what: str, check: Callable[[], Awaitable[bool]], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for: {what}")


REFUSED_BY_REGISTRY = re.compile(r": 40[13] ")


# -- robots -----------------------------------------------------------------------------


async def test_robot_pushes_and_pulls_its_namespace(
    bed: Bed, team_a_pusher: RobotCredential, secrets_to_hide: list[str]
) -> None:
    digest = await push_image(bed, "team-a/app", team_a_pusher.username, team_a_pusher.password)

    code, output = await skopeo_inspect(
        bed, "team-a/app:v1", team_a_pusher.username, team_a_pusher.password
    )
    assert code == 0, output
    assert "sha256:" + hashlib.sha256(output.encode()).hexdigest() == digest

    pulled = await pull_manifest(
        bed.registry, "team-a/app", "v1", *credentials(team_a_pusher), secrets_to_hide
    )
    assert pulled.registry_status == 200


def credentials(robot: RobotCredential) -> tuple[str, str]:
    return robot.username, robot.password


async def test_pull_only_robot_pulls_but_cannot_push(
    bed: Bed,
    team_a_pusher: RobotCredential,
    team_a_puller: RobotCredential,
    secrets_to_hide: list[str],
) -> None:
    await push_image(bed, "team-a/app", *credentials(team_a_pusher))

    code, output = await skopeo_inspect(bed, "team-a/app:v1", *credentials(team_a_puller))
    assert code == 0, output

    with pytest.raises(PushError) as refused:
        await push_image(bed, "team-a/app", *credentials(team_a_puller))
    assert REFUSED_BY_REGISTRY.search(str(refused.value)), str(refused.value)
    assert "starting upload" in str(refused.value)  # the token server did answer: 200


async def test_robot_cannot_pull_another_namespace(
    bed: Bed,
    team_a_pusher: RobotCredential,
    team_b_pusher: RobotCredential,
    secrets_to_hide: list[str],
) -> None:
    await push_image(bed, "team-b/app", *credentials(team_b_pusher))
    own = await pull_manifest(
        bed.registry, "team-b/app", "v1", *credentials(team_b_pusher), secrets_to_hide
    )
    assert own.registry_status == 200

    foreign = await pull_manifest(
        bed.registry, "team-b/app", "v1", *credentials(team_a_pusher), secrets_to_hide
    )
    assert foreign.token_status == 200  # a token, but without team-b/app in it
    assert foreign.registry_status in (401, 403)

    code, output = await skopeo_inspect(bed, "team-b/app:v1", *credentials(team_a_pusher))
    assert code != 0
    assert "unauthorized" in output.lower() or "denied" in output.lower(), output

    with pytest.raises(PushError):
        await push_image(bed, "team-b/other", *credentials(team_a_pusher))


async def test_wrong_password_is_refused_by_the_token_server(
    bed: Bed, team_a_pusher: RobotCredential, secrets_to_hide: list[str]
) -> None:
    wrong_password = team_a_pusher.password[:-4] + "xxxx"
    secrets_to_hide.append(wrong_password)
    attempt = await pull_manifest(
        bed.registry, "team-a/app", "v1", team_a_pusher.username, wrong_password, secrets_to_hide
    )
    assert attempt == Pull(401)

    unknown = await pull_manifest(
        bed.registry, "team-a/app", "v1", "robot-nobody", team_a_pusher.password, secrets_to_hide
    )
    assert unknown == Pull(401)

    code, output = await skopeo_inspect(
        bed, "team-a/app:v1", team_a_pusher.username, wrong_password
    )
    assert code != 0
    assert "401" in output or "unauthorized" in output.lower(), output


async def test_anonymous_token_request_gets_401(bed: Bed) -> None:
    async with aiohttp.ClientSession() as session:
        params = {"service": SERVICE, "scope": "repository:team-a/app:pull"}
        async with session.get(bed.token_url, params=params) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith("Basic ")


def self_signed_pair(kind: str) -> tuple[bytes, bytes]:
    if kind == "operator":  # what the operator makes today: berth.pki's self-signed CA
        pair = berth_pki.new_ca("berth ns/reg token signing")
        return pair.key_pem.encode(), pair.cert_pem.encode()
    return generate_signing_key_pair(key_type="rsa" if kind == "rsa" else "ec")


@pytest.mark.parametrize("kind", ["ec", "rsa", "operator"])
async def test_registry_trusting_a_self_signed_signing_certificate(
    start_bed: StartBed, kind: str, secrets_to_hide: list[str]
) -> None:
    key_pem, cert_pem = self_signed_pair(kind)
    robot = hidden(new_robot("team-a", "test"), secrets_to_hide)
    bed = await start_bed(
        key_pem=key_pem,
        cert_pem=cert_pem,
        rootcert_pem=cert_pem,  # the bundle holds the signing certificate itself
        robots=[robot_entry(robot, "push")],
    )
    await push_image(bed, "team-a/app", *credentials(robot))
    pulled = await pull_manifest(
        bed.registry, "team-a/app", "v1", *credentials(robot), secrets_to_hide
    )
    assert pulled.registry_status == 200


@pytest.mark.parametrize("mistake", ["untrusted-ca", "other-issuer"])
async def test_registry_refuses_tokens_it_should_not_trust(
    start_bed: StartBed, authority: CertificateAuthority, mistake: str, secrets_to_hide: list[str]
) -> None:
    # Proof that the registry really verifies what the token server signs.
    signer_ca = CertificateAuthority("someone-else") if mistake == "untrusted-ca" else authority
    signing = signer_ca.issue("berth-token-signer")
    robot = hidden(new_robot("team-a", "test"), secrets_to_hide)
    bed = await start_bed(
        key_pem=signing.key_pem,
        cert_pem=signing.cert_pem,
        rootcert_pem=authority.cert_pem,
        robots=[robot_entry(robot, "push")],
        issuer="someone-else" if mistake == "other-issuer" else ISSUER,
    )
    with pytest.raises(PushError):
        await push_image(bed, "team-a/app", *credentials(robot))
    attempt = await pull_manifest(
        bed.registry, "team-a/app", "v1", *credentials(robot), secrets_to_hide
    )
    assert attempt.token_status == 200
    assert attempt.registry_status == 401


# -- rotation ---------------------------------------------------------------------------


async def test_credential_rotation_without_a_failed_pull(
    bed: Bed, secrets_to_hide: list[str]
) -> None:
    old = hidden(new_robot("team-r", "test"), secrets_to_hide)
    new = hidden(new_robot("team-r", "test"), secrets_to_hide)
    bed.write_config([robot_entry(old, "push")])
    await eventually(
        "the old robot is configured",
        lambda: token_status_is(bed, old, 200),
    )
    await push_image(bed, "team-r/app", *credentials(old))

    current = {"robot": old}  # what the namespace's pull secret holds right now
    pulls: list[tuple[str, int | None]] = []
    stop = asyncio.Event()

    async def keep_pulling() -> None:
        while not stop.is_set():
            robot = current["robot"]
            attempt = await pull_manifest(
                bed.registry, "team-r/app", "v1", *credentials(robot), secrets_to_hide
            )
            pulls.append((robot.username, attempt.registry_status))
            await asyncio.sleep(0.02)

    puller = asyncio.create_task(keep_pulling())
    try:
        # 1. the new robot is added next to the old one
        bed.write_config([robot_entry(old, "push"), robot_entry(new, "push")])
        await eventually("the new robot works", lambda: token_status_is(bed, new, 200))
        # 2. the pull secret switches to the new robot
        current["robot"] = new
        await eventually("pulls with the new robot", lambda: pulled_with(pulls, new, 3))
        # 3. the old robot goes away
        bed.write_config([robot_entry(new, "push")])
        await eventually("the old robot is refused", lambda: token_status_is(bed, old, 401))
        seen = len(pulls)
        await eventually("more pulls after removal", lambda: settle(lambda: len(pulls) >= seen + 3))
    finally:
        stop.set()
        await puller
    failures = [p for p in pulls if p[1] != 200]
    assert not failures, f"{len(failures)} of {len(pulls)} pulls failed: {failures[:5]}"
    assert {username for username, _ in pulls} == {old.username, new.username}
    assert await token_status_is(bed, new, 200)


async def token_status_is(bed: Bed, robot: RobotCredential, status: int) -> bool:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            bed.token_url,
            params={"service": SERVICE, "scope": "repository:team-r/app:pull"},
            headers={"Authorization": basic(*credentials(robot))},
        ) as response,
    ):
        return response.status == status


async def settle(check: Callable[[], bool]) -> bool:
    return check()


async def pulled_with(pulls: list[tuple[str, int | None]], robot: RobotCredential, n: int) -> bool:
    return sum(1 for username, _ in pulls if username == robot.username) >= n


# -- ServiceAccount tokens ----------------------------------------------------------------


def service_account_token(api_client: client.ApiClient, namespace: str, name: str) -> str:
    core = client.CoreV1Api(api_client)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
    )
    # no audiences: the API server's own, which its TokenReview checks by default
    request = core.create_namespaced_service_account_token(
        name,
        namespace,
        client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
        ),
    )
    assert request.status is not None
    return str(request.status.token)


@pytest.mark.cluster
async def test_service_account_token_gets_exactly_its_namespace_grants(
    start_bed: StartBed,
    authority: CertificateAuthority,
    kubeconfig: Path,
    api_client: client.ApiClient,
    namespace: str,
    secrets_to_hide: list[str],
) -> None:
    builder_token = service_account_token(api_client, namespace, "builder")
    viewer_token = service_account_token(api_client, namespace, "viewer")
    secrets_to_hide.extend([builder_token, viewer_token])
    signing = authority.issue("berth-token-signer")
    reviewer = KubernetesTokenReviewer(str(kubeconfig))
    try:
        bed = await start_bed(
            key_pem=signing.key_pem,
            cert_pem=signing.cert_pem,
            rootcert_pem=authority.cert_pem,
            robots=[],
            namespace_grants={
                namespace: [
                    {"repositories": ["{namespace}/**"], "actions": ["pull"]},
                    {
                        "repositories": ["{namespace}/**"],
                        "actions": ["push"],
                        "serviceAccounts": ["builder"],
                    },
                ]
            },
            token_review=True,
            reviewer=reviewer,
        )
        # docker login -u anything -p "$(kubectl create token builder -n NS)"
        await push_image(bed, f"{namespace}/app", "anything", builder_token)
        code, output = await skopeo_inspect(bed, f"{namespace}/app:v1", "ci", builder_token)
        assert code == 0, output

        with pytest.raises(PushError) as refused:
            await push_image(bed, "other/app", "anything", builder_token)
        assert REFUSED_BY_REGISTRY.search(str(refused.value)), str(refused.value)

        # the viewer may pull its namespace but not push to it
        viewer_pull = await pull_manifest(
            bed.registry, f"{namespace}/app", "v1", "x", viewer_token, secrets_to_hide
        )
        assert viewer_pull.registry_status == 200
        with pytest.raises(PushError):
            await push_image(bed, f"{namespace}/app", "x", viewer_token)

        # a JWT the API server did not issue
        forged = builder_token[: builder_token.rindex(".") + 1] + "AAAA"
        secrets_to_hide.append(forged)
        attempt = await pull_manifest(
            bed.registry, f"{namespace}/app", "v1", "x", forged, secrets_to_hide
        )
        assert attempt == Pull(401)
    finally:
        reviewer.close()


@pytest.mark.cluster
async def test_service_account_token_with_token_review_off_is_refused(
    start_bed: StartBed,
    authority: CertificateAuthority,
    kubeconfig: Path,
    api_client: client.ApiClient,
    namespace: str,
    secrets_to_hide: list[str],
) -> None:
    token = service_account_token(api_client, namespace, "builder")
    secrets_to_hide.append(token)
    signing = authority.issue("berth-token-signer")
    reviewer = KubernetesTokenReviewer(str(kubeconfig))
    try:
        bed = await start_bed(
            key_pem=signing.key_pem,
            cert_pem=signing.cert_pem,
            rootcert_pem=authority.cert_pem,
            robots=[],
            namespace_grants={namespace: [{"repositories": ["**"], "actions": ["push"]}]},
            token_review=False,
            reviewer=reviewer,
        )
        attempt = await pull_manifest(
            bed.registry, f"{namespace}/app", "v1", "x", token, secrets_to_hide
        )
        assert attempt == Pull(401)
    finally:
        reviewer.close()


# -- logs -------------------------------------------------------------------------------


async def test_logs_name_identities_and_scopes_but_no_credentials(
    bed: Bed,
    team_a_pusher: RobotCredential,
    team_a_puller: RobotCredential,
    no_credentials_in_logs: list[str],
    secrets_to_hide: list[str],
) -> None:
    await push_image(bed, "team-a/app", *credentials(team_a_pusher))
    await pull_manifest(
        bed.registry, "team-a/app", "v1", *credentials(team_a_puller), secrets_to_hide
    )
    wrong = team_a_puller.password[::-1]
    secrets_to_hide.append(wrong)
    await pull_manifest(
        bed.registry, "team-a/app", "v1", team_a_puller.username, wrong, secrets_to_hide
    )

    messages = [line for line in no_credentials_in_logs if line.startswith("berth.")]
    # the capture works and says who got what ...
    assert any(
        team_a_pusher.username in m and "repository:team-a/app:pull,push" in m for m in messages
    )
    assert any(team_a_puller.username in m and "failed" in m for m in messages)
    # ... and the autouse fixture checks that no credential is anywhere in the logs
    assert len(secrets_to_hide) >= 6
