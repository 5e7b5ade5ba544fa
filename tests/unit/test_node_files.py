"""The node agent's files, on a temporary tree: marked /etc/hosts lines, certs.d folders
it owns, and nothing of anyone else's touched."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from berth.node.files import (
    CONTAINERD_DEFAULT_DIRS,
    OWNER_FILE,
    NotOurs,
    containerd_registry_dirs,
    hosts_owners,
    hosts_text,
    owners_in,
    remove_owner,
    write_hosts,
    write_trust,
)
from berth.resources.nodeagent import HostTrust

OWNER = "registry/registry"
HOSTS = "127.0.0.1 localhost\n::1 localhost ip6-localhost\n10.0.0.9 other.example # someone\n"
CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def test_our_lines_follow_the_addresses_and_others_stay_in_place() -> None:
    text = hosts_text(HOSTS, OWNER, {"registry.registry.svc": "10.96.0.10"})
    assert text == HOSTS + "10.96.0.10 registry.registry.svc # berth registry/registry\n"
    moved = hosts_text(text, OWNER, {"registry.registry.svc": "10.96.0.11"})
    assert moved == HOSTS + "10.96.0.11 registry.registry.svc # berth registry/registry\n"
    assert hosts_text(moved, OWNER, {}) == HOSTS


def test_a_failed_lookup_keeps_the_last_good_address() -> None:
    text = hosts_text(HOSTS, OWNER, {"registry.registry.svc": "10.96.0.10"})
    assert hosts_text(text, OWNER, {"registry.registry.svc": None}) == text
    # A name never resolved has no line to keep.
    assert hosts_text(HOSTS, OWNER, {"new.registry.svc": None}) == HOSTS


def test_owners_do_not_touch_each_others_lines() -> None:
    first = hosts_text(HOSTS, "a/one", {"one.a.svc": "10.96.0.1"})
    both = hosts_text(first, "b/two", {"two.b.svc": "10.96.0.2"})
    assert hosts_text(both, "b/two", {}) == first


names = st.from_regex(r"[a-z]{1,8}\.[a-z]{1,8}\.svc", fullmatch=True)
addresses = st.from_regex(r"10\.96\.[0-9]{1,2}\.[0-9]{1,2}", fullmatch=True)
foreign = st.lists(
    st.from_regex(r"[0-9.]{7,11} [a-z.]{1,12}( # [a-z]{1,6})?", fullmatch=True), max_size=5
)


@given(foreign, st.dictionaries(names, addresses, max_size=4))
def test_hosts_editing_is_idempotent_and_keeps_foreign_lines(
    lines: list[str], wanted: dict[str, str]
) -> None:
    current = "".join(f"{line}\n" for line in lines)
    once = hosts_text(current, OWNER, wanted)
    assert hosts_text(once, OWNER, wanted) == once
    assert [line for line in once.splitlines() if "# berth " not in line] == lines
    assert hosts_text(once, OWNER, {}) == current


def test_write_hosts_edits_the_file_in_place(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text(HOSTS)
    inode = path.stat().st_ino
    assert write_hosts(path, OWNER, {"registry.registry.svc": "10.96.0.10"})
    assert not write_hosts(path, OWNER, {"registry.registry.svc": "10.96.0.10"})
    assert path.stat().st_ino == inode, "a bind-mounted /etc/hosts is edited, not replaced"


def test_trust_folders_are_ours_alone(tmp_path: Path) -> None:
    trust = HostTrust("registry.registry.svc:5000", CA)
    assert write_trust(tmp_path, OWNER, trust, containerd=True)
    folder = tmp_path / "registry.registry.svc:5000"
    assert (folder / "ca.crt").read_text() == CA
    hosts_toml = (folder / "hosts.toml").read_text()
    assert 'server = "https://registry.registry.svc:5000"' in hosts_toml
    # Relative: containerd reads it from the host's folder, wherever the node keeps it.
    assert 'ca = "ca.crt"' in hosts_toml
    assert owners_in(tmp_path) == {OWNER: ["registry.registry.svc:5000"]}
    assert not write_trust(tmp_path, OWNER, trust, containerd=True), "no change, no write"

    theirs = tmp_path / "quay.io"
    theirs.mkdir()
    (theirs / "hosts.toml").write_text('server = "https://quay.io"\n')
    with pytest.raises(NotOurs):
        write_trust(tmp_path, OWNER, HostTrust("quay.io", CA), containerd=True)
    with pytest.raises(NotOurs):
        write_trust(tmp_path, "other/owner", trust, containerd=True)

    (folder / "notes.txt").write_text("left by a person\n")
    assert remove_owner(tmp_path, OWNER) == ["registry.registry.svc:5000"]
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    assert (theirs / "hosts.toml").read_text() == 'server = "https://quay.io"\n'
    assert remove_owner(tmp_path, OWNER) == []


def test_crio_gets_the_ca_alone(tmp_path: Path) -> None:
    write_trust(tmp_path, OWNER, HostTrust("reg.ns.svc:5000", CA), containerd=False)
    assert sorted(p.name for p in (tmp_path / "reg.ns.svc:5000").iterdir()) == [
        OWNER_FILE,
        "ca.crt",
    ]


def test_hosts_that_are_not_folder_names_are_refused(tmp_path: Path) -> None:
    for host in ("", "..", "_default", "a/b"):
        with pytest.raises(ValueError, match="not a registry host"):
            write_trust(tmp_path, OWNER, HostTrust(host, CA), containerd=True)


@pytest.mark.parametrize(
    ("config", "dirs"),
    [
        ("version = 3\n", list(CONTAINERD_DEFAULT_DIRS)),
        (
            "version = 3\n[plugins.'io.containerd.cri.v1.images'.registry]\n"
            "config_path = '/etc/containerd/certs.d:/opt/certs.d'\n",
            ["/etc/containerd/certs.d", "/opt/certs.d"],
        ),
        (
            "version = 3\n[plugins.'io.containerd.cri.v1.images'.registry.mirrors."
            "'docker.io']\nendpoint = ['https://mirror.example']\n",
            None,
        ),
        ("version = 2\n[plugins.'io.containerd.grpc.v1.cri'.registry]\nconfig_path = ''\n", None),
        (
            "version = 2\n[plugins.'io.containerd.grpc.v1.cri'.registry]\n"
            "config_path = '/etc/containerd/certs.d'\n",
            ["/etc/containerd/certs.d"],
        ),
    ],
    ids=["2.x default", "2.x set", "2.x mirrors", "1.x unset", "1.x set"],
)
def test_where_containerd_reads_hosts_toml(config: str, dirs: list[str] | None) -> None:
    assert containerd_registry_dirs(config) == dirs


def test_a_registry_without_tls_gets_a_plain_http_server_and_no_ca(tmp_path: Path) -> None:
    write_trust(tmp_path, OWNER, HostTrust("reg.ns.svc:5000", ""), containerd=True)
    folder = tmp_path / "reg.ns.svc:5000"
    assert sorted(p.name for p in folder.iterdir()) == [OWNER_FILE, "hosts.toml"]
    assert 'server = "http://reg.ns.svc:5000"' in (folder / "hosts.toml").read_text()


def test_the_owners_of_marked_lines_are_found_and_foreign_marks_are_not() -> None:
    text = hosts_text(HOSTS, OWNER, {"registry.registry.svc": "10.96.0.10"})
    text = hosts_text(text, "b/r", {"r.b.svc": "10.96.0.12"})
    text += "10.0.0.1 x.example # berth-testbed\n"
    assert hosts_owners(text) == {OWNER, "b/r"}
    assert hosts_owners(hosts_text(text, "b/r", {})) == {OWNER}
