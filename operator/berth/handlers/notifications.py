"""The endpoint registries send their notifications to.

`POST /notifications/<registry namespace>/<registry name>` with the header
`Authorization: Bearer <token>`, the token being the `token` key of the Registry's
Secret `<name>-notifications`. A manifest push to a repository wakes, at once, every
TagPolicy tracking that repository on that registry: it records the new image in the
tag's history, or puts an immutable tag back. Anything else is acknowledged and ignored,
so that the registry does not queue it for retries.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Callable
from typing import Final

from aiohttp import web

from berth.k8s.api import Kube
from berth.k8s.kinds import SECRET
from berth.observability import NOTIFICATION_WAKEUPS, NOTIFICATIONS
from berth.reconcile.tagpolicy import RepositoryIndex, notification_token
from berth.registry.client import MANIFEST_MEDIA_TYPES
from berth.resources.registry import RegistryNames

logger = logging.getLogger(__name__)

PATH: Final = "/notifications/{namespace}/{name}"
MAX_BODY: Final = 4 * 1024 * 1024
TOKEN_CACHE_SECONDS: Final = 10.0


class NotificationServer:
    def __init__(
        self, kube: Kube, index: RepositoryIndex, wake: Callable[[str, str], None]
    ) -> None:
        self.kube = kube
        self.index = index
        self.wake = wake
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._tokens: dict[tuple[str, str], tuple[str | None, float]] = {}

    async def start(self, address: str) -> int:
        """Listen on `address` (host:port; port 0 picks a free one); returns the port."""
        host, _, port = address.rpartition(":")
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post(PATH, self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host or "0.0.0.0", int(port))  # noqa: S104
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else int(port)
        logger.info("listening for registry notifications on %s:%s", host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _token(self, namespace: str, name: str) -> str | None:
        cached = self._tokens.get((namespace, name))
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        secret = await self.kube.get(SECRET, namespace, RegistryNames(name).notifications)
        token = notification_token(secret)
        self._tokens[(namespace, name)] = (token, time.monotonic() + TOKEN_CACHE_SECONDS)
        return token

    async def handle(self, request: web.Request) -> web.Response:
        namespace = request.match_info["namespace"]
        name = request.match_info["name"]
        token = await self._token(namespace, name)
        sent = request.headers.get("Authorization", "")
        if not token or not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            NOTIFICATIONS.labels("unauthorized").inc()
            return web.Response(status=401, text="unauthorized\n")
        try:
            envelope = json.loads(await request.read())
            events = envelope.get("events") or []
        except (ValueError, AttributeError):
            NOTIFICATIONS.labels("malformed").inc()
            return web.Response(status=400, text="not a notification envelope\n")
        repositories = set()
        for event in events:
            target = event.get("target") or {} if isinstance(event, dict) else {}
            if (
                event.get("action") == "push"
                and target.get("mediaType") in MANIFEST_MEDIA_TYPES
                and target.get("repository")
            ):
                repositories.add(str(target["repository"]))
        woken = 0
        for repository in sorted(repositories):
            for policy in self.index.policies((namespace, name), repository):
                self.wake(*policy)
                woken += 1
        NOTIFICATION_WAKEUPS.inc(woken)
        NOTIFICATIONS.labels("accepted").inc()
        if woken:
            logger.info(
                "registry %s/%s: pushes to %s woke %d TagPolicies",
                namespace,
                name,
                ", ".join(sorted(repositories)),
                woken,
            )
        return web.Response(status=200)
