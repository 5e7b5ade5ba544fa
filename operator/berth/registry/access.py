"""How to reach a registry: its URL, the credential and CA to use, and every host name
images in the cluster may call it by. berth.reconcile.endpoints resolves a Registry into
one; TagPolicies, promotions and prune runs connect with it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from berth.registry.client import RegistryClient


@dataclass(frozen=True)
class RegistryAccess:
    """How to reach the registry, and every name images in the cluster may call it."""

    url: str
    hosts: tuple[str, ...]
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_pem: str | None = field(default=None, repr=False)


def registry_client(access: RegistryAccess, **options: Any) -> RegistryClient:
    """A client for the registry `access` describes; `options` go to RegistryClient."""
    return RegistryClient(
        access.url,
        username=access.username,
        password=access.password,
        ca_pem=access.ca_pem,
        **options,
    )
