"""Names shared across Berth: API group and version, labels, finalizer, field manager."""

import os
from collections.abc import Mapping
from typing import Final

from berth import __version__

GROUP: Final = "berth.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

REGISTRY_KIND: Final = "Registry"
TAG_POLICY_KIND: Final = "TagPolicy"
PRUNE_SCHEDULE_KIND: Final = "PruneSchedule"
REGISTRY_PLURAL: Final = "registries"
TAG_POLICY_PLURAL: Final = "tagpolicies"
PRUNE_SCHEDULE_PLURAL: Final = "pruneschedules"

FIELD_MANAGER: Final = "berth-operator"
FINALIZER: Final = f"{GROUP}/cleanup"

LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_PART_OF: Final = "app.kubernetes.io/part-of"
MANAGED_BY: Final = "berth"

ANNOTATION_PULL_SECRETS: Final = f"{GROUP}/pull-secrets"
ANNOTATION_CONFIG_CHECKSUM: Final = f"{GROUP}/config-checksum"
# On a Registry: "read-only" switches a Managed registry to read-only for maintenance
# (storage GC) without touching its spec; removing it restores read-write.
ANNOTATION_MAINTENANCE: Final = f"{GROUP}/maintenance"
MAINTENANCE_READ_ONLY: Final = "read-only"

# The operator's own image also runs its token servers and prune jobs; installs set
# BERTH_OPERATOR_IMAGE to the image they deploy (the chart does).
OPERATOR_IMAGE_ENV: Final = "BERTH_OPERATOR_IMAGE"
DEFAULT_OPERATOR_IMAGE: Final = f"ghcr.io/berth-dev/berth:{__version__}"


def operator_image(environ: Mapping[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    return environ.get(OPERATOR_IMAGE_ENV) or DEFAULT_OPERATOR_IMAGE


# Where Managed registries send their push notifications: the operator's notifications
# endpoint as the registry Pods reach it, e.g.
# http://berth-operator.berth-system.svc:8082/notifications. Unset: registries are polled.
NOTIFICATIONS_URL_ENV: Final = "BERTH_NOTIFICATIONS_URL"


def notifications_url(environ: Mapping[str, str] | None = None) -> str | None:
    environ = os.environ if environ is None else environ
    return (environ.get(NOTIFICATIONS_URL_ENV) or "").rstrip("/") or None


# distribution (registry:2) image run for Managed registries unless spec.image says otherwise.
DEFAULT_REGISTRY_IMAGE: Final = "docker.io/library/registry:2.8.3"
