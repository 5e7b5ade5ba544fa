"""Types shared by Berth's custom resources: the model base, conditions, references,
string grammars (durations, cron, globs, image names) and CEL rule helpers.

The grammars are written once here and used twice: as `pattern` in the CRD schemas the
API server enforces, and by pydantic when the CLI validates a manifest offline. They use
only the regular-expression syntax that Go's RE2 and pydantic's Rust engine share.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

# -- grammars ---------------------------------------------------------------------------

DURATION_PATTERN: Final = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"
CRON_FIELD: Final = r"[0-9A-Za-z*?/,-]+"
CRON_PATTERN: Final = (
    r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)"
    rf"|({CRON_FIELD} +){{4}}{CRON_FIELD})$"
)
QUANTITY_PATTERN: Final = r"^([0-9]+(\.[0-9]+)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"
TAG_PATTERN: Final = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
TAG_GLOB_PATTERN: Final = r"^[A-Za-z0-9_.*-]{1,128}$"
REPOSITORY_COMPONENT: Final = r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*"
REPOSITORY_PATTERN: Final = rf"^{REPOSITORY_COMPONENT}(/{REPOSITORY_COMPONENT})*$"
REPOSITORY_GLOB_SEGMENT: Final = r"([a-z0-9._*-]|\{namespace\})+"
REPOSITORY_GLOB_PATTERN: Final = rf"^{REPOSITORY_GLOB_SEGMENT}(/{REPOSITORY_GLOB_SEGMENT})*$"
DOMAIN_COMPONENT: Final = r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
IMAGE_PATTERN: Final = (
    rf"^({DOMAIN_COMPONENT}(\.{DOMAIN_COMPONENT})*(:[0-9]+)?/)?"
    rf"{REPOSITORY_COMPONENT}(/{REPOSITORY_COMPONENT})*"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@[a-z0-9]+([+._-][a-z0-9]+)*:[A-Fa-f0-9]{32,})?$"
)
DNS_LABEL_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
HOSTNAME_PATTERN: Final = (
    r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
URL_PATTERN: Final = r"^https?://[^\s/?#]+/?$"
TIME_ZONE_PATTERN: Final = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$"
CONDITION_TYPE_PATTERN: Final = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
CONDITION_REASON_PATTERN: Final = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"

Duration = Annotated[str, StringConstraints(pattern=DURATION_PATTERN, max_length=64)]
CronSchedule = Annotated[str, StringConstraints(pattern=CRON_PATTERN, max_length=128)]
Quantity = Annotated[str, StringConstraints(pattern=QUANTITY_PATTERN, max_length=64)]
TagName = Annotated[str, StringConstraints(pattern=TAG_PATTERN, max_length=128)]
TagGlob = Annotated[str, StringConstraints(pattern=TAG_GLOB_PATTERN, max_length=128)]
RepositoryName = Annotated[str, StringConstraints(pattern=REPOSITORY_PATTERN, max_length=255)]
RepositoryGlob = Annotated[str, StringConstraints(pattern=REPOSITORY_GLOB_PATTERN, max_length=255)]
ImageReference = Annotated[str, StringConstraints(pattern=IMAGE_PATTERN, max_length=512)]
DNSLabel = Annotated[str, StringConstraints(pattern=DNS_LABEL_PATTERN, max_length=63)]
DNSSubdomain = Annotated[str, StringConstraints(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)]
Hostname = Annotated[str, StringConstraints(pattern=HOSTNAME_PATTERN, max_length=253)]
URL = Annotated[str, StringConstraints(pattern=URL_PATTERN, max_length=2048)]
TimeZone = Annotated[str, StringConstraints(pattern=TIME_ZONE_PATTERN, max_length=64)]
ShortText = Annotated[str, StringConstraints(max_length=1024)]

_DURATION_UNITS: Final = {
    "ns": timedelta(microseconds=1) / 1000,
    "us": timedelta(microseconds=1),
    "µs": timedelta(microseconds=1),
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
}
_DURATION_TERM: Final = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h)")


def parse_duration(text: str) -> timedelta:
    """A Go duration string (`90s`, `1h30m`, `1.5h`) as a timedelta."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"{text!r} is not a duration like 90s, 15m or 168h")
    return sum(
        (float(number) * _DURATION_UNITS[unit] for number, unit in _DURATION_TERM.findall(text)),
        timedelta(),
    )


def is_cron_schedule(text: str) -> bool:
    """Whether `text` has the shape of a CronJob schedule: five fields or an @macro."""
    return re.fullmatch(CRON_PATTERN, text) is not None


@functools.lru_cache(maxsize=4096)
def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """A compiled regex for a repository or tag glob, the one grammar every part of Berth
    uses (grants, token scopes, retention, prune scopes).

    `*` matches within one path segment, `**` as a whole segment matches any number of
    segments: `team/**` matches `team/app` and `team/a/b` (not `team`), `**/app` matches
    `app` and `x/y/app`, `**` matches everything.
    """
    segments = pattern.split("/")
    parts: list[str] = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "**":
            # Last, it must match something, so "team/**" never covers "team/".
            parts.append(".+" if last else "(?:[^/]+/)*")
        else:
            parts.append(re.escape(segment).replace(r"\*", "[^/]*") + ("" if last else "/"))
    return re.compile("".join(parts))


def glob_match(pattern: str, name: str) -> bool:
    """Whether repository or tag `name` matches `pattern` (see `glob_to_regex`)."""
    return glob_to_regex(pattern).fullmatch(name) is not None


NAMESPACE_PLACEHOLDER: Final = "{namespace}"


def expand_namespace(pattern: str, namespace: str | None) -> str:
    """`pattern` with its `{namespace}` placeholders replaced by `namespace`.

    A pattern without the placeholder is returned as it is; one with it and no namespace
    to put there (`None`: an identity outside any namespace) is a ValueError.
    """
    if NAMESPACE_PLACEHOLDER not in pattern:
        return pattern
    if namespace is None:
        raise ValueError(f"{pattern!r} uses {NAMESPACE_PLACEHOLDER} but has no namespace")
    return pattern.replace(NAMESPACE_PLACEHOLDER, namespace)


# -- CEL rules --------------------------------------------------------------------------


@dataclass(frozen=True)
class CelRule:
    """One `x-kubernetes-validations` entry. `message` names the field it is about."""

    rule: str
    message: str
    field_path: str | None = None
    reason: str | None = None

    def schema(self) -> dict[str, str]:
        entry = {"rule": self.rule, "message": self.message}
        if self.field_path:
            entry["fieldPath"] = self.field_path
        if self.reason:
            entry["reason"] = self.reason
        return entry


def validations(*rules: CelRule) -> dict[str, Any]:
    """`json_schema_extra` for a model or field carrying CEL rules."""
    return {"x-kubernetes-validations": [rule.schema() for rule in rules]}


# -- models -----------------------------------------------------------------------------


class BerthModel(BaseModel):
    """Base of every spec model: camelCase on the wire, snake_case in Python.

    Unknown fields are errors, as the API server's strict field validation would make them.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
        extra="forbid",
    )

    def to_api(self) -> dict[str, Any]:
        """The JSON form the API server stores: camelCase, unset optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class StatusModel(BerthModel):
    """Base of status models: fields Berth does not know (yet) are ignored on read."""

    model_config = ConfigDict(extra="ignore")


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class ConditionType(StrEnum):
    """Condition types used across kinds; each kind adds its own."""

    READY = "Ready"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"


class Condition(StatusModel):
    """One aspect of the object's state (the metav1.Condition shape)."""

    type: str = Field(pattern=CONDITION_TYPE_PATTERN, max_length=316)
    """The aspect, in CamelCase: Ready, Progressing, Degraded, ..."""
    status: ConditionStatus
    """True, False or Unknown."""
    observed_generation: int | None = Field(default=None, ge=0)
    """The metadata.generation the condition was computed from."""
    last_transition_time: datetime
    """When status last changed."""
    reason: str = Field(pattern=CONDITION_REASON_PATTERN, min_length=1, max_length=1024)
    """A CamelCase word for the cause, meant for programs and filters."""
    message: str = Field(max_length=32768)
    """Details for humans; may be empty."""


CONDITIONS_SCHEMA: Final[dict[str, Any]] = {
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
}


def conditions_field() -> Any:
    """The `conditions` field every status has, keyed by `type`."""
    return Field(default_factory=list, max_length=32, json_schema_extra=CONDITIONS_SCHEMA)


def find_condition(conditions: list[Condition], condition_type: str) -> Condition | None:
    return next((c for c in conditions if c.type == condition_type), None)


class LocalObjectReference(BerthModel):
    """A reference to an object in the same namespace."""

    name: DNSSubdomain
    """Name of the object."""


class SecretKeyReference(BerthModel):
    """A key of a Secret in the same namespace."""

    name: DNSSubdomain
    """Name of the Secret."""
    key: str = Field(default="ca.crt", pattern=r"^[-._a-zA-Z0-9]+$", max_length=253)
    """Key within the Secret."""


class RegistryReference(BerthModel):
    """The Registry this object belongs to."""

    name: DNSSubdomain
    """Name of the Registry."""
    namespace: DNSLabel | None = None
    """Namespace of the Registry; defaults to this object's namespace."""


class LabelSelectorRequirement(BerthModel):
    """A label requirement: key, operator and values."""

    key: str = Field(max_length=317)
    """The label key."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    """In, NotIn, Exists or DoesNotExist."""
    values: list[Annotated[str, StringConstraints(max_length=63)]] | None = Field(
        default=None, max_length=64
    )
    """Values for In and NotIn; empty for Exists and DoesNotExist."""


class LabelSelector(BerthModel):
    """A label query (the metav1.LabelSelector shape); an empty selector matches all."""

    match_labels: dict[str, Annotated[str, StringConstraints(max_length=63)]] | None = None
    """Labels that must all be present with these values."""
    match_expressions: list[LabelSelectorRequirement] | None = Field(default=None, max_length=32)
    """Requirements that must all hold."""


FreeForm = dict[str, Any]
"""An object Berth passes through to a Kubernetes field without checking it."""
