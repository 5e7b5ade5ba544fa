"""A Registry as a user of the test bed's real node sees it (its CA, its Services).
Used by `make run` (`python -m testbed trust`) and the tests on the real node; the node
itself is configured by Berth's node agent."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client

from berth.constants import GROUP, VERSION


@dataclass(frozen=True)
class Served:
    """What a user reads off a Ready Registry: its CA, Services and in-cluster host."""

    namespace: str
    name: str
    ca_pem: bytes
    cluster_ip: str
    auth_ip: str
    auth_port: int
    port: int

    @property
    def host(self) -> str:
        """The host image references in the cluster use: `<name>.<namespace>.svc:<port>`."""
        return f"{self.name}.{self.namespace}.svc:{self.port}"

    @property
    def auth_host(self) -> str:
        return f"{self.name}-auth.{self.namespace}.svc"

    def write_ca(self, folder: Path) -> Path:
        """A folder holding the CA as skopeo's --cert-dir wants it, and curl's file."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "ca.crt").write_bytes(self.ca_pem)
        return folder


def served(api: client.ApiClient, namespace: str, name: str) -> Served:
    core = client.CoreV1Api(api)
    status = _registry(api, namespace, name)["status"]
    ca = _read(
        core.read_namespaced_config_map(status["caConfigMap"], namespace, _preload_content=False)
    )
    service = _read(core.read_namespaced_service(name, namespace, _preload_content=False))
    auth = _read(core.read_namespaced_service(f"{name}-auth", namespace, _preload_content=False))
    return Served(
        namespace=namespace,
        name=name,
        ca_pem=str(ca["data"]["ca.crt"]).encode(),
        cluster_ip=str(service["spec"]["clusterIP"]),
        auth_ip=str(auth["spec"]["clusterIP"]),
        auth_port=int(auth["spec"]["ports"][0]["port"]),
        port=int(service["spec"]["ports"][0]["port"]),
    )


def _read(response: Any) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(response.data)
    return document


def _registry(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return _read(
        client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, "registries", name, _preload_content=False
        )
    )
