"""A real OCI registry for tests: Debian's `docker-registry` (distribution 2.8) on a free
loopback port with a temporary store, optionally behind htpasswd or token auth.
"""

from __future__ import annotations

import os
import secrets
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import yaml

from testbed.cluster import ClusterError, free_port, wait_for
from testbed.pki import KeyPair

REGISTRY_BINARY = os.environ.get("BERTH_REGISTRY_BINARY", "/usr/bin/docker-registry")


@dataclass(frozen=True)
class HtpasswdAuth:
    """Basic auth from a bcrypt htpasswd file: {user: password}."""

    users: dict[str, str]


@dataclass(frozen=True)
class HtpasswdFile:
    """Basic auth from an existing htpasswd file (e.g. one an operator rendered)."""

    content: str


@dataclass(frozen=True)
class TokenAuth:
    """Docker token auth: the registry trusts JWTs signed by `rootcert_pem`'s key."""

    realm: str
    service: str
    issuer: str
    rootcert_pem: bytes


@dataclass
class LocalRegistry:
    workdir: Path
    auth: HtpasswdAuth | HtpasswdFile | TokenAuth | None = None
    read_only: bool = False
    notifications: list[dict[str, object]] = field(default_factory=list)
    # `catalog.maxentries`: the largest `n` the catalog accepts (distribution's default 1000).
    catalog_max_entries: int | None = None
    # Serve HTTPS with this certificate (e.g. from testbed.pki.CertificateAuthority.issue).
    tls: KeyPair | None = None
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        """host:port, as an image reference names it."""
        return f"127.0.0.1:{self.port}"

    @property
    def store(self) -> Path:
        return self.workdir / "store"

    @property
    def config_path(self) -> Path:
        return self.workdir / "config.yml"

    @property
    def log_path(self) -> Path:
        return self.workdir / "registry.log"

    def __enter__(self) -> LocalRegistry:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def config(self) -> dict[str, object]:
        config: dict[str, object] = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text", "fields": {"service": "registry"}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.store)},
                "delete": {"enabled": True},
                "maintenance": {
                    "uploadpurging": {"enabled": False},
                    "readonly": {"enabled": self.read_only},
                },
            },
            "http": {
                "addr": self.host,
                "secret": secrets.token_hex(16),
                "headers": {"X-Content-Type-Options": ["nosniff"]},
            },
        }
        if isinstance(self.auth, HtpasswdAuth | HtpasswdFile):
            htpasswd = self.workdir / "htpasswd"
            htpasswd.write_text(
                self.auth.content
                if isinstance(self.auth, HtpasswdFile)
                else "".join(
                    f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(5)).decode()}\n"
                    for user, password in self.auth.users.items()
                )
            )
            config["auth"] = {"htpasswd": {"realm": "berth-test", "path": str(htpasswd)}}
        elif isinstance(self.auth, TokenAuth):
            bundle = self.workdir / "token-ca.pem"
            bundle.write_bytes(self.auth.rootcert_pem)
            config["auth"] = {
                "token": {
                    "realm": self.auth.realm,
                    "service": self.auth.service,
                    "issuer": self.auth.issuer,
                    "rootcertbundle": str(bundle),
                }
            }
        if self.notifications:
            config["notifications"] = {"endpoints": self.notifications}
        if self.catalog_max_entries is not None:
            config["catalog"] = {"maxentries": self.catalog_max_entries}
        if self.tls is not None:
            certificate, key = self.tls.write(self.workdir, "tls")
            http = config["http"]
            assert isinstance(http, dict)
            http["tls"] = {"certificate": str(certificate), "key": str(key)}
        return config

    def start(self, timeout: float = 30.0) -> None:
        if not Path(REGISTRY_BINARY).exists():
            raise ClusterError(
                f"{REGISTRY_BINARY} not found: install Debian's docker-registry package"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.store.mkdir(exist_ok=True)
        self.port = self.port or free_port()
        self.config_path.write_text(yaml.safe_dump(self.config()))
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [REGISTRY_BINARY, "serve", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for(f"registry at {self.url}", self._answers, timeout, interval=0.1)
        except ClusterError as error:
            raise ClusterError(
                f"{error}\n{self.config_path.read_text()}\n{self.log_path.read_text()[-2000:]}"
            ) from None

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise ClusterError(f"docker-registry exited:\n{self.log_path.read_text()[-2000:]}")
        # Only "is it up": the readiness probe need not trust the test certificate.
        context = ssl._create_unverified_context() if self.tls else None
        try:
            with urllib.request.urlopen(f"{self.url}/v2/", timeout=2, context=context) as response:
                return bool(response.status == 200)
        except urllib.error.HTTPError as error:
            return error.code == 401  # up, and asking for credentials

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def restart(self, **changes: object) -> None:
        """Stop, apply attribute changes (e.g. read_only=True), start on the same port."""
        self.stop()
        for name, value in changes.items():
            setattr(self, name, value)
        self.start()

    def garbage_collect(self, *, dry_run: bool = False) -> str:
        """Run `docker-registry garbage-collect` on the store; the registry must be
        read-only or stopped while it runs."""
        argv = [REGISTRY_BINARY, "garbage-collect", str(self.config_path)]
        if dry_run:
            argv.append("--dry-run")
        return subprocess.run(argv, check=True, capture_output=True, text=True).stdout

    def store_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.store.rglob("*") if f.is_file())

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
