"""The OCI distribution client, image references and registry inventories."""

from berth.registry.client import (
    DigestCache,
    DigestMismatchError,
    Manifest,
    ManifestInfo,
    RegistryClient,
    RegistryError,
)
from berth.registry.inventory import RepositoryInventory, inventory
from berth.registry.reference import InvalidReference, Reference, parse_digest, parse_reference

__all__ = [
    "DigestCache",
    "DigestMismatchError",
    "InvalidReference",
    "Manifest",
    "ManifestInfo",
    "Reference",
    "RegistryClient",
    "RegistryError",
    "RepositoryInventory",
    "inventory",
    "parse_digest",
    "parse_reference",
]
