"""The real node's images (testbed.nodeimages), built or found in the cache.

Each archive is read as `ctr images import` reads it: an OCI layout whose index entry
names the full image name; no container engine is needed.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from berth.constants import DEFAULT_OPERATOR_IMAGE, DEFAULT_REGISTRY_IMAGE
from testbed.nodeimages import (
    BUSYBOX_IMAGE,
    IMAGE_NAME_ANNOTATION,
    PAUSE_IMAGE,
    NodeImage,
    ensure_images,
)

PYTHON_BASE = "docker.io/library/python:3.11.16-slim-trixie"

# A cold build (mmdebstrap, pip wheel from PyPI) takes minutes on a loaded machine.
pytestmark = pytest.mark.timeout(1200)


@pytest.fixture(scope="module")
def node_images() -> dict[str, NodeImage]:
    return {image.name: image for image in ensure_images()}


class Archive:
    """An OCI image layout in a tar, holding one image."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.index = self.json("index.json")
        [self.entry] = self.index["manifests"]
        self.manifest = self.blob_json(self.entry["digest"])
        self.config = self.blob_json(self.manifest["config"]["digest"])

    def read(self, member: str) -> bytes:
        with tarfile.open(self.path) as tar:
            handle = tar.extractfile(member)
            assert handle is not None, member
            return handle.read()

    def size(self, member: str) -> int:
        with tarfile.open(self.path) as tar:
            return tar.getmember(member).size

    def json(self, member: str) -> Any:
        return json.loads(self.read(member))

    def blob(self, digest: str) -> bytes:
        data = self.read(blob_member(digest))
        assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
        return data

    def blob_json(self, digest: str) -> Any:
        return json.loads(self.blob(digest))

    def layer_names(self, index: int = -1) -> set[str]:
        """The paths in one of the image's layers (the last by default)."""
        with tarfile.open(self.path) as tar:
            handle = tar.extractfile(blob_member(self.manifest["layers"][index]["digest"]))
            assert handle is not None
            with tarfile.open(fileobj=handle, mode="r|gz") as layer:
                return {info.name.removeprefix("./") for info in layer}


def blob_member(digest: str) -> str:
    return "blobs/sha256/" + digest.removeprefix("sha256:")


def test_the_five_images_and_nothing_else(node_images: dict[str, NodeImage]) -> None:
    assert set(node_images) == {
        PYTHON_BASE,
        DEFAULT_OPERATOR_IMAGE,
        DEFAULT_REGISTRY_IMAGE,
        PAUSE_IMAGE,
        BUSYBOX_IMAGE,
    }


def test_each_archive_names_its_full_image_name(node_images: dict[str, NodeImage]) -> None:
    for name, image in node_images.items():
        archive = Archive(image.archive)
        assert archive.json("oci-layout") == {"imageLayoutVersion": "1.0.0"}
        assert archive.entry["annotations"][IMAGE_NAME_ANNOTATION] == name
        assert archive.entry["platform"]["os"] == "linux"
        assert archive.config["rootfs"]["diff_ids"]
        assert len(archive.manifest["layers"]) == len(archive.config["rootfs"]["diff_ids"])
        for layer in archive.manifest["layers"]:
            assert archive.size(blob_member(layer["digest"])) == layer["size"]


def test_berth_image_runs_berth_as_user_1000(node_images: dict[str, NodeImage]) -> None:
    archive = Archive(node_images[DEFAULT_OPERATOR_IMAGE].archive)
    config = archive.config["config"]
    assert config["User"] == "1000:0"
    assert config["Entrypoint"] == ["berth"]
    assert config["Cmd"] == ["operator", "--all-namespaces", "--standalone"]
    assert "usr/local/bin/berth" in archive.layer_names()


def test_registry_image_has_registry_on_path(node_images: dict[str, NodeImage]) -> None:
    archive = Archive(node_images[DEFAULT_REGISTRY_IMAGE].archive)
    config = archive.config["config"]
    path = next(e for e in config["Env"] if e.startswith("PATH="))
    assert "/bin" in path.removeprefix("PATH=").split(":")
    names = archive.layer_names()
    assert {"bin/registry", "etc/docker/registry/config.yml"} <= names
    assert "bin/sh" not in names


def test_pause_and_busybox(node_images: dict[str, NodeImage]) -> None:
    pause = Archive(node_images[PAUSE_IMAGE].archive)
    assert pause.config["config"]["Entrypoint"] == ["/pause"]
    assert pause.layer_names() == {"pause"}
    busybox = Archive(node_images[BUSYBOX_IMAGE].archive)
    assert busybox.config["config"]["Cmd"] == ["sh"]
    assert {"bin/busybox", "bin/sh", "bin/sleep", "usr/bin/wget", "usr/bin/nslookup"} <= (
        busybox.layer_names()
    )


def test_a_second_call_finds_them_in_the_cache(node_images: dict[str, NodeImage]) -> None:
    before = {name: image.archive.stat().st_mtime_ns for name, image in node_images.items()}
    started = time.monotonic()
    again = {image.name: image for image in ensure_images()}
    assert time.monotonic() - started < 5
    assert {name: image.archive for name, image in again.items()} == {
        name: image.archive for name, image in node_images.items()
    }
    assert {name: image.archive.stat().st_mtime_ns for name, image in again.items()} == before
