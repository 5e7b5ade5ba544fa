"""Kubernetes ServiceAccount tokens as registry passwords, checked with TokenReview.

`docker login -u anything -p "$(kubectl create token builder -n team-a)"` works because
the API server, not Berth, decides whether the token is genuine. The token server's own
ServiceAccount needs `create` on `tokenreviews.authentication.k8s.io` (the
`system:auth-delegator` ClusterRole grants it).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import threading
from dataclasses import dataclass
from typing import Final, Protocol

import urllib3.exceptions
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from berth.auth.cache import ExpiringCache

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_PREFIX: Final = "system:serviceaccount:"
# Three base64url parts; the header of every JWT starts with '{"' which encodes as "eyJ".
_JWT_SHAPE: Final = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
# An accepted token stays accepted this long without asking again; a ServiceAccount
# deleted meanwhile keeps access at most this long (plus the registry token's TTL).
ACCEPTED_TTL: Final = 30.0
# Rejections are cached briefly so a client retrying a bad token does not hammer the API.
REJECTED_TTL: Final = 5.0


def looks_like_jwt(password: str) -> bool:
    return _JWT_SHAPE.fullmatch(password) is not None


@dataclass(frozen=True)
class ServiceAccountIdentity:
    namespace: str
    name: str

    @property
    def username(self) -> str:
        return f"{SERVICE_ACCOUNT_PREFIX}{self.namespace}:{self.name}"

    @classmethod
    def from_username(cls, username: str) -> ServiceAccountIdentity | None:
        if not username.startswith(SERVICE_ACCOUNT_PREFIX):
            return None
        namespace, _, name = username.removeprefix(SERVICE_ACCOUNT_PREFIX).partition(":")
        if not namespace or not name or ":" in name:
            return None
        return cls(namespace, name)


class TokenReviewUnavailable(RuntimeError):
    """The API server could not be asked: not a verdict on the token."""


class TokenReviewer(Protocol):
    async def review(self, token: str) -> ServiceAccountIdentity | None:
        """The ServiceAccount `token` belongs to, or None if it is not a valid
        ServiceAccount token. Raises TokenReviewUnavailable when no answer is possible."""
        ...


def kubernetes_api_client(kubeconfig: str | None = None) -> k8s_client.ApiClient:
    """In-cluster credentials inside a Pod, else the kubeconfig (KUBECONFIG, ~/.kube)."""
    configuration = k8s_client.Configuration()
    if kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ:
        k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=configuration
        )
    return k8s_client.ApiClient(configuration)


class KubernetesTokenReviewer:
    """Asks the API server (authentication.k8s.io/v1 TokenReview) and caches the answer.

    No audiences are set on the review, so the API server checks the token against its
    own default audiences: exactly the tokens `kubectl create token` makes. The client
    is made on first use, so a server whose configuration never enables TokenReview
    needs no Kubernetes credentials.
    """

    def __init__(
        self,
        kubeconfig: str | None = None,
        *,
        api_client: k8s_client.ApiClient | None = None,
        accepted_ttl: float = ACCEPTED_TTL,
        rejected_ttl: float = REJECTED_TTL,
    ) -> None:
        self._kubeconfig = kubeconfig
        self._api_client = api_client
        self._client_lock = threading.Lock()
        self._rejected_ttl = rejected_ttl
        self._cache: ExpiringCache[bytes, ServiceAccountIdentity | bool] = ExpiringCache(
            accepted_ttl
        )

    async def review(self, token: str) -> ServiceAccountIdentity | None:
        # The token is not registered with the SecretRedactor: ServiceAccount tokens are
        # many and short-lived, and the redactor's set never shrinks. Nothing logs it:
        # errors below carry status and reason only, and the client does not log bodies.
        key = hashlib.sha256(token.encode()).digest()
        cached = self._cache.get(key)
        if cached is not None:
            return cached if isinstance(cached, ServiceAccountIdentity) else None
        identity = await asyncio.to_thread(self._review, token)
        if identity is None:
            self._cache.put(key, False, ttl=self._rejected_ttl)
        else:
            self._cache.put(key, identity)
        return identity

    def _client(self) -> k8s_client.ApiClient:
        with self._client_lock:
            if self._api_client is None:
                self._api_client = kubernetes_api_client(self._kubeconfig)
            return self._api_client

    def _review(self, token: str) -> ServiceAccountIdentity | None:
        try:
            api = k8s_client.AuthenticationV1Api(self._client())
            review = api.create_token_review(
                k8s_client.V1TokenReview(spec=k8s_client.V1TokenReviewSpec(token=token))
            )
        except ApiException as error:
            # status and reason only: the body of a TokenReview echoes the token
            raise TokenReviewUnavailable(
                f"TokenReview failed: {error.status} {error.reason}"
            ) from None
        except (OSError, urllib3.exceptions.HTTPError, k8s_config.ConfigException) as error:
            raise TokenReviewUnavailable(f"TokenReview failed: {type(error).__name__}") from None
        status = review.status
        if status is None or not status.authenticated or status.user is None:
            return None
        identity = ServiceAccountIdentity.from_username(status.user.username or "")
        if identity is None:
            # a genuine token, but of a user (OIDC, bootstrap...) we hold no grants for
            log.info(
                "TokenReview accepted a token of %s, not a ServiceAccount", status.user.username
            )
        return identity

    def close(self) -> None:
        if self._api_client is not None:
            self._api_client.close()  # type: ignore[no-untyped-call]
