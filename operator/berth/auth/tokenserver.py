"""The registry's token server: Docker registry token authentication over aiohttp.

The registry answers an unauthenticated request with
`WWW-Authenticate: Bearer realm="https://<token server>/token",service="...",scope="..."`;
the client then asks

    GET /token?service=<service>&scope=repository:team-a/app:pull,push&account=<user>
    Authorization: Basic <user:password>

and gets a JWT listing, for each requested scope, the actions this identity may take
there (possibly none). `POST /token` with an OAuth2 password grant (what containerd,
and so the kubelet, tries first) answers the same way.

Identities are robots (username + bcrypt-hashed password from the configuration) and,
when `tokenReview` is on, Kubernetes ServiceAccounts presenting their token as password.
Nothing here logs a password, a token or a hash; only usernames, namespaces and scopes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime
import functools
import logging
import secrets
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aiohttp import hdrs, web

from berth.auth.cache import ExpiringCache
from berth.auth.config import ActiveConfig, ConfigFile, ConfigSource
from berth.auth.grants import (
    WILDCARD_ACTION,
    Rule,
    Scope,
    ScopeError,
    authorize,
    parse_scopes,
)
from berth.auth.robots import hash_password, password_fingerprint, verify_password
from berth.auth.tokenreview import (
    KubernetesTokenReviewer,
    TokenReviewer,
    TokenReviewUnavailable,
    looks_like_jwt,
)
from berth.observability import REDACTOR

log = logging.getLogger(__name__)

TOKEN_PATH: Final = "/token"
HEALTH_PATH: Final = "/healthz"
# bcrypt costs ~50 ms per check; a client pulling many layers asks for tokens in bursts.
VERIFIED_PASSWORD_TTL: Final = 60.0
_NO_STORE: Final = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@dataclass(frozen=True)
class Identity:
    subject: str
    """The JWT `sub`: the robot's username or system:serviceaccount:NS:NAME."""
    description: str
    rules: tuple[Rule, ...]
    catalog: bool = False


@functools.cache
def _decoy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


def _decoy_check(password: str) -> None:
    verify_password(password, _decoy_hash())


class Authenticator:
    """Turns username and password into an Identity with its grants, or None."""

    def __init__(
        self, reviewer: TokenReviewer | None, *, verified_ttl: float = VERIFIED_PASSWORD_TTL
    ) -> None:
        self._reviewer = reviewer
        # keyed by the hash too, so a robot whose hash changed is checked afresh
        self._verified: ExpiringCache[tuple[str, str, bytes], bool] = ExpiringCache(verified_ttl)

    async def authenticate(
        self, active: ActiveConfig, username: str, password: str
    ) -> Identity | None:
        """Raises TokenReviewUnavailable when a ServiceAccount token cannot be checked."""
        robot = active.robots.get(username)
        if robot is not None:
            key = (robot.username, robot.password_hash, password_fingerprint(password))
            if self._verified.get(key) is None:
                if not await asyncio.to_thread(verify_password, password, robot.password_hash):
                    return None
                # Only verified passwords: registering every attempt would let anyone
                # grow the redactor's set (and the cost of each log line) without bound.
                REDACTOR.register(password)
                self._verified.put(key, True)
            where = f" (namespace {robot.namespace})" if robot.namespace else ""
            return Identity(
                robot.username,
                f"robot {robot.username}{where}",
                active.robot_rules[robot.username],
                robot.catalog,
            )
        if active.config.token_review and self._reviewer is not None and looks_like_jwt(password):
            # The username is whatever the client typed; the token alone says who it is.
            account = await self._reviewer.review(password)
            if account is None:
                return None
            return Identity(
                account.username,
                f"serviceaccount {account.namespace}/{account.name}",
                active.service_account_rules(account.namespace, account.name),
            )
        # Spend a bcrypt check on unknown users too, so that response times do not tell
        # which robot names exist.
        await asyncio.to_thread(_decoy_check, password)
        return None


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    if not header:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, separator, password = decoded.partition(":")
    if not separator or not username or not password:
        return None
    return username, password


def _rfc3339(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class TokenServer:
    def __init__(self, source: ConfigSource, authenticator: Authenticator) -> None:
        self.source = source
        self.authenticator = authenticator

    def issue(
        self, active: ActiveConfig, identity: Identity, scopes: Sequence[Scope]
    ) -> tuple[str, list[Scope], dict[str, object]]:
        """Sign a token for `identity`; returns it, the granted scopes and the fields of
        the response document besides the token itself."""
        config = active.config
        granted = authorize(scopes, identity.rules, catalog=identity.catalog)
        issued = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        now = int(issued.timestamp())
        claims = {
            "iss": config.issuer,
            "sub": identity.subject,
            "aud": config.service,
            "exp": now + config.token_ttl_seconds,
            "nbf": now,
            "iat": now,
            "jti": secrets.token_urlsafe(16),
            "access": [scope.claim() for scope in granted],
        }
        token = active.signer.sign(claims)
        refused = _not_granted(scopes, granted)
        log.info(
            "issued a token to %s: granted [%s]%s",
            identity.description,
            " ".join(str(s) for s in granted),
            f", not granted [{' '.join(refused)}]" if refused else "",
        )
        return (
            token,
            granted,
            {"expires_in": config.token_ttl_seconds, "issued_at": _rfc3339(issued)},
        )

    async def get_token(self, request: web.Request) -> web.Response:
        """The distribution token endpoint: Basic credentials, scopes in the query."""
        active = self.source.current()
        problem = self._check_service(active, request.query.get("service"))
        if problem is not None:
            return problem
        try:
            scopes = parse_scopes(request.query.getall("scope", []))
        except ScopeError as error:
            return _error(400, "invalid_request", str(error))
        credentials = basic_credentials(request.headers.get(hdrs.AUTHORIZATION))
        if credentials is None:
            return _unauthorized(active, "credentials required")
        identity = await self._authenticate(active, *credentials)
        if isinstance(identity, web.Response):
            return identity
        token, _, fields = self.issue(active, identity, scopes)
        return web.json_response(
            {"token": token, "access_token": token, **fields}, headers=_NO_STORE
        )

    async def post_token(self, request: web.Request) -> web.Response:
        """The OAuth2 form of the endpoint (grant_type=password). Refresh tokens are not
        issued, so clients fall back to their password on expiry."""
        active = self.source.current()
        form = await request.post()
        grant_type = form.get("grant_type")
        if grant_type != "password":
            return _error(400, "unsupported_grant_type", "only grant_type=password is supported")
        service = form.get("service")
        problem = self._check_service(active, service if isinstance(service, str) else None)
        if problem is not None:
            return problem
        scope_field = form.get("scope", "")
        try:
            scopes = parse_scopes([scope_field] if isinstance(scope_field, str) else [])
        except ScopeError as error:
            return _error(400, "invalid_request", str(error))
        username, password = form.get("username"), form.get("password")
        if not (isinstance(username, str) and isinstance(password, str) and username and password):
            return _unauthorized(active, "credentials required")
        identity = await self._authenticate(active, username, password)
        if isinstance(identity, web.Response):
            return identity
        token, granted, fields = self.issue(active, identity, scopes)
        return web.json_response(
            {
                "access_token": token,
                "token": token,
                "scope": " ".join(str(s) for s in granted),
                **fields,
            },
            headers=_NO_STORE,
        )

    async def healthz(self, request: web.Request) -> web.Response:
        self.source.current()  # a source that never loaded would have raised at start
        return web.Response(text="ok")

    def _check_service(self, active: ActiveConfig, service: str | None) -> web.Response | None:
        # A token for another service would be refused by its registry anyway; say so now.
        if service is not None and service != active.config.service:
            return _error(
                400, "invalid_request", f"this token server serves {active.config.service!r}"
            )
        return None

    async def _authenticate(
        self, active: ActiveConfig, username: str, password: str
    ) -> Identity | web.Response:
        try:
            identity = await self.authenticator.authenticate(active, username, password)
        except TokenReviewUnavailable as error:
            log.warning("cannot check a ServiceAccount token for %r: %s", username, error)
            return _error(503, "temporarily_unavailable", "cannot check the token right now")
        if identity is None:
            log.info("authentication failed for %r", username)
            return _unauthorized(active, "invalid username or password")
        return identity

    async def watch_config(self, app: web.Application) -> AsyncIterator[None]:
        """cleanup_ctx: re-read the configuration in the background while serving."""
        task = asyncio.create_task(self._reload_loop(), name="berth-token-config-reload")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _reload_loop(self) -> None:
        while True:
            await asyncio.sleep(self.source.reload_interval)
            try:
                await asyncio.to_thread(self.source.reload_if_changed)
            except Exception:  # keep serving the last good configuration
                log.exception("reloading the token server configuration failed")


def _not_granted(requested: Sequence[Scope], granted: Sequence[Scope]) -> list[str]:
    """Requested scopes the token does not fully grant (for the log)."""
    granted_actions = {(s.type, s.name): set(s.actions) for s in granted}
    return [
        str(scope)
        for scope in requested
        if (scope.type, scope.name) not in granted_actions
        or not set(scope.actions) - {WILDCARD_ACTION} <= granted_actions[scope.type, scope.name]
    ]


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response(
        {
            "error": code,
            "error_description": message,
            "errors": [{"code": code, "message": message}],
        },
        status=status,
        headers=_NO_STORE,
    )


def _unauthorized(active: ActiveConfig, message: str) -> web.Response:
    response = _error(401, "UNAUTHORIZED", message)
    response.headers[hdrs.WWW_AUTHENTICATE] = (
        f'Basic realm="{active.config.service}", charset="UTF-8"'
    )
    return response


def create_app(
    config_source: ConfigSource,
    token_reviewer: TokenReviewer | None = None,
    *,
    authenticator: Authenticator | None = None,
) -> web.Application:
    """The token server as an aiohttp application (run it with `web.run_app`, or an
    AppRunner in tests)."""
    server = TokenServer(config_source, authenticator or Authenticator(token_reviewer))
    app = web.Application()
    app.router.add_get(TOKEN_PATH, server.get_token)
    app.router.add_post(TOKEN_PATH, server.post_token)
    app.router.add_get(HEALTH_PATH, server.healthz)
    app.cleanup_ctx.append(server.watch_config)
    return app


def install_redactor() -> None:
    """Make every root log handler pass records through the SecretRedactor."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    for handler in root.handlers:
        if REDACTOR not in handler.filters:
            handler.addFilter(REDACTOR)


def run_token_server(
    config_path: Path,
    host: str,
    port: int,
    *,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    kubeconfig: str | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM. Fails at once (ConfigError) on a configuration that
    does not load; later broken versions of the file are logged and ignored."""
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("tls_cert and tls_key go together")
    install_redactor()
    source = ConfigFile(config_path)
    reviewer = KubernetesTokenReviewer(kubeconfig)
    app = create_app(source, reviewer)

    async def close_reviewer(app: web.Application) -> None:
        reviewer.close()

    app.on_cleanup.append(close_reviewer)
    ssl_context = None
    if tls_cert is not None and tls_key is not None:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(tls_cert, tls_key)
    log.info("token server for %s listening on %s:%d", source.current().config.service, host, port)
    web.run_app(app, host=host, port=port, ssl_context=ssl_context, print=None)
