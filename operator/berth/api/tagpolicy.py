"""TagPolicy: the tags of one repository, where they come from and their history
(an ImageStream for a Berth registry)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import ConfigDict, Field, model_validator

from berth.api.common import (
    BerthModel,
    CelRule,
    Condition,
    Duration,
    ImageReference,
    RegistryReference,
    RepositoryName,
    StatusModel,
    TagGlob,
    TagName,
    conditions_field,
    validations,
)
from berth.constants import API_VERSION, TAG_POLICY_KIND


class TagPolicyConditionType(StrEnum):
    """A TagPolicy's own condition types (per tag), beside the common ones."""

    IMPORT_SUCCESS = "ImportSuccess"


ONE_SOURCE_FORM = CelRule(
    "has(self.image) ? (!has(self.tag) && !has(self.repository)) : has(self.tag)",
    "spec.tags[].from must set either image, or tag (with an optional repository)",
)
NOT_FROM_ITSELF = CelRule(
    "!has(self.from) || !has(self.from.tag) || has(self.from.repository)"
    " || self.from.tag != self.name",
    "spec.tags[].from.tag must name another tag than spec.tags[].name",
    field_path=".from.tag",
)


class TagSource(BerthModel):
    """Where a tag's image comes from: an external image, another tag of this repository,
    or a tag of another repository in the same registry."""

    image: ImageReference | None = None
    """An image outside the registry to import, e.g. docker.io/library/nginx:1.27."""
    tag: TagName | None = None
    """Another tag to follow: of this repository, or of repository when that is set."""
    repository: RepositoryName | None = None
    """Another repository of the same registry; needs tag."""

    @model_validator(mode="after")
    def _one_form(self) -> TagSource:
        if (self.image is not None and (self.tag, self.repository) != (None, None)) or (
            self.image is None and self.tag is None
        ):
            raise ValueError(ONE_SOURCE_FORM.message)
        return self

    model_config = ConfigDict(json_schema_extra=validations(ONE_SOURCE_FORM))


class ImportPolicy(BerthModel):
    """How a tag's source is imported."""

    scheduled: bool = False
    """Follow the source: an image is re-imported every interval, another tag of the
    registry is followed on every change. Without it, the source is copied when the tag
    is created or its from changes (a promotion)."""
    interval: Duration = "15m"
    """How often a scheduled import of an image asks the source, as a Go duration."""
    insecure: bool = False
    """Allow plain HTTP and unverified TLS for the source registry."""


class TagSpec(BerthModel):
    """A tag of the repository."""

    name: TagName
    """The tag, e.g. latest or v1.2.3."""
    from_: TagSource | None = Field(default=None, alias="from")
    """Where the tag's image comes from. When unset, the tag is whatever is pushed to it,
    and Berth only records its history."""
    import_policy: ImportPolicy = Field(default_factory=ImportPolicy)
    """How the source is imported."""
    immutable: bool = False
    """Once set, the tag never moves: a push that changes it is reverted and reported."""

    @model_validator(mode="after")
    def _not_from_itself(self) -> TagSpec:
        source = self.from_
        if source is not None and source.repository is None and source.tag == self.name:
            raise ValueError(NOT_FROM_ITSELF.message)
        return self

    model_config = ConfigDict(json_schema_extra=validations(NOT_FROM_ITSELF))


class TagPolicySpec(BerthModel):
    """The desired state of a TagPolicy."""

    registry_ref: RegistryReference
    """The Registry that holds the repository."""
    repository: RepositoryName | None = None
    """The repository, e.g. team-a/web; defaults to <namespace>/<name> of this TagPolicy.
    It must be one this namespace may push to (see the Registry's spec.access)."""
    tags: list[TagSpec] | None = Field(
        default=None,
        max_length=128,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """Tags Berth keeps, by name."""
    immutable_tags: list[TagGlob] | None = Field(
        default=None, max_length=64, json_schema_extra={"x-kubernetes-list-type": "set"}
    )
    """Tag globs (e.g. v*) that never move once pushed: a push that moves such a tag is
    reverted and reported."""
    history_limit: int = Field(default=10, ge=1, le=1000)
    """How many past images of each tag status.tags keeps."""

    @model_validator(mode="after")
    def _unique_tag_names(self) -> TagPolicySpec:
        # The API server enforces this through the list-map keyed by name.
        names = [tag.name for tag in self.tags or []]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"spec.tags[].name must be unique; repeated: {', '.join(duplicates)}")
        return self


class TagEvent(StatusModel):
    """An image a tag pointed to."""

    digest: str = Field(max_length=256)
    """Manifest digest, e.g. sha256:..."""
    created: datetime
    """When the tag started pointing to this image."""
    source: str | None = Field(default=None, max_length=1024)
    """Where the image came from: the imported reference, or push."""
    generation: int | None = Field(default=None, ge=0)
    """The TagPolicy generation that produced this entry."""


class TagStatus(StatusModel):
    """History of one tag."""

    tag: str = Field(max_length=128)
    """The tag."""
    items: list[TagEvent] = Field(default_factory=list, max_length=1000)
    """Images the tag pointed to, newest first, at most spec.historyLimit."""
    conditions: list[Condition] = conditions_field()
    """ImportSuccess for tags with a from.image source."""


class TagPolicyStatus(StatusModel):
    """The observed state of a TagPolicy."""

    observed_generation: int | None = Field(default=None, ge=0)
    """The metadata.generation this status describes."""
    conditions: list[Condition] = conditions_field()
    """Ready: every tag is in place."""
    pull_spec: str | None = Field(default=None, max_length=512)
    """<registry host>/<repository>, to use in image references."""
    tags: list[TagStatus] = Field(
        default_factory=list,
        max_length=256,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["tag"]},
    )
    """Per-tag history."""


class TagPolicy(BerthModel):
    """The tags of one repository in a Berth registry, like an ImageStream: tags imported
    from outside images, tags that follow other tags (promotion), immutable tags and a
    history of what each tag pointed to."""

    model_config = ConfigDict(extra="ignore")

    api_version: str = API_VERSION
    kind: str = TAG_POLICY_KIND
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: TagPolicySpec
    status: TagPolicyStatus = Field(default_factory=TagPolicyStatus)
