"""Image references, parsed the way container runtimes parse them.

The grammar is distribution's (`github.com/distribution/reference`):

    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [ host "/" ] path
    host       := ( domain-component ( "." domain-component )* | "[" ipv6 "]" ) [ ":" port ]
    path       := path-component ( "/" path-component )*
    path-component := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
    tag        := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
    digest     := algorithm ":" hex

and names are normalised as Docker does: the first path component is a host only when it
contains "." or ":", is "localhost", or has upper-case letters (which a path may not);
otherwise the host is docker.io, and a single-component name on docker.io gets the
`library/` prefix (`nginx` is `docker.io/library/nginx`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

DEFAULT_HOST: Final = "docker.io"
# Docker still accepts this old name of Docker Hub and means docker.io by it.
LEGACY_DEFAULT_HOST: Final = "index.docker.io"
OFFICIAL_PREFIX: Final = "library/"
DEFAULT_TAG: Final = "latest"
# distribution limits the name (host and path) to 255 characters.
NAME_MAX_LENGTH: Final = 255

_PATH_COMPONENT: Final = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT: Final = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_HOST: Final = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?"
_TAG: Final = r"[\w][\w.-]{0,127}"
_ALGORITHM: Final = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*"

_PATH_RE: Final = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
_HOST_RE: Final = re.compile(_HOST)
_TAG_RE: Final = re.compile(_TAG, re.ASCII)
_DIGEST_RE: Final = re.compile(rf"({_ALGORITHM}):([0-9a-fA-F]{{32,}})")
# A bare image ID: Docker refuses it as a name so that it is never mistaken for one.
_IMAGE_ID_RE: Final = re.compile(r"[a-f0-9]{64}")
# Hex lengths of the algorithms distribution registries accept; their hex is lower-case.
_DIGEST_HEX_LENGTHS: Final = {"sha256": 64, "sha384": 96, "sha512": 128}


class InvalidReference(ValueError):
    """An image reference that does not follow the grammar; the message says why."""


@dataclass(frozen=True, slots=True)
class Reference:
    """A fully qualified image reference: `host/repository[:tag][@digest]`."""

    host: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """host/repository, without tag or digest."""
        return f"{self.host}/{self.repository}"

    @property
    def familiar(self) -> str:
        """The short form people type: `nginx:1.27` for docker.io/library/nginx:1.27.

        Unlike Docker's, it keeps `docker.io/` where dropping it would make the first path
        component read as a host (docker.io/my.org/app), so it always parses back to the
        same reference.
        """
        name = self.name
        if self.host == DEFAULT_HOST:
            short = self.repository
            if short.startswith(OFFICIAL_PREFIX) and short.count("/") == 1:
                short = short.removeprefix(OFFICIAL_PREFIX)
            if split_host(short)[0] == DEFAULT_HOST:
                name = short
        return name + self._suffix()

    @property
    def reference(self) -> str:
        """What a pull asks the registry for: the digest if there is one, else the tag
        (`latest` when none is written)."""
        return self.digest or self.tag or DEFAULT_TAG

    def _suffix(self) -> str:
        return (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    def __str__(self) -> str:
        return self.name + self._suffix()


def parse_digest(text: str) -> str:
    """Validate `algorithm:hex` and return it unchanged."""
    match = _DIGEST_RE.fullmatch(text)
    if not match:
        raise InvalidReference(
            f"invalid digest {text!r}: expected algorithm:hex, e.g. sha256:<64 hex>"
        )
    algorithm, hex_part = match.groups()
    expected = _DIGEST_HEX_LENGTHS.get(algorithm)
    if expected is None:
        raise InvalidReference(f"invalid digest {text!r}: unsupported algorithm {algorithm!r}")
    if len(hex_part) != expected or hex_part != hex_part.lower():
        raise InvalidReference(
            f"invalid digest {text!r}: {algorithm} needs {expected} lower-case hex characters"
        )
    return text


def split_host(name: str) -> tuple[str, str]:
    """(host, path) of a name, with Docker's normalisation of Docker Hub names."""
    first, slash, rest = name.partition("/")
    looks_like_host = (
        any(c in first for c in ".:") or first == "localhost" or first != first.lower()
    )
    if slash and looks_like_host:
        host, path = first, rest
    else:
        host, path = DEFAULT_HOST, name
    if host == LEGACY_DEFAULT_HOST:
        host = DEFAULT_HOST
    if host == DEFAULT_HOST and "/" not in path:
        path = OFFICIAL_PREFIX + path
    return host, path


def parse_reference(text: str) -> Reference:
    """Parse an image reference such as `nginx`, `user/app:1`, `host:5000/a/b@sha256:...`.

    Raises InvalidReference with a message naming the part that is wrong.
    """
    if not text:
        raise InvalidReference("empty image reference")
    if text != text.strip():
        raise InvalidReference(f"invalid reference {text!r}: leading or trailing whitespace")
    if _IMAGE_ID_RE.fullmatch(text):
        raise InvalidReference(
            f"invalid reference {text!r}: a 64-character hex string is an image ID, not a name"
        )

    remainder, at, digest = text.partition("@")
    if at:
        parse_digest(digest)
    # A ':' after the last '/' starts the tag; an earlier one is the host's port.
    tag: str | None = None
    colon = remainder.rfind(":")
    if colon > remainder.rfind("/"):
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        if not _TAG_RE.fullmatch(tag):
            raise InvalidReference(
                f"invalid tag {tag!r} in {text!r}: a tag is up to 128 letters, digits, "
                "'_', '.' and '-', not starting with '.' or '-'"
            )
    if not remainder:
        raise InvalidReference(f"invalid reference {text!r}: the repository name is missing")

    host, path = split_host(remainder)
    if not _HOST_RE.fullmatch(host):
        raise InvalidReference(f"invalid host {host!r} in {text!r}")
    if path != path.lower():
        raise InvalidReference(f"invalid reference {text!r}: repository name must be lowercase")
    if not _PATH_RE.fullmatch(path):
        raise InvalidReference(
            f"invalid repository {path!r} in {text!r}: path components are lower-case letters "
            "and digits, joined by '.', '_', '__' or '-', separated by '/'"
        )
    if len(host) + 1 + len(path) > NAME_MAX_LENGTH:
        raise InvalidReference(
            f"invalid reference {text!r}: the name is longer than {NAME_MAX_LENGTH} characters"
        )
    return Reference(host=host, repository=path, tag=tag, digest=digest if at else None)
