"""A Docker token server for tests (the registry token auth spec, as distribution 2.8
verifies it): a thread serving `GET /token?service=..&scope=..` on loopback.

Users authenticate with Basic credentials; `grants` says which actions each user gets
per repository (all that were asked for, by default). Tokens are ES256 JWTs whose `x5c`
header carries a certificate from the test CA, so the registry trusts them through
`auth.token.rootcertbundle`. Every request is recorded for assertions.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from testbed.cluster import free_port
from testbed.pki import CertificateAuthority
from testbed.registry import TokenAuth

# (user or None for anonymous, resource type, resource name, requested actions) -> granted
Grants = Callable[[str | None, str, str, list[str]], list[str]]


def grant_all_to_users(user: str | None, kind: str, name: str, actions: list[str]) -> list[str]:
    return actions if user is not None else []


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenRequest:
    user: str | None
    scopes: list[str]
    service: str | None


@dataclass
class TokenServer:
    users: dict[str, str]
    grants: Grants = grant_all_to_users
    service: str = "berth-test-registry"
    issuer: str = "berth-test-token-server"
    expires_in: int = 300
    requests: list[TokenRequest] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self._ca = CertificateAuthority("berth-test-token-ca")
        signer = self._ca.issue("token-signer", server=True)
        self._key = serialization.load_pem_private_key(signer.key_pem, password=None)
        assert isinstance(self._key, ec.EllipticCurvePrivateKey)
        certificate = x509.load_pem_x509_certificate(signer.cert_pem)
        self._x5c = base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def auth(self) -> TokenAuth:
        """The registry side: what LocalRegistry(auth=...) needs to trust these tokens."""
        return TokenAuth(
            realm=self.realm,
            service=self.service,
            issuer=self.issuer,
            rootcert_pem=self._ca.cert_pem,
        )

    def __enter__(self) -> TokenServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.port = self.port or free_port()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server._handle(self)

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep test output clean

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _user(self, header: str | None) -> tuple[bool, str | None]:
        """(credentials acceptable, user); the user is None when anonymous."""
        if not header:
            return True, None
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False, None
        user, _, password = base64.b64decode(encoded).decode().partition(":")
        if self.users.get(user) != password:
            return False, user
        return True, user

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        url = urllib.parse.urlsplit(handler.path)
        query = urllib.parse.parse_qs(url.query)
        scopes = [s for value in query.get("scope", []) for s in value.split(" ") if s]
        accepted, user = self._user(handler.headers.get("Authorization"))
        with self._lock:
            service = query["service"][0] if "service" in query else None
            self.requests.append(TokenRequest(user, scopes, service))
        if not accepted or url.path != "/token":
            handler.send_response(404 if accepted else 401)
            handler.end_headers()
            return
        access: list[dict[str, object]] = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            granted = self.grants(user, kind, name, actions.split(","))
            access.append({"type": kind, "name": name, "actions": granted})
        body = json.dumps(
            {
                "token": self._sign(user or "", access),
                "expires_in": self.expires_in,
                "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        ).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _sign(self, subject: str, access: list[dict[str, object]]) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256", "x5c": [self._x5c]}
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + self.expires_in,
            "nbf": now - 1,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = ".".join(
            _b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
        )
        assert isinstance(self._key, ec.EllipticCurvePrivateKey)
        der = self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        # JWS wants the raw 64-byte r||s, not the DER the library produces.
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
