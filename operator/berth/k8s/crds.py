"""Installing Berth's CRDs (for `make run` and `berth crds apply`)."""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from berth.k8s.api import ApiException, Kube
from berth.k8s.kinds import CRD


def apply_crds(
    directory: Path, *, kubeconfig: str | None = None, timeout: float = 60.0
) -> list[str]:
    """Server-side apply every CRD in `directory`; return their names once Established."""
    kube = Kube.from_environment(kubeconfig)
    try:
        names = []
        for path in sorted(directory.glob("*.yaml")):
            for document in yaml.safe_load_all(path.read_text()):
                if not document or document.get("kind") != "CustomResourceDefinition":
                    continue
                name = document["metadata"]["name"]
                kube.request_sync(
                    "PATCH",
                    CRD.path(name=name),
                    query={"fieldManager": kube.field_manager, "force": "true"},
                    body=document,
                    content_type="application/apply-patch+yaml",
                )
                names.append(name)
        deadline = time.monotonic() + timeout
        for name in names:
            while not _established(kube, name):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"CRD {name} is not Established after {timeout:.0f}s")
                time.sleep(0.2)
        return names
    finally:
        kube.close()


def _established(kube: Kube, name: str) -> bool:
    crd = kube.request_sync("GET", CRD.path(name=name))
    established = any(
        c.get("type") == "Established" and c.get("status") == "True"
        for c in crd.get("status", {}).get("conditions", [])
    )
    if not established:
        return False
    # Discovery of a fresh CRD can lag Established by a moment: wait until it serves.
    group, version = crd["spec"]["group"], crd["spec"]["versions"][0]["name"]
    plural = crd["spec"]["names"]["plural"]
    try:
        kube.request_sync("GET", f"/apis/{group}/{version}/{plural}", query={"limit": "1"})
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True
