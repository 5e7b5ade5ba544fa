"""A local-volume provisioner for the test bed: `python -m testbed.provisioner`.

It serves one StorageClass (volumeBindingMode WaitForFirstConsumer) the way external
provisioners do: a claim of that class that the scheduler has placed on a node
(`volume.kubernetes.io/selected-node`) gets a folder under `--root` and a `local`
PersistentVolume bound to it (claimRef), pinned to that node; a released volume of ours
loses its folder and its PersistentVolume. The node is this machine, so the folder is real
storage that the kubelet bind-mounts into the Pod.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import signal
import threading
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

SELECTED_NODE = "volume.kubernetes.io/selected-node"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"

log = logging.getLogger("testbed.provisioner")


def volume_name(claim: dict[str, Any]) -> str:
    return f"pvc-{claim['metadata']['uid']}"


def persistent_volume(
    claim: dict[str, Any], *, path: Path, storage_class: str, provisioner: str
) -> dict[str, Any]:
    meta, spec = claim["metadata"], claim["spec"]
    node = meta["annotations"][SELECTED_NODE]
    requests = spec.get("resources", {}).get("requests", {})
    hostname = {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": volume_name(claim), "annotations": {PROVISIONED_BY: provisioner}},
        "spec": {
            "capacity": {"storage": requests.get("storage", "1Gi")},
            "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": storage_class,
            "volumeMode": spec.get("volumeMode") or "Filesystem",
            "local": {"path": str(path)},
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
            },
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [hostname]}]}},
        },
    }


class Provisioner:
    def __init__(self, core: client.CoreV1Api, root: Path, storage_class: str, name: str) -> None:
        self.core = core
        self.root = root
        self.storage_class = storage_class
        self.name = name

    def _items(self, response: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = json.loads(response.data)["items"]
        return items

    def pass_once(self) -> None:
        self._provision()
        self._reclaim()

    def _provision(self) -> None:
        claims = self.core.list_persistent_volume_claim_for_all_namespaces(_preload_content=False)
        for claim in self._items(claims):
            meta, spec = claim["metadata"], claim["spec"]
            if (
                spec.get("storageClassName") != self.storage_class
                or claim.get("status", {}).get("phase") != "Pending"
                or spec.get("volumeName")
                or SELECTED_NODE not in meta.get("annotations", {})
            ):
                continue
            path = self.root / volume_name(claim)
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o777)  # written by Pods of any UID, as hostPath-backed local volumes are
            body = persistent_volume(
                claim, path=path, storage_class=self.storage_class, provisioner=self.name
            )
            try:
                self.core.create_persistent_volume(body)  # type: ignore[arg-type]
            except ApiException as error:
                if error.status != 409:
                    raise
                continue
            log.info("provisioned %s for %s/%s", body["metadata"]["name"], meta["namespace"],
                     meta["name"])  # fmt: skip

    def _reclaim(self) -> None:
        volumes = self.core.list_persistent_volume(_preload_content=False)
        for volume in self._items(volumes):
            meta = volume["metadata"]
            if meta.get("annotations", {}).get(PROVISIONED_BY) != self.name:
                continue
            if volume.get("status", {}).get("phase") not in ("Released", "Failed"):
                continue
            path = Path(volume["spec"]["local"]["path"])
            if path.parent == self.root:  # never anything outside our folder
                shutil.rmtree(path, ignore_errors=True)
            with contextlib.suppress(ApiException):
                self.core.delete_persistent_volume(meta["name"])
            log.info("reclaimed %s", meta["name"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed.provisioner")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--storage-class", required=True)
    parser.add_argument("--provisioner", required=True)
    parser.add_argument("--interval", type=float, default=0.5)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.root.mkdir(parents=True, exist_ok=True)
    api = config.new_client_from_config(args.kubeconfig)  # type: ignore[no-untyped-call]
    provisioner = Provisioner(client.CoreV1Api(api), args.root.resolve(), args.storage_class,
                              args.provisioner)  # fmt: skip
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    log.info("serving StorageClass %s from %s", args.storage_class, args.root)
    while not stop.is_set():
        try:
            provisioner.pass_once()
        except Exception as error:  # the API server may be restarting; try again
            log.warning("pass failed: %s", error)
        stop.wait(args.interval)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
