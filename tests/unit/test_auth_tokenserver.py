"""The token endpoint in-process: status codes, response documents and token claims.

The registry itself checks these tokens in tests/integration/test_token_server.py; here
the HTTP contract is pinned down without one.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509

from berth.auth.config import ActiveConfig, ConfigFile, StaticConfig, parse_config
from berth.auth.jwt import generate_signing_key_pair, load_signer, verify
from berth.auth.robots import hash_password
from berth.auth.tokenreview import ServiceAccountIdentity, TokenReviewUnavailable
from berth.auth.tokenserver import create_app

SERVICE = "reg.ns.svc"
PUSHER, PUSHER_PASSWORD = "robot-team-a-pusher", "pusher-password-0123456789"
PULLER, PULLER_PASSWORD = "robot-team-a-puller", "puller-password-0123456789"
SA_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"


def config_document(**changes: object) -> dict[str, object]:
    document: dict[str, object] = {
        "issuer": "berth",
        "service": SERVICE,
        "tokenTTLSeconds": 120,
        "signingKeyFile": "signing.key",
        "signingCertFile": "signing.crt",
        "robots": [
            {
                "username": PUSHER,
                "passwordHash": hash_password(PUSHER_PASSWORD, cost=4),
                "namespace": "team-a",
                "grants": [{"repositories": ["{namespace}/**"], "actions": ["push"]}],
            },
            {
                "username": PULLER,
                "passwordHash": hash_password(PULLER_PASSWORD, cost=4),
                "namespace": "team-a",
                "grants": [{"repositories": ["team-a/**"], "actions": ["pull"]}],
            },
        ],
        "namespaceGrants": {"team-c": [{"repositories": ["team-c/**"], "actions": ["push"]}]},
        "tokenReview": True,
    }
    document.update(changes)
    return document


class FakeReviewer:
    """Stands in for the API server to inject its answers and failures; the real
    TokenReview path runs in the integration tests."""

    def __init__(self) -> None:
        self.identity: ServiceAccountIdentity | None = ServiceAccountIdentity("team-c", "ci")
        self.unavailable = False
        self.reviewed: list[str] = []

    async def review(self, token: str) -> ServiceAccountIdentity | None:
        self.reviewed.append(token)
        if self.unavailable:
            raise TokenReviewUnavailable("injected")
        return self.identity


@pytest.fixture
def signing_pair() -> tuple[bytes, bytes]:
    return generate_signing_key_pair()


@pytest.fixture
def reviewer() -> FakeReviewer:
    return FakeReviewer()


@pytest.fixture
async def http(
    signing_pair: tuple[bytes, bytes], reviewer: FakeReviewer
) -> AsyncIterator[TestClient[aiohttp.web.Request, aiohttp.web.Application]]:
    config = parse_config(json.dumps(config_document()))
    source = StaticConfig(ActiveConfig.build(config, load_signer(*signing_pair)))
    async with TestClient(TestServer(create_app(source, reviewer))) as client:
        yield client


Client = TestClient[aiohttp.web.Request, aiohttp.web.Application]


def basic_auth(username: str, password: str) -> dict[str, str]:
    credentials = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {credentials}"}


def claims_of(token: str, cert_pem: bytes) -> dict[str, object]:
    return verify(token, x509.load_pem_x509_certificate(cert_pem).public_key())  # type: ignore[arg-type]


async def get_token(
    http: Client, username: str | None, password: str | None, *scopes: str, **params: str
) -> aiohttp.ClientResponse:
    query = [("service", SERVICE), *params.items(), *(("scope", s) for s in scopes)]
    headers = basic_auth(username, password) if username and password else {}
    return await http.get("/token", params=query, headers=headers)


async def test_robot_gets_a_token_with_its_grants(
    http: Client, signing_pair: tuple[bytes, bytes]
) -> None:
    response = await get_token(
        http, PUSHER, PUSHER_PASSWORD, "repository:team-a/app:pull,push", account=PUSHER
    )
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    document = await response.json()
    assert document["token"] == document["access_token"]
    assert document["expires_in"] == 120
    issued_at = time.mktime(time.strptime(document["issued_at"], "%Y-%m-%dT%H:%M:%SZ"))
    assert abs(issued_at - time.mktime(time.gmtime())) < 60

    claims = claims_of(document["token"], signing_pair[1])
    assert claims["iss"] == "berth"
    assert claims["sub"] == PUSHER
    assert claims["aud"] == SERVICE  # a string: distribution 2.8 cannot read a list
    assert claims["exp"] == claims["iat"] + 120  # type: ignore[operator]
    assert claims["nbf"] == claims["iat"]
    assert abs(claims["iat"] - time.time()) < 60  # type: ignore[operator]
    assert claims["access"] == [
        {"type": "repository", "name": "team-a/app", "actions": ["pull", "push"]}
    ]


async def test_each_token_has_its_own_jti(http: Client, signing_pair: tuple[bytes, bytes]) -> None:
    ids = set()
    for _ in range(3):
        response = await get_token(http, PULLER, PULLER_PASSWORD, "repository:team-a/app:pull")
        ids.add(claims_of((await response.json())["token"], signing_pair[1])["jti"])
    assert len(ids) == 3


async def test_repository_without_rights_is_left_out(
    http: Client, signing_pair: tuple[bytes, bytes]
) -> None:
    response = await get_token(
        http,
        PULLER,
        PULLER_PASSWORD,
        "repository:team-a/app:pull,push",
        "repository:team-b/app:pull",
        "registry:catalog:*",
    )
    assert response.status == 200
    claims = claims_of((await response.json())["token"], signing_pair[1])
    assert claims["access"] == [{"type": "repository", "name": "team-a/app", "actions": ["pull"]}]


async def test_login_without_scope_gets_an_empty_token(
    http: Client, signing_pair: tuple[bytes, bytes]
) -> None:
    response = await get_token(http, PULLER, PULLER_PASSWORD)
    assert response.status == 200
    assert claims_of((await response.json())["token"], signing_pair[1])["access"] == []


@pytest.mark.parametrize(
    ("username", "password"),
    [(PUSHER, "wrong-password-0123"), ("robot-nobody", PUSHER_PASSWORD), (None, None)],
)
async def test_bad_or_missing_credentials_get_401_with_a_basic_challenge(
    http: Client, username: str | None, password: str | None
) -> None:
    response = await get_token(http, username, password, "repository:team-a/app:pull")
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith(f'Basic realm="{SERVICE}"')
    assert "token" not in await response.json()


async def test_malformed_authorization_header_gets_401(http: Client) -> None:
    response = await http.get("/token", headers={"Authorization": "Basic !!not-base64!!"})
    assert response.status == 401


async def test_other_service_and_malformed_scope_get_400(http: Client) -> None:
    other = await http.get(
        "/token", params={"service": "other.svc"}, headers=basic_auth(PULLER, PULLER_PASSWORD)
    )
    assert other.status == 400
    malformed = await get_token(http, PULLER, PULLER_PASSWORD, "repository:team-a/app")
    assert malformed.status == 400
    assert "malformed scope" in (await malformed.json())["error_description"]


async def test_oauth2_password_grant(http: Client, signing_pair: tuple[bytes, bytes]) -> None:
    response = await http.post(
        "/token",
        data={
            "grant_type": "password",
            "service": SERVICE,
            "client_id": "containerd-client",
            "username": PUSHER,
            "password": PUSHER_PASSWORD,
            "scope": "repository:team-a/app:pull repository:team-b/app:pull",
        },
    )
    assert response.status == 200
    document = await response.json()
    assert document["scope"] == "repository:team-a/app:pull"
    assert document["expires_in"] == 120
    claims = claims_of(document["access_token"], signing_pair[1])
    assert claims["access"] == [{"type": "repository", "name": "team-a/app", "actions": ["pull"]}]


async def test_oauth2_refuses_bad_password_and_other_grant_types(http: Client) -> None:
    wrong = await http.post(
        "/token",
        data={"grant_type": "password", "username": PUSHER, "password": "wrong-password-0123"},
    )
    assert wrong.status == 401
    refresh = await http.post("/token", data={"grant_type": "refresh_token", "refresh_token": "x"})
    assert refresh.status == 400
    assert (await refresh.json())["error"] == "unsupported_grant_type"


async def test_service_account_token_gets_its_namespace_grants(
    http: Client, reviewer: FakeReviewer, signing_pair: tuple[bytes, bytes]
) -> None:
    response = await get_token(
        http, "anything", SA_TOKEN, "repository:team-c/app:push", "repository:team-a/app:pull"
    )
    assert response.status == 200
    claims = claims_of((await response.json())["token"], signing_pair[1])
    assert claims["sub"] == "system:serviceaccount:team-c:ci"
    assert claims["access"] == [{"type": "repository", "name": "team-c/app", "actions": ["push"]}]
    assert reviewer.reviewed == [SA_TOKEN]


async def test_rejected_service_account_token_gets_401(
    http: Client, reviewer: FakeReviewer
) -> None:
    reviewer.identity = None
    response = await get_token(http, "anything", SA_TOKEN, "repository:team-c/app:pull")
    assert response.status == 401


async def test_unreachable_api_server_gets_503_not_401(
    http: Client, reviewer: FakeReviewer
) -> None:
    # 401 would tell the client its credentials are wrong; they may well be fine.
    reviewer.unavailable = True
    response = await get_token(http, "anything", SA_TOKEN, "repository:team-c/app:pull")
    assert response.status == 503


async def test_non_jwt_password_of_unknown_user_is_not_sent_to_token_review(
    http: Client, reviewer: FakeReviewer
) -> None:
    response = await get_token(http, "someone", "plain-password-0123", "repository:x/y:pull")
    assert response.status == 401
    assert reviewer.reviewed == []


async def test_token_review_disabled_in_config(
    signing_pair: tuple[bytes, bytes], reviewer: FakeReviewer
) -> None:
    config = parse_config(json.dumps(config_document(tokenReview=False)))
    source = StaticConfig(ActiveConfig.build(config, load_signer(*signing_pair)))
    async with TestClient(TestServer(create_app(source, reviewer))) as http:
        response = await get_token(http, "anything", SA_TOKEN, "repository:team-c/app:pull")
    assert response.status == 401
    assert reviewer.reviewed == []


async def test_healthz(http: Client) -> None:
    response = await http.get("/healthz")
    assert response.status == 200
    assert await response.text() == "ok"


async def test_changed_password_hash_is_not_served_from_the_cache(
    tmp_path: Path, signing_pair: tuple[bytes, bytes]
) -> None:
    (tmp_path / "signing.key").write_bytes(signing_pair[0])
    (tmp_path / "signing.crt").write_bytes(signing_pair[1])
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config_document()))
    source = ConfigFile(path, reload_interval=3600)  # reloaded by hand below
    async with TestClient(TestServer(create_app(source))) as http:
        assert (await get_token(http, PULLER, PULLER_PASSWORD)).status == 200  # now cached
        document = config_document()
        robots = document["robots"]
        assert isinstance(robots, list)
        robots[1]["passwordHash"] = hash_password("new-puller-password-01", cost=4)
        path.write_text(json.dumps(document))
        assert source.reload_if_changed()
        assert (await get_token(http, PULLER, PULLER_PASSWORD)).status == 401
        assert (await get_token(http, PULLER, "new-puller-password-01")).status == 200
