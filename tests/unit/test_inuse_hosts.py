"""The host names the in-use scanner matches (the scan itself runs against the cluster
in tests/integration/test_inuse_scanner.py)."""

from __future__ import annotations

from berth.prune.inuse import host_aliases


def test_host_aliases_add_default_ports_and_lower_case() -> None:
    assert host_aliases(["Registry.Example.com", "10.0.0.1:5000", "https://r.io:443/"]) == {
        "registry.example.com",
        "registry.example.com:443",
        "registry.example.com:80",
        "10.0.0.1:5000",
        "r.io:443",
        "r.io",
    }
    assert host_aliases(["[::1]", "[::1]:443"]) == {"[::1]", "[::1]:443", "[::1]:80"}
