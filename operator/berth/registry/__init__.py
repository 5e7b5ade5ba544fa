"""The OCI distribution client, how to reach a registry, image references, registry
inventories and image copies."""

from berth.registry.access import RegistryAccess, registry_client
from berth.registry.client import (
    DigestCache,
    DigestMismatchError,
    Manifest,
    ManifestInfo,
    RegistryClient,
    RegistryError,
    TransferInterruptedError,
)
from berth.registry.copy import CopyResult, copy_image
from berth.registry.inventory import RepositoryInventory, inventory
from berth.registry.reference import InvalidReference, Reference, parse_digest, parse_reference

__all__ = [
    "CopyResult",
    "DigestCache",
    "DigestMismatchError",
    "InvalidReference",
    "Manifest",
    "ManifestInfo",
    "Reference",
    "RegistryAccess",
    "RegistryClient",
    "RegistryError",
    "RepositoryInventory",
    "TransferInterruptedError",
    "copy_image",
    "inventory",
    "parse_digest",
    "parse_reference",
    "registry_client",
]
