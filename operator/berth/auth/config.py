"""The token server's configuration: a JSON file the operator renders into a Secret.

    {
      "issuer": "berth",                 # = the registry's auth.token.issuer
      "service": "reg.ns.svc",           # = the registry's auth.token.service (JWT aud)
      "tokenTTLSeconds": 300,
      "signingKeyFile": "/etc/berth/auth/signing.key",
      "signingCertFile": "/etc/berth/auth/signing.crt",
      "robots": [{"username": "robot-team-a-1f2e3d4c", "passwordHash": "$2b$10$...",
                  "namespace": "team-a",
                  "grants": [{"repositories": ["team-a/**"], "actions": ["pull", "push"]}]}],
      "namespaceGrants": {"team-a": [{"repositories": ["team-a/**"], "actions": ["pull"]}]},
      "tokenReview": true
    }

Mounted Secrets change in place, so `ConfigFile` re-reads the file (and the key and
certificate it names) whenever their bytes change; a robot can be added or removed
without restarting the server. A file that fails to load leaves the last good
configuration in force.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Final, Protocol

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel

from berth.api.common import NAMESPACE_PLACEHOLDER
from berth.auth.grants import REPOSITORY_GLOB, Action, Rule
from berth.auth.jwt import Signer, SigningError, load_signer
from berth.auth.robots import BCRYPT_HASH_PATTERN, USERNAME_PATTERN
from berth.observability import REDACTOR

log = logging.getLogger(__name__)

DEFAULT_RELOAD_INTERVAL: Final = 2.0
ANY_SERVICE_ACCOUNT: Final = "*"

RepositoryGlob = Annotated[
    str, StringConstraints(pattern=f"^{REPOSITORY_GLOB.pattern}$", max_length=255)
]
Namespace = Annotated[
    str, StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
]


class ConfigError(ValueError):
    """A configuration (or signing key) the token server cannot use."""


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class Grant(_Model):
    """Actions on the repositories matching any of `repositories`.

    `{namespace}` in a glob stands for the robot's namespace, or for the key of
    `namespaceGrants`. `serviceAccounts` narrows a namespace grant to some
    ServiceAccounts of that namespace (default: all of them; it means nothing on a
    robot).
    """

    repositories: list[RepositoryGlob] = Field(min_length=1)
    actions: list[Action] = Field(min_length=1)
    service_accounts: list[str] | None = Field(default=None, min_length=1)

    def admits(self, service_account: str) -> bool:
        return (
            self.service_accounts is None
            or ANY_SERVICE_ACCOUNT in self.service_accounts
            or service_account in self.service_accounts
        )


class Robot(_Model):
    username: str = Field(pattern=USERNAME_PATTERN)
    password_hash: str = Field(pattern=BCRYPT_HASH_PATTERN, repr=False)
    namespace: Namespace | None = None
    grants: list[Grant] = Field(default_factory=list)
    catalog: bool = False
    """May list every repository (`registry:catalog:*`), as the pruner must."""

    @model_validator(mode="after")
    def _placeholders_need_a_namespace(self) -> Robot:
        if self.namespace is None and any(
            NAMESPACE_PLACEHOLDER in pattern for g in self.grants for pattern in g.repositories
        ):
            raise ValueError(
                f"robot {self.username} uses {NAMESPACE_PLACEHOLDER} without a namespace"
            )
        return self


class TokenServerConfig(_Model):
    issuer: str = Field(min_length=1)
    service: str = Field(min_length=1)
    # Docker clients treat a token as valid for at least 60 s whatever expires_in says.
    token_ttl_seconds: int = Field(default=300, ge=60, le=86400, alias="tokenTTLSeconds")
    signing_key_file: Path
    signing_cert_file: Path
    robots: list[Robot] = Field(default_factory=list)
    namespace_grants: dict[Namespace, list[Grant]] = Field(default_factory=dict)
    token_review: bool = False
    """Accept Kubernetes ServiceAccount tokens as passwords (checked with TokenReview)."""

    @model_validator(mode="after")
    def _unique_usernames(self) -> TokenServerConfig:
        seen: set[str] = set()
        for robot in self.robots:
            if robot.username in seen:
                raise ValueError(f"robot {robot.username} is listed twice")
            seen.add(robot.username)
        return self

    def to_json(self) -> str:
        """The file content, as the operator renders it into the Secret."""
        return self.model_dump_json(by_alias=True, indent=2)


def _describe(error: ValidationError) -> str:
    # include_input=False: a rejected value may be a password hash
    return "; ".join(
        f"{'.'.join(str(part) for part in e['loc']) or '<root>'}: {e['msg']}"
        for e in error.errors(include_input=False, include_url=False)
    )


def parse_config(data: bytes | str) -> TokenServerConfig:
    try:
        config = TokenServerConfig.model_validate_json(data)
    except ValidationError as error:
        raise ConfigError(f"invalid token server configuration: {_describe(error)}") from None
    REDACTOR.register(*(robot.password_hash for robot in config.robots))
    return config


@dataclass(frozen=True)
class ActiveConfig:
    """A loaded configuration with everything a request needs precomputed."""

    config: TokenServerConfig
    signer: Signer
    robots: Mapping[str, Robot]
    robot_rules: Mapping[str, tuple[Rule, ...]]

    @classmethod
    def build(cls, config: TokenServerConfig, signer: Signer) -> ActiveConfig:
        return cls(
            config,
            signer,
            {robot.username: robot for robot in config.robots},
            {
                robot.username: tuple(
                    Rule.build(g.repositories, g.actions, robot.namespace) for g in robot.grants
                )
                for robot in config.robots
            },
        )

    def service_account_rules(self, namespace: str, name: str) -> tuple[Rule, ...]:
        return tuple(
            Rule.build(grant.repositories, grant.actions, namespace)
            for grant in self.config.namespace_grants.get(namespace, [])
            if grant.admits(name)
        )


class ConfigSource(Protocol):
    """Where the token server gets its configuration from."""

    reload_interval: float

    def current(self) -> ActiveConfig: ...

    def reload_if_changed(self) -> bool:
        """Re-read the configuration if it changed; True if a new one took effect."""
        ...


class StaticConfig:
    """A configuration that never changes (tests, embedding)."""

    reload_interval = DEFAULT_RELOAD_INTERVAL

    def __init__(self, active: ActiveConfig) -> None:
        self._active = active

    def current(self) -> ActiveConfig:
        return self._active

    def reload_if_changed(self) -> bool:
        return False


class ConfigFile:
    """The configuration in a JSON file, re-read when it or its key files change.

    Relative `signingKeyFile`/`signingCertFile` paths are taken relative to the file.
    """

    def __init__(self, path: Path, *, reload_interval: float = DEFAULT_RELOAD_INTERVAL) -> None:
        self.path = path
        self.reload_interval = reload_interval
        self._lock = threading.Lock()
        self._failed_digest: bytes | None = None
        self._parsed: tuple[bytes, TokenServerConfig] | None = None
        self._digest, active = self._load()
        assert active is not None
        self._active = active

    def current(self) -> ActiveConfig:
        return self._active

    def reload_if_changed(self) -> bool:
        with self._lock:
            try:
                digest, active = self._load(unless_digest=self._digest)
            except (ConfigError, OSError) as error:
                # Log each broken version once, not every poll. The error names files and
                # fields only; no value from the file is part of it.
                failed = hashlib.sha256(str(error).encode()).digest()
                if failed != self._failed_digest:
                    self._failed_digest = failed
                    log.error("keeping the previous token server configuration: %s", error)
                return False
            if active is None:
                return False
            self._digest, self._active, self._failed_digest = digest, active, None
        log.info(
            "token server configuration reloaded: %d robots, %d namespaces with grants",
            len(active.robots),
            len(active.config.namespace_grants),
        )
        return True

    def _resolve(self, path: Path) -> Path:
        return path if path.is_absolute() else self.path.parent / path

    def _load(self, unless_digest: bytes | None = None) -> tuple[bytes, ActiveConfig | None]:
        """Read the file and its key and certificate. Returns their digest and, unless
        the digest equals `unless_digest`, the configuration they make."""
        raw = self.path.read_bytes()
        if self._parsed is not None and self._parsed[0] == raw:
            config = self._parsed[1]  # polled often; parse only what changed
        else:
            config = parse_config(raw)
            self._parsed = (raw, config)
        key_path = self._resolve(config.signing_key_file)
        cert_path = self._resolve(config.signing_cert_file)
        key_pem, cert_pem = key_path.read_bytes(), cert_path.read_bytes()
        digest = hashlib.sha256(b"\0".join((raw, key_pem, cert_pem))).digest()
        if digest == unless_digest:
            return digest, None
        try:
            signer = load_signer(key_pem, cert_pem)
        except SigningError as error:
            raise ConfigError(f"{key_path} / {cert_path}: {error}") from None
        return digest, ActiveConfig.build(config, signer)
