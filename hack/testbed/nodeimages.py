"""Images for the test bed's real node, built without Docker, as OCI archives for
`ctr -n k8s.io images import`.

No image can be pulled from the internet here, so the node's images are made on this
machine from Debian packages and the repository:

- `docker.io/library/python:3.11.16-slim-trixie` is a STAND-IN for the official image
  that the repository's Dockerfile starts FROM: Debian bookworm's Python 3.11 (3.11.2,
  not 3.11.16, and bookworm, not trixie) made with `mmdebstrap --variant=essential`,
  with pip and `useradd`, no EXTERNALLY-MANAGED marker, `python`/`pip` on PATH and
  the official image's PATH, LANG and CMD. It is imported into a private buildah
  storage under that exact name, so the Dockerfile builds unchanged.
- `ghcr.io/berth-dev/berth:<version>` (`berth.constants.DEFAULT_OPERATOR_IMAGE`) is
  Berth's image built from the repository's Dockerfile by `buildah bud` (chroot
  isolation) on top of that stand-in base: the real Dockerfile, a substitute base.
- `docker.io/library/registry:2.8.3` (`berth.constants.DEFAULT_REGISTRY_IMAGE`) is a
  STAND-IN for upstream's registry image: Debian's `docker-registry` binary
  (distribution 2.8.2, not 2.8.3) as `/bin/registry`, the glibc files `ldd` lists and
  upstream's default config at /etc/docker/registry/config.yml; no shell, no
  entrypoint script (ENTRYPOINT `/bin/registry`, CMD `serve <config>`).
- `registry.k8s.io/pause:3.10` (containerd 2's sandbox image) is a STAND-IN for
  Kubernetes' pause: the small Go program in hack/testbin/pause, statically linked.
- `localhost/berth-test/busybox:1.35` is Debian's `busybox-static` with its applet
  links, CMD `sh`, for test Pods (DNS lookups, wget, sleep loops).

Every archive is an OCI image layout in a tar whose index entry carries the full image
name as `io.containerd.image.name`, which is the name `ctr images import` gives it.

Each image lives in `${XDG_CACHE_HOME:-~/.cache}/berth/images/<image>-<key>/` (or under
`$BERTH_IMAGES_CACHE`), where the key hashes everything that goes into the image; a
`.complete` marker holding the key makes a second call with nothing changed a lookup.
Older versions of the same image are removed when a new one is complete. buildah's
storage is kept in `buildah/` there, with its own storage.conf, registries.conf and
signature policy, so the machine's container configuration is neither used nor changed.

`python -m testbed.nodeimages` builds what is missing and prints name, archive and size.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from berth.constants import DEFAULT_OPERATOR_IMAGE, DEFAULT_REGISTRY_IMAGE
from testbed.procs import locked
from testbed.testbin import REPO_ROOT, ensure_built

PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
BUSYBOX_IMAGE = "localhost/berth-test/busybox:1.35"

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
IMAGE_NAME_ANNOTATION = "io.containerd.image.name"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"

# Part of every key: bump it when the way archives are written changes.
_FORMAT = "nodeimages/1"
_ARCHIVE = "image.tar"
_MARKER = ".complete"
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The official python image puts /usr/local/bin first, twice.
_PYTHON_PATH = "/usr/local/bin:" + _PATH
_STAND_IN_LABEL = "dev.berth.testbed.stand-in"
_DEBIAN_SUITE = "bookworm"
_DEBIAN_PACKAGES = ("python3.11", "python3-minimal", "python3-pip", "passwd", "ca-certificates")
# Debian's pip checks certificates against the system bundle; during the build's RUN steps
# the machine's bundle is bind-mounted over the image's (PyPI may be reached through an
# egress proxy with its own CA). Nothing of it stays in the image.
_IMAGE_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
_HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

# upstream's cmd/registry/config-example.yml, which its image ships as the default
_REGISTRY_CONFIG = """\
version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
"""
_REGISTRY_CONFIG_PATH = "/etc/docker/registry/config.yml"


class ImageBuildError(RuntimeError):
    pass


@dataclass(frozen=True)
class NodeImage:
    """An image for the node: its full name and the OCI archive that imports as it."""

    name: str
    archive: Path
    # a hash of everything that went into the image (the cache folder's suffix)
    key: str
    # True where the image only stands in for the upstream image of that name
    stand_in: bool = False

    @property
    def size(self) -> int:
        return self.archive.stat().st_size


def cache_root() -> Path:
    override = os.environ.get("BERTH_IMAGES_CACHE")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "berth" / "images"


def ensure_images(testbin: Path | None = None) -> list[NodeImage]:
    """Builds the images that are missing from the cache; returns all of them.

    In order: the stand-in python base (which the node need not import), Berth's image,
    the registry, pause and busybox. The pause binary comes from the test bed's binaries
    (`testbin`, by default testbed.testbin.ensure_built()).
    """
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with locked(root / ".lock"):
        builder = _Builder(root)
        base = builder.base()
        return [
            base,
            builder.berth(base),
            builder.registry(),
            builder.pause(testbin or ensure_built()),
            builder.busybox(),
        ]


# --- helpers ---------------------------------------------------------------------------


def _log(message: str) -> None:
    print(f"[images] {message}", file=sys.stderr, flush=True)


def _require(tool: str, package: str) -> str:
    found = shutil.which(tool)
    if found is None:
        raise ImageBuildError(
            f"{tool} not found: install the Debian package {package} "
            "(hack/install-system-deps.sh installs what is missing)"
        )
    return found


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _key(*parts: object) -> str:
    """A stable hash of JSON-able parts."""
    blob = json.dumps([_FORMAT, *parts], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _run(argv: Sequence[str], log: Path, *, env: dict[str, str] | None = None) -> str:
    """Runs argv with its stderr (and stdout) appended to `log`; returns stdout."""
    with log.open("a") as sink:
        sink.write(f"$ {' '.join(argv)}\n")
        sink.flush()
        result = subprocess.run(
            list(argv), stdout=subprocess.PIPE, stderr=sink, text=True, env=env, check=False
        )
        sink.write(result.stdout)
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise ImageBuildError(
            f"{Path(argv[0]).name} failed (exit {result.returncode}); log {log}:\n{tail}"
        )
    return result.stdout


def _goarch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)


def _created() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _canonical(document: object) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


# --- layers and OCI archives ----------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    """A file in a layer: a directory, a regular file (data) or a symlink (target)."""

    path: str
    mode: int = 0o755
    data: bytes | None = None
    target: str | None = None


def _dirs(*paths: str, mode: int = 0o755) -> list[_Entry]:
    return [_Entry(path, mode) for path in paths]


def _layer_tar(entries: Sequence[_Entry]) -> bytes:
    """An uncompressed, reproducible tar of entries (parents made as needed)."""
    wanted: dict[str, _Entry] = {}
    for entry in entries:
        parts = PurePosixPath(entry.path.strip("/")).parts
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            wanted.setdefault(parent, _Entry(parent))
        wanted["/".join(parts)] = entry
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(wanted):
            entry = wanted[path]
            info = tarfile.TarInfo(path)
            info.mtime = 0
            info.mode = entry.mode
            if entry.target is not None:
                info.type = tarfile.SYMTYPE
                info.linkname = entry.target
                info.mode = 0o777
                tar.addfile(info)
            elif entry.data is not None:
                info.size = len(entry.data)
                tar.addfile(info, io.BytesIO(entry.data))
            else:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
    return buffer.getvalue()


@dataclass(frozen=True)
class _Layer:
    """A gzip'd layer blob on disk."""

    path: Path
    digest: str  # sha256:... of the gzip'd blob
    diff_id: str  # sha256:... of the tar
    size: int


def _gzip_layer(tar_stream: io.BufferedIOBase | io.BytesIO, destination: Path) -> _Layer:
    diff = hashlib.sha256()
    with (
        destination.open("wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as compressed,
    ):
        while chunk := tar_stream.read(1 << 20):
            diff.update(chunk)
            compressed.write(chunk)
    digest = "sha256:" + _sha256_file(destination)
    return _Layer(destination, digest, "sha256:" + diff.hexdigest(), destination.stat().st_size)


def _image_config(
    layers: Sequence[_Layer], config: dict[str, object], note: str, created: str | None = None
) -> bytes:
    created = created or _created()
    return _canonical(
        {
            "architecture": _goarch(),
            "os": "linux",
            "created": created,
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
            "history": [{"created": created, "created_by": note} for _ in layers],
        }
    )


def _write_oci_archive(
    archive: Path, name: str, layers: Sequence[_Layer], config_json: bytes
) -> None:
    """An OCI image layout, in a tar, of one image named `name`."""
    config_digest = "sha256:" + hashlib.sha256(config_json).hexdigest()
    manifest = _canonical(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config_json)},
            "layers": [
                {"mediaType": OCI_LAYER_GZIP, "digest": layer.digest, "size": layer.size}
                for layer in layers
            ],
        }
    )
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    descriptor: dict[str, object] = {
        "mediaType": OCI_MANIFEST,
        "digest": manifest_digest,
        "size": len(manifest),
        "platform": {"architecture": _goarch(), "os": "linux"},
    }
    blobs: dict[str, bytes | Path] = {config_digest: config_json, manifest_digest: manifest}
    for layer in layers:
        blobs[layer.digest] = layer.path
    _tar_layout(archive, name, descriptor, blobs)


def _tar_layout(
    archive: Path, name: str, descriptor: dict[str, object], blobs: dict[str, bytes | Path]
) -> None:
    annotations = {IMAGE_NAME_ANNOTATION: name, REF_NAME_ANNOTATION: name.rpartition(":")[2]}
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{**descriptor, "annotations": annotations}],
    }
    files: list[tuple[str, bytes | Path]] = [
        ("oci-layout", _canonical({"imageLayoutVersion": "1.0.0"})),
        ("index.json", _canonical(index)),
    ]
    files += [(f"blobs/sha256/{d.removeprefix('sha256:')}", blob) for d, blob in blobs.items()]
    partial = archive.with_suffix(".partial")
    with tarfile.open(partial, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for path, blob in files:
            info = tarfile.TarInfo(path)
            info.mode, info.mtime = 0o644, 0
            if isinstance(blob, Path):
                info.size = blob.stat().st_size
                with blob.open("rb") as handle:
                    tar.addfile(info, handle)
            else:
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
    partial.rename(archive)


def _entries_image(
    folder: Path,
    name: str,
    entries: Sequence[_Entry],
    config: dict[str, object],
    note: str,
    created: str | None = None,
) -> None:
    layer = _gzip_layer(io.BytesIO(_layer_tar(entries)), folder / "layer.tar.gz")
    image_config = _image_config([layer], config, note, created)
    _write_oci_archive(folder / _ARCHIVE, name, [layer], image_config)
    layer.path.unlink()


# --- the Dockerfile's base and its build context ---------------------------------------


def dockerfile_base(dockerfile: Path) -> str:
    """The one external image the Dockerfile's FROM lines name, fully qualified."""
    stages: set[str] = set()
    bases: set[str] = set()
    for line in dockerfile.read_text().splitlines():
        words = line.split()
        if len(words) >= 2 and words[0].upper() == "FROM":
            image = next(w for w in words[1:] if not w.startswith("--"))
            if image.lower() not in stages:
                bases.add(image)
            if len(words) >= 4 and words[-2].upper() == "AS":
                stages.add(words[-1].lower())
    if len(bases) != 1:
        raise ImageBuildError(f"{dockerfile}: expected one base image, found {sorted(bases)}")
    return normalize_name(bases.pop())


def normalize_name(reference: str) -> str:
    """Docker's normalisation: `python:3` -> `docker.io/library/python:3`."""
    first, _, rest = reference.partition("/")
    if not rest or ("." not in first and ":" not in first and first != "localhost"):
        reference = "docker.io/" + reference
        if not rest:
            reference = "docker.io/library/" + first
    if ":" not in reference.rpartition("/")[2] and "@" not in reference:
        reference += ":latest"
    return reference


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as moby's patternmatcher compiles it."""
    out = "^"
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                out += "(.*/)?"
                i += 1
            else:
                out += ".*"
            continue
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out += re.escape(char)
            else:
                body = pattern[i + 1 : end]
                out += "[" + ("^" + body[1:] if body.startswith("!") else body) + "]"
                i = end
        elif char == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        else:
            out += re.escape(char)
        i += 1
    return re.compile(out + "$")


@dataclass(frozen=True)
class _IgnoreRule:
    regex: re.Pattern[str]
    negated: bool
    literal_prefix: tuple[str, ...]  # the leading path components without wildcards


def _ignore_rules(dockerignore: Path) -> list[_IgnoreRule]:
    rules: list[_IgnoreRule] = []
    if not dockerignore.is_file():
        return rules
    for raw in dockerignore.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
        prefix: list[str] = []
        for part in pattern.split("/"):
            if any(c in part for c in "*?[\\"):
                break
            prefix.append(part)
        rules.append(_IgnoreRule(_ignore_regex(pattern), negated, tuple(prefix)))
    return rules


def _excluded(path: str, rules: Sequence[_IgnoreRule]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[:depth]) for depth in range(1, len(parts) + 1)]
    excluded = False
    for rule in rules:
        if any(rule.regex.match(candidate) for candidate in candidates):
            excluded = not rule.negated
    return excluded


def _may_reinclude(directory: str, rules: Sequence[_IgnoreRule]) -> bool:
    parts = tuple(directory.split("/"))
    for rule in rules:
        if not rule.negated:
            continue
        shared = min(len(parts), len(rule.literal_prefix))
        if parts[:shared] == rule.literal_prefix[:shared]:
            return True
    return False


def context_files(context: Path) -> list[str]:
    """The files (relative POSIX paths) that .dockerignore admits into the build context."""
    rules = _ignore_rules(context / ".dockerignore")
    admitted: list[str] = []
    for current, dirnames, filenames in os.walk(context):
        relative = Path(current).relative_to(context).as_posix()
        prefix = "" if relative == "." else relative + "/"
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not _excluded(prefix + d, rules) or _may_reinclude(prefix + d, rules)
        )
        admitted += [prefix + f for f in sorted(filenames) if not _excluded(prefix + f, rules)]
    return sorted(admitted)


def _context_digest(context: Path) -> str:
    digest = hashlib.sha256()
    for relative in context_files(context):
        path = context / relative
        digest.update(relative.encode() + b"\0")
        if path.is_symlink():
            digest.update(b"link:" + os.readlink(path).encode())
        else:
            digest.update(b"x" if os.access(path, os.X_OK) else b"-")
            digest.update(_sha256_file(path).encode())
        digest.update(b"\0")
    return digest.hexdigest()


# --- Debian mirrors ------------------------------------------------------------------


def _apt_sources() -> list[tuple[str, list[str]]]:
    """(URI, suites) of this machine's apt sources, one-line and deb822 alike."""
    found: list[tuple[str, list[str]]] = []
    apt = Path("/etc/apt")
    lists = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]
    for path in lists:
        if not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb":
                found.append((words[1], [words[2]]))
    for path in sorted((apt / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text(errors="replace")):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                field, _, value = line.partition(":")
                fields[field.strip().lower()] = value.strip()
            if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no":
                for uri in fields.get("uris", "").split():
                    found.append((uri, fields.get("suites", "").split()))
    return found


def _debian_mirrors(suite: str) -> list[str]:
    """mmdebstrap's mirror lines: the machine's mirrors for the suite, its updates and
    security, or deb.debian.org where the machine names none."""
    sources = _apt_sources()

    def mirror(wanted: str, default: str) -> str:
        return next((uri for uri, suites in sources if wanted in suites), default).rstrip("/")

    main = mirror(suite, "http://deb.debian.org/debian")
    security = mirror(f"{suite}-security", "http://deb.debian.org/debian-security")
    return [
        f"deb {main} {suite} main",
        f"deb {main} {suite}-updates main",
        f"deb {security} {suite}-security main",
    ]


# --- the builder -----------------------------------------------------------------------


class _Builder:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.storage = root / "buildah"

    # The cache: one folder per image and key; older folders of that image are removed.
    def _cached(
        self,
        slug: str,
        name: str,
        key: str,
        build: Callable[[Path], None],
        *,
        stand_in: bool = False,
    ) -> NodeImage:
        folder = self.root / f"{slug}-{key[:16]}"
        archive = folder / _ARCHIVE
        marker = folder / _MARKER
        if marker.is_file() and marker.read_text() == key and archive.is_file():
            return NodeImage(name, archive, key, stand_in)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        _log(f"building {name}")
        started = time.monotonic()
        build(folder)
        if not archive.is_file():
            raise ImageBuildError(f"building {name} left no archive in {folder}")
        marker.write_text(key)
        elapsed = time.monotonic() - started
        size = archive.stat().st_size
        _log(f"built {name} in {elapsed:.1f} s ({size / 1e6:.1f} MB)")
        for stale in self.root.glob(f"{slug}-*"):
            if stale != folder and stale.is_dir():
                _log(f"removing stale {stale.name}")
                shutil.rmtree(stale, ignore_errors=True)
        return NodeImage(name, archive, key, stand_in)

    # -- 1. the stand-in python base ----------------------------------------------------

    def base(self) -> NodeImage:
        name = dockerfile_base(REPO_ROOT / "Dockerfile")
        repository, _, tag = name.rpartition(":")
        if repository != "docker.io/library/python" or not tag.startswith("3.11"):
            raise ImageBuildError(
                f"the Dockerfile's base is {name}; the stand-in provides Debian "
                f"{_DEBIAN_SUITE}'s Python 3.11 for docker.io/library/python:3.11.*"
            )
        argv = [
            "mmdebstrap",
            "--variant=essential",
            "--include=" + ",".join(_DEBIAN_PACKAGES),
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/info/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-include=/usr/share/doc/*/copyright",
            # no device nodes in the layer: the runtime provides /dev
            "--skip=output/dev",
            # the official image has no EXTERNALLY-MANAGED marker: pip installs as root
            '--customize-hook=rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED',
            # `python` resolves as in the official image (python3-pip brings `pip`)
            '--customize-hook=ln -sf python3 "$1/usr/bin/python"',
            '--customize-hook=test -x "$1/usr/bin/pip" && test -x "$1/usr/sbin/useradd"',
            _DEBIAN_SUITE,
            "OUTPUT",
            *_debian_mirrors(_DEBIAN_SUITE),
        ]
        config: dict[str, object] = {
            "Env": [f"PATH={_PYTHON_PATH}", "LANG=C.UTF-8"],
            "Cmd": ["python3"],
            "Labels": {_STAND_IN_LABEL: f"Debian {_DEBIAN_SUITE} python3.11 for {name}"},
        }

        def build(folder: Path) -> None:
            _require("mmdebstrap", "mmdebstrap")
            rootfs = folder / "rootfs.tar"
            log = folder / "build.log"
            _log(f"mmdebstrap {_DEBIAN_SUITE} ({', '.join(_DEBIAN_PACKAGES)})")
            command = [rootfs.as_posix() if word == "OUTPUT" else word for word in argv]
            _run(command, log)
            with rootfs.open("rb") as stream:
                layer = _gzip_layer(stream, folder / "layer.tar.gz")
            rootfs.unlink()
            note = "mmdebstrap " + " ".join(argv[1:])
            _write_oci_archive(
                folder / _ARCHIVE, name, [layer], _image_config([layer], config, note)
            )
            layer.path.unlink()

        return self._cached("python-base", name, _key(argv, config), build, stand_in=True)

    # -- 2. Berth's image from the Dockerfile -------------------------------------------

    def _buildah_env(self) -> dict[str, str]:
        """buildah's environment: storage, registries and policy all under the cache."""
        self.storage.mkdir(parents=True, exist_ok=True)
        storage_conf = self.storage / "storage.conf"
        storage_conf.write_text(
            "[storage]\n"
            'driver = "overlay"\n'
            f'graphroot = "{self.storage / "storage"}"\n'
            f'runroot = "{self.storage / "run"}"\n'
        )
        registries_conf = self.storage / "registries.conf"
        # FROM python:... resolves to docker.io/library/python:..., as with Docker; the
        # build never pulls (--pull=never), so this names candidates in local storage.
        registries_conf.write_text(
            'unqualified-search-registries = ["docker.io"]\nshort-name-mode = "permissive"\n'
        )
        tmp = self.storage / "tmp"
        tmp.mkdir(exist_ok=True)
        env = dict(os.environ)
        env.update(
            CONTAINERS_STORAGE_CONF=str(storage_conf),
            CONTAINERS_REGISTRIES_CONF=str(registries_conf),
            TMPDIR=str(tmp),
            BUILDAH_ISOLATION="chroot",
        )
        return env

    def _policy(self) -> Path:
        policy = self.storage / "policy.json"
        policy.write_text(_canonical({"default": [{"type": "insecureAcceptAnything"}]}).decode())
        return policy

    def berth(self, base: NodeImage) -> NodeImage:
        name = DEFAULT_OPERATOR_IMAGE
        dockerfile = REPO_ROOT / "Dockerfile"
        ignore = REPO_ROOT / ".dockerignore"
        options = [
            "--isolation=chroot",
            "--network=host",
            "--pull=never",
            "--format=oci",
        ]
        key = _key(
            name,
            options,
            base.key,
            _sha256_file(dockerfile),
            _sha256_file(ignore) if ignore.is_file() else None,
            _context_digest(REPO_ROOT),
            _IMAGE_CA_BUNDLE,
        )

        def build(folder: Path) -> None:
            buildah = _require("buildah", "buildah")
            env = self._buildah_env()
            policy = self._policy()
            log = folder / "build.log"

            def run(*args: str) -> str:
                return _run([buildah, *args], log, env=env)

            _log(f"importing the stand-in {base.name} into buildah's storage")
            image_id = (
                run(
                    "pull", "--quiet", f"--signature-policy={policy}", f"oci-archive:{base.archive}"
                )
                .strip()
                .splitlines()[-1]
            )
            run("tag", image_id, base.name)
            volumes = []
            if _HOST_CA_BUNDLE.is_file():
                volumes = [f"--volume={_HOST_CA_BUNDLE}:{_IMAGE_CA_BUNDLE}:ro"]
            _log("buildah bud (pip wheel from PyPI, then pip install)")
            try:
                run(
                    "bud",
                    *options,
                    *volumes,
                    f"--signature-policy={policy}",
                    f"--file={dockerfile}",
                    f"--tag={name}",
                    str(REPO_ROOT),
                )
            finally:
                # A failed build leaves its working containers; the storage is ours alone.
                run("rm", "--all")
                _unmount_leftovers(self.storage)
            layout = folder / "layout"
            run(
                "push",
                "--quiet",
                f"--signature-policy={policy}",
                "--format=oci",
                name,
                f"oci:{layout}:{name.rpartition(':')[2]}",
            )
            _retag_layout(layout, folder / _ARCHIVE, name)
            shutil.rmtree(layout)
            # the previous build of the name, now untagged
            run("rmi", "--prune")

        return self._cached("berth", name, key, build)

    # -- 3. the registry ----------------------------------------------------------------

    def registry(self) -> NodeImage:
        name = DEFAULT_REGISTRY_IMAGE
        binary = Path(os.environ.get("BERTH_REGISTRY_BINARY", "/usr/bin/docker-registry"))
        if not binary.is_file():
            raise ImageBuildError(
                f"{binary} not found: install the Debian package docker-registry "
                "(hack/install-system-deps.sh installs what is missing)"
            )
        libraries = _shared_libraries(binary)
        config: dict[str, object] = {
            "Env": [f"PATH={_PATH}"],
            "Entrypoint": ["/bin/registry"],
            "Cmd": ["serve", _REGISTRY_CONFIG_PATH],
            "ExposedPorts": {"5000/tcp": {}},
            "Volumes": {"/var/lib/registry": {}},
            "Labels": {_STAND_IN_LABEL: f"Debian's docker-registry ({binary}) for {name}"},
        }
        key = _key(
            name,
            _sha256_file(binary),
            {path: _sha256_file(Path(path).resolve()) for path in libraries},
            _REGISTRY_CONFIG,
            config,
        )

        def build(folder: Path) -> None:
            entries = [
                _Entry("bin/registry", 0o755, binary.read_bytes()),
                *[
                    _Entry(path.lstrip("/"), 0o755, Path(path).resolve().read_bytes())
                    for path in libraries
                ],
                _Entry(_REGISTRY_CONFIG_PATH.lstrip("/"), 0o644, _REGISTRY_CONFIG.encode()),
                *_dirs("var/lib/registry"),
                *_dirs("tmp", mode=0o1777),
            ]
            _entries_image(folder, name, entries, config, f"{binary} as /bin/registry")

        return self._cached("registry", name, key, build, stand_in=True)

    # -- 4. pause -----------------------------------------------------------------------

    def pause(self, testbin: Path) -> NodeImage:
        """From the pause binary hack/testbin/build.sh built into `testbin`."""
        name = PAUSE_IMAGE
        config: dict[str, object] = {
            "Entrypoint": ["/pause"],
            "User": "65535:65535",
            "Labels": {_STAND_IN_LABEL: f"hack/testbin/pause for {name}"},
        }
        binary = testbin / "pause"
        if not binary.is_file():
            raise ImageBuildError(f"no pause binary in {testbin}: run hack/testbin/build.sh")
        key = _key(name, config, "binary", _sha256_file(binary))

        def build(folder: Path) -> None:
            entries = [_Entry("pause", 0o755, binary.read_bytes())]
            _entries_image(folder, name, entries, config, "hack/testbin/pause")

        return self._cached("pause", name, key, build, stand_in=True)

    # -- 5. busybox ---------------------------------------------------------------------

    def busybox(self) -> NodeImage:
        name = BUSYBOX_IMAGE
        binary = Path("/bin/busybox")
        if not binary.is_file():
            raise ImageBuildError(
                f"{binary} not found: install the Debian package busybox-static "
                "(hack/install-system-deps.sh installs what is missing)"
            )
        config: dict[str, object] = {"Env": [f"PATH={_PATH}"], "Cmd": ["sh"]}
        key = _key(name, config, _sha256_file(binary))

        def build(folder: Path) -> None:
            entries = _busybox_entries(binary, folder / "build.log")
            _entries_image(folder, name, entries, config, "Debian busybox-static")

        return self._cached("busybox", name, key, build)


_PASSWD = """\
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/home:/bin/false
"""
_GROUP = """\
root:x:0:
nogroup:x:65534:
"""


def _busybox_entries(binary: Path, log: Path) -> list[_Entry]:
    if _shared_libraries(binary):
        raise ImageBuildError(f"{binary} is not static: install busybox-static")
    applets = _run([str(binary), "--list-full"], log).split()
    return [
        _Entry("bin/busybox", 0o755, binary.read_bytes()),
        *[_Entry(a, target="/bin/busybox") for a in applets if a != "bin/busybox"],
        _Entry("etc/passwd", 0o644, _PASSWD.encode()),
        _Entry("etc/group", 0o644, _GROUP.encode()),
        *_dirs("root", mode=0o700),
        *_dirs("tmp", "var/tmp", mode=0o1777),
        *_dirs("home", "usr/bin", "usr/sbin", "sbin"),
    ]


def workload_image(
    folder: Path, name: str, files: dict[str, str], *, created: str | None = None
) -> Path:
    """An OCI archive of a runnable image no node has yet: the test image's busybox plus
    `files` (path in the image -> content), named `name`, created at `created` (RFC 3339;
    now by default). Tests push it and make a Pod run it, so that the kubelet must pull
    it."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = _busybox_entries(Path("/bin/busybox"), folder / "build.log")
    entries += [_Entry(path.lstrip("/"), 0o644, text.encode()) for path, text in files.items()]
    config: dict[str, object] = {"Env": [f"PATH={_PATH}"], "Cmd": ["sh"]}
    _entries_image(folder, name, entries, config, "a test workload", created)
    return folder / _ARCHIVE


def _shared_libraries(binary: Path) -> list[str]:
    """The absolute paths `ldd` lists for a dynamically linked binary."""
    result = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return []
    paths: list[str] = []
    for line in result.stdout.splitlines():
        words = line.split()
        if "=>" in words:
            target = words[words.index("=>") + 1]
            if target.startswith("/"):
                paths.append(target)
        elif words and words[0].startswith("/"):
            paths.append(words[0])
    return sorted(set(paths))


def _retag_layout(layout: Path, archive: Path, name: str) -> None:
    """An OCI layout from `buildah push oci:` as an archive whose index names `name`."""
    index = json.loads((layout / "index.json").read_text())
    manifests = index.get("manifests", [])
    if len(manifests) != 1:
        raise ImageBuildError(f"{layout}: expected one manifest, found {len(manifests)}")
    descriptor = {k: v for k, v in manifests[0].items() if k != "annotations"}
    descriptor.setdefault("platform", {"architecture": _goarch(), "os": "linux"})
    blobs: dict[str, bytes | Path] = {
        "sha256:" + path.name: path for path in sorted((layout / "blobs" / "sha256").iterdir())
    }
    _tar_layout(archive, name, descriptor, blobs)


def _unmount_leftovers(storage: Path) -> None:
    """Unmounts whatever buildah left mounted under its storage (it should leave none)."""
    prefix = str(storage.resolve()) + "/"
    mounts = [
        line.split()[1]
        for line in Path("/proc/self/mounts").read_text().splitlines()
        if line.split()[1].startswith(prefix)
    ]
    for mountpoint in sorted(mounts, key=len, reverse=True):
        _log(f"unmounting {mountpoint}, which buildah left behind")
        subprocess.run(["umount", mountpoint], check=False)


def main() -> int:
    try:
        images = ensure_images()
    except ImageBuildError as error:
        print(f"[images] {error}", file=sys.stderr)
        return 1
    for image in images:
        note = "  (stand-in)" if image.stand_in else ""
        print(f"{image.name}  {image.archive}  {image.size / 1e6:.1f} MB{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
