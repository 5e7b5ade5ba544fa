"""The files the node agent keeps on a node, and only those.

Other tools share these places (/etc/hosts, containerd's and CRI-O's certs.d), so every
write is marked with the owner (`<registry-namespace>/<registry-name>`), nothing
unmarked is ever rewritten or deleted, and removing an owner removes exactly its own.

    /etc/hosts                         lines ending in `# berth <owner>`, edited in place
                                       (in a Pod it is a bind-mounted file: a rename
                                       would not reach the node's file)
    <containerd certs.d>/<host>/       hosts.toml and ca.crt, with a `.berth-owner` file
    <CRI-O certs.d>/<host>/ca.crt      the same marker beside it

Everything here is synchronous and pure but for the files it is handed: the agent's
loop decides what to write, this module writes it.
"""

from __future__ import annotations

import os
import tempfile
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from berth.resources.nodeagent import HostTrust

HOSTS_MARK: Final = "# berth"
OWNER_FILE: Final = ".berth-owner"


class NotOurs(Exception):
    """A file or folder the agent would write exists and was made by someone else."""


# -- /etc/hosts ------------------------------------------------------------------------


def hosts_text(current: str, owner: str, addresses: Mapping[str, str | None]) -> str:
    """/etc/hosts with `owner`'s lines made to say `addresses` (name -> IP). A name whose
    address is None keeps the line it had (the last good value when a lookup failed);
    lines of other owners and of no owner stay as they are, in place."""
    mark = f"{HOSTS_MARK} {owner}"
    previous: dict[str, str] = {}
    kept: list[str] = []
    for line in current.splitlines():
        if line.rstrip().endswith(mark):
            address, *names = line[: -len(mark)].split()
            previous.update(dict.fromkeys(names, address))
        else:
            kept.append(line)
    wanted = {
        name: address or previous[name]
        for name, address in addresses.items()
        if address or name in previous
    }
    by_address: dict[str, list[str]] = {}
    for name, address in sorted(wanted.items()):
        by_address.setdefault(address, []).append(name)
    ours = [f"{address} {' '.join(names)} {mark}" for address, names in by_address.items()]
    text = "".join(f"{line}\n" for line in [*kept, *ours])
    if not ours and current and not current.endswith("\n"):
        return text[:-1]  # as it was: a file without a final newline keeps it so
    return text


def hosts_owners(text: str) -> set[str]:
    """The owners of the marked lines in a hosts file."""
    owners = set()
    for line in text.splitlines():
        _, mark, owner = line.rstrip().rpartition(f" {HOSTS_MARK} ")
        if mark and owner and " " not in owner:
            owners.add(owner)
    return owners


def write_hosts(path: Path, owner: str, addresses: Mapping[str, str | None]) -> bool:
    """Apply `hosts_text` to the file at `path` in place; False when nothing changed."""
    current = path.read_text()
    wanted = hosts_text(current, owner, addresses)
    if wanted == current:
        return False
    write_text_in_place(path, wanted)
    return True


def write_text_in_place(path: Path, text: str) -> None:
    """Rewrite a file in place (same inode): in a Pod the node's /etc/hosts is a
    bind-mounted file, which a rename would not reach."""
    with path.open("r+") as file:
        file.write(text)
        file.truncate()


# -- certs.d ---------------------------------------------------------------------------


def containerd_hosts_toml(trust: HostTrust) -> str:
    """The host's hosts.toml: its own server, verified with the ca.crt beside it (a
    relative `ca` is read from the host's folder), or plain HTTP with no CA."""
    scheme = "https" if trust.ca_pem else "http"
    upstream = f"{scheme}://{trust.host}"
    lines = [f'server = "{upstream}"', "", f'[host."{upstream}"]',
             '  capabilities = ["pull", "resolve"]']  # fmt: skip
    if trust.ca_pem:
        lines.append('  ca = "ca.crt"')
    return "".join(f"{line}\n" for line in lines)


def _folder_name(host: str) -> str:
    """containerd and CRI-O both name a host's folder `host:port` (`_default` aside)."""
    if "/" in host or host in ("", ".", "..", "_default"):
        raise ValueError(f"not a registry host: {host!r}")
    return host


def _atomic_write(path: Path, text: str) -> bool:
    """Write `text` to `path` by rename (readers never see half a file); False when it
    already holds `text`."""
    if path.is_file() and path.read_text() == text:
        return False
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w") as file:
            file.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return True


def _claim(folder: Path, owner: str) -> None:
    """Make `folder` ours, or find it ours already; NotOurs when someone else's."""
    marker = folder / OWNER_FILE
    if folder.exists():
        if not marker.is_file() or marker.read_text().strip() != owner:
            raise NotOurs(f"{folder} exists and was not made by Berth for {owner}")
        return
    folder.mkdir(parents=True)
    _atomic_write(marker, f"{owner}\n")


def write_trust(root: Path, owner: str, trust: HostTrust, *, containerd: bool) -> bool:
    """The host's folder under `root` (containerd's or CRI-O's certs.d): ca.crt, and for
    containerd hosts.toml. The CA is written before hosts.toml names it. True when a
    file changed; NotOurs when the folder belongs to someone else."""
    folder = root / _folder_name(trust.host)
    _claim(folder, owner)
    changed = False
    if trust.ca_pem:
        changed |= _atomic_write(folder / "ca.crt", trust.ca_pem)
    if containerd:
        changed |= _atomic_write(folder / "hosts.toml", containerd_hosts_toml(trust))
    return changed


def owners_in(root: Path) -> dict[str, list[str]]:
    """The host folders under `root` the agent made, by owner."""
    found: dict[str, list[str]] = {}
    if root.is_dir():
        for folder in sorted(root.iterdir()):
            marker = folder / OWNER_FILE
            if folder.is_dir() and marker.is_file():
                found.setdefault(marker.read_text().strip(), []).append(folder.name)
    return found


def remove_host(root: Path, owner: str, host: str) -> bool:
    """Delete one host folder `owner` made (only the files it wrote; the folder too when
    nothing else is left in it). False when it is not there or not `owner`'s."""
    folder = root / _folder_name(host)
    marker = folder / OWNER_FILE
    if not marker.is_file() or marker.read_text().strip() != owner:
        return False
    for name in ("hosts.toml", "ca.crt", OWNER_FILE):
        (folder / name).unlink(missing_ok=True)
    if not any(folder.iterdir()):
        folder.rmdir()
    return True


def remove_owner(root: Path, owner: str) -> list[str]:
    """Delete every host folder under `root` that `owner` made. Returns the hosts."""
    hosts = owners_in(root).get(owner, [])
    return [host for host in hosts if remove_host(root, owner, host)]


# -- containerd's configuration --------------------------------------------------------

# containerd 2 (config version 3 and later): the CRI images plugin.
_CRI_IMAGES: Final = ("plugins", "io.containerd.cri.v1.images", "registry")
# containerd 1.x (config version 2): the CRI plugin.
_CRI_V1: Final = ("plugins", "io.containerd.grpc.v1.cri", "registry")
# containerd 2 reads these when config_path is unset and no deprecated mirrors or
# configs are (internal/cri/config/config.go, v2.4.2).
CONTAINERD_DEFAULT_DIRS: Final = ("/etc/containerd/certs.d", "/etc/docker/certs.d")


def _section(config: dict[str, object], keys: tuple[str, ...]) -> dict[str, object] | None:
    value: object = config
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, dict) else None


def containerd_registry_dirs(config_toml: str) -> list[str] | None:
    """The folders containerd reads hosts.toml from (`config_path`, `:`-separated), or
    None when it reads none: containerd 1.x with config_path unset, or the deprecated
    `mirrors`/`configs` in use. Then the agent reports it (a condition reason) rather
    than restarting the runtime with another configuration."""
    config = tomllib.loads(config_toml)
    if "io.containerd.grpc.v1.cri" in (config.get("plugins") or {}) and (
        "io.containerd.cri.v1.images" not in (config.get("plugins") or {})
    ):
        registry = _section(config, _CRI_V1) or {}
        path = registry.get("config_path")
        return [d for d in str(path).split(":") if d] if path else None
    registry = _section(config, _CRI_IMAGES) or {}
    path = registry.get("config_path")
    if path:
        return [d for d in str(path).split(":") if d]
    if registry.get("mirrors") or registry.get("configs"):
        return None
    return list(CONTAINERD_DEFAULT_DIRS)
