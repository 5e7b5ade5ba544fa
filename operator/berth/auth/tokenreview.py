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
import re
import threading
from dataclasses import dataclass
from typing import Final, Protocol

import urllib3.exceptions

from berth.auth.cache import ExpiringCache
from berth.k8s.api import JSON, ApiException, ConfigException, Kube
from berth.k8s.kinds import TOKEN_REVIEW

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
        kube: Kube | None = None,
        accepted_ttl: float = ACCEPTED_TTL,
        rejected_ttl: float = REJECTED_TTL,
    ) -> None:
        self._kubeconfig = kubeconfig
        self._kube = kube
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
        identity = await self._review(token)
        if identity is None:
            self._cache.put(key, False, ttl=self._rejected_ttl)
        else:
            self._cache.put(key, identity)
        return identity

    def _client(self) -> Kube:
        with self._client_lock:
            if self._kube is None:
                self._kube = Kube.from_environment(self._kubeconfig)
            return self._kube

    async def _ask(self, token: str) -> JSON:
        try:
            kube = await asyncio.to_thread(self._client)
            return await kube.request(
                "POST",
                TOKEN_REVIEW.path(),
                body={
                    "apiVersion": TOKEN_REVIEW.api_version,
                    "kind": TOKEN_REVIEW.kind,
                    "spec": {"token": token},
                },
            )
        except ApiException as error:
            # status and reason only: the body of a TokenReview echoes the token
            raise TokenReviewUnavailable(
                f"TokenReview failed: {error.status} {error.reason}"
            ) from None
        except (OSError, urllib3.exceptions.HTTPError, ConfigException) as error:
            raise TokenReviewUnavailable(f"TokenReview failed: {type(error).__name__}") from None

    async def _review(self, token: str) -> ServiceAccountIdentity | None:
        status = (await self._ask(token)).get("status") or {}
        user = status.get("user")
        if not status.get("authenticated") or user is None:
            return None
        username = user.get("username")
        identity = ServiceAccountIdentity.from_username(username or "")
        if identity is None:
            # a genuine token, but of a user (OIDC, bootstrap...) we hold no grants for
            log.info("TokenReview accepted a token of %s, not a ServiceAccount", username)
        return identity

    def close(self) -> None:
        if self._kube is not None:
            self._kube.close()
