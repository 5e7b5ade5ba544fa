"""Robot credentials: the username/password pairs Berth hands to namespaces.

A robot's password exists in two places only: the namespace's
`kubernetes.io/dockerconfigjson` Secret and, briefly, the memory of whoever made it. The
token server (or htpasswd) sees only its bcrypt hash.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

import bcrypt

from berth.observability import REDACTOR

BCRYPT_COST: Final = 10
# bcrypt reads only the first 72 bytes of a password (bcrypt>=5 refuses longer ones).
BCRYPT_MAX_PASSWORD_BYTES: Final = 72
MAX_USERNAME_LENGTH: Final = 64
ROBOT_PREFIX: Final = "robot-"
_SUFFIX_BYTES: Final = 4  # 8 hex characters tell one namespace's robots apart
_PASSWORD_BYTES: Final = 32
USERNAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
BCRYPT_HASH_PATTERN: Final = r"^\$2[aby]\$[0-9]{2}\$[./A-Za-z0-9]{53}$"


@dataclass(frozen=True)
class RobotCredential:
    username: str
    password: str = field(repr=False)
    password_hash: str = field(repr=False)
    namespace: str = ""
    registry: str = ""


def new_robot(namespace: str, registry_name: str) -> RobotCredential:
    """A fresh robot for `namespace` on the registry `registry_name`.

    Each call makes a new username (the random suffix), so during rotation the old and
    the new robot can both be valid until every copy of the old one is replaced.
    """
    suffix = secrets.token_hex(_SUFFIX_BYTES)
    prefix = f"{ROBOT_PREFIX}{namespace}"[: MAX_USERNAME_LENGTH - len(suffix) - 1].rstrip("-.")
    password = secrets.token_urlsafe(_PASSWORD_BYTES)
    password_hash = hash_password(password)
    REDACTOR.register(password, password_hash)
    return RobotCredential(f"{prefix}-{suffix}", password, password_hash, namespace, registry_name)


def hash_password(password: str, *, cost: int = BCRYPT_COST) -> str:
    encoded = password.encode()
    if len(encoded) > BCRYPT_MAX_PASSWORD_BYTES:
        raise ValueError(f"bcrypt passwords are limited to {BCRYPT_MAX_PASSWORD_BYTES} bytes")
    return bcrypt.hashpw(encoded, bcrypt.gensalt(rounds=cost)).decode()


def verify_password(password: str, password_hash: str) -> bool:
    """Whether `password` matches the bcrypt `password_hash`. Slow on purpose (~50 ms at
    cost 10): callers in an event loop run it in a thread."""
    encoded = password.encode()
    if len(encoded) > BCRYPT_MAX_PASSWORD_BYTES:
        return False  # never a robot password, and bcrypt would ignore the tail
    try:
        return bool(bcrypt.checkpw(encoded, password_hash.encode()))
    except ValueError:  # a malformed hash matches nothing
        return False


def password_fingerprint(password: str) -> bytes:
    """A digest to key caches by, so that no cache holds a password itself."""
    return hashlib.sha256(password.encode()).digest()


def dockerconfigjson(hosts: Iterable[str], username: str, password: str) -> bytes:
    """The `.dockerconfigjson` of a `kubernetes.io/dockerconfigjson` Secret that logs in
    to every host name the registry answers to.

    Keys are sorted so that the same inputs always give the same bytes: the Secret then
    changes only when the credential or the host list does.
    """
    unique_hosts = sorted(set(hosts))
    if not unique_hosts:
        raise ValueError("dockerconfigjson needs at least one registry host")
    if ":" in username:
        raise ValueError("a Basic-auth username cannot contain ':'")
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    entry = {"username": username, "password": password, "auth": auth}
    document = {"auths": dict.fromkeys(unique_hosts, entry)}
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def htpasswd_line(username: str, password_hash: str) -> str:
    """One `user:bcrypt-hash` line of an htpasswd file, without the newline.

    distribution's htpasswd accepts bcrypt hashes only.
    """
    if re.fullmatch(USERNAME_PATTERN, username) is None:
        raise ValueError(f"invalid htpasswd username {username!r}")
    if re.fullmatch(BCRYPT_HASH_PATTERN, password_hash) is None:
        raise ValueError("htpasswd needs a bcrypt hash ($2a$, $2b$ or $2y$)")
    return f"{username}:{password_hash}"
