"""Prune planning: how fast Berth reads a registry and plans, against what a person's
sequential skopeo loop and the registry itself manage on the same machine.

    PYTHONPATH=hack .venv/bin/python -m benchmarks.prune [--repositories 1000] [--tags 20]

Against Debian's docker-registry (distribution 2.8) on loopback, holding
`repositories x tags` single-platform OCI images (64-byte layer shared by every image of
a repository, a distinct config per image). The store is kept under
.cache/benchmarks/ and reused by later runs: pushing 20,000 images takes minutes.

Measured, in one run (compare the ratios, not the absolute times):
1. cold planning: a fresh client and digest cache; catalog, tag lists, one manifest GET
   per tag and one config GET per digest, then the retention plan;
2. repeated planning: the same client again (digests cached: one request per tag);
3. a sequential `skopeo list-tags` + `skopeo inspect` per tag over a sample of the
   repositories, extrapolated per manifest to the whole registry (stated as such);
4. the registry's own GET throughput: `wrk` cycling manifest GETs (full Accept list)
   and, separately, config-blob GETs over the same sample, at 8 and 16 connections (or,
   without wrk, an aiohttp loop, and the report says so).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import random
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from berth.prune.retention import RetentionRules
from berth.prune.run import REGISTRY_CONCURRENCY, plan_registry
from berth.registry.client import MANIFEST_ACCEPT, RegistryClient
from testbed.images import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, Blob, Image, Pusher
from testbed.registry import LocalRegistry
from testbed.testbin import REPO_ROOT

CACHE = REPO_ROOT / ".cache" / "benchmarks"
STORE_VERSION = 1  # bump when the pushed data changes
RULES = RetentionRules(keep_last=5, keep_younger_than=datetime.timedelta(days=7))
WRK_SCRIPT = """\
-- Cycles GET /v2/<repo>/manifests/<tag> over the paths listed in PATHS_FILE.
local paths = {}
for line in io.lines(os.getenv("PATHS_FILE")) do paths[#paths + 1] = line end
local counter = 0
wrk.headers["Accept"] = os.getenv("ACCEPT")
request = function()
  counter = counter + 1
  return wrk.format("GET", paths[(counter % #paths) + 1])
end
"""


def _canonical(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def image(layer: Blob, created: datetime.datetime, nonce: str) -> Image:
    """A single-platform OCI image over a shared layer; the config makes it distinct."""
    config = Blob(
        OCI_CONFIG,
        _canonical(
            {
                "architecture": "amd64",
                "os": "linux",
                "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "config": {"Labels": {"berth.bench/nonce": nonce}},
                "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
            }
        ),
    )
    manifest = _canonical(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": [layer.descriptor()],
        }
    )
    return Image(config, (layer,), "linux/amd64", created, manifest)


def repository_name(number: int) -> str:
    return f"team-{number // 100:02d}/app-{number:04d}"


async def populate(url: str, repositories: int, tags: int) -> float:
    layer = Blob(OCI_LAYER, random.Random(1).randbytes(64))
    now = datetime.datetime.now(datetime.UTC)
    started = time.monotonic()
    pushes = [
        [
            (
                repository_name(r),
                f"build-{t}",
                image(layer, now - datetime.timedelta(days=tags - t), f"{r}-{t}"),
            )
            for r in range(repositories)
        ]
        for t in range(tags)
    ]
    async with Pusher(url, concurrency=32) as pusher:
        # Tag 0 of every repository first: it uploads the shared layer into each
        # repository, and two uploads of one blob into one repository at once race.
        await pusher.push_many(pushes[0])
        await pusher.push_many(item for batch in pushes[1:] for item in batch)
    return time.monotonic() - started


def registry(store: Path, repositories: int, tags: int) -> tuple[LocalRegistry, str]:
    """The loopback registry, populated once and reused."""
    workdir = store / f"prune-{repositories}x{tags}-v{STORE_VERSION}"
    marker = workdir / "populated"
    running = LocalRegistry(workdir)
    running.start()
    if marker.exists():
        return running, f"reused the store in {workdir}"
    shutil.rmtree(running.store, ignore_errors=True)
    running.restart()
    seconds = asyncio.run(populate(running.url, repositories, tags))
    marker.write_text(f"{seconds:.0f}s\n")
    return running, f"pushed {repositories * tags} images in {seconds:.0f}s into {workdir}"


async def planning(url: str) -> dict[str, Any]:
    """Cold, then repeated (warm cache), planning over the whole registry."""
    results: dict[str, Any] = {}
    async with RegistryClient(url, concurrency=REGISTRY_CONCURRENCY) as client:
        for label in ("cold", "repeated"):
            before = client.stats.requests
            started = time.monotonic()
            found, plan = await plan_registry(client, RULES, {})
            seconds = time.monotonic() - started
            manifests = sum(len(r.manifests) for r in found.values())
            requests = client.stats.requests - before
            results[label] = {
                "seconds": round(seconds, 2),
                "repositories": len(found),
                "manifests": manifests,
                "requests": requests,
                "manifests_per_second": round(manifests / seconds, 1),
                "requests_per_second": round(requests / seconds, 1),
                "planned_deletions": len(plan.deletions),
            }
    return results


def skopeo_sample(host: str, repositories: int, tags: int, sample: int) -> dict[str, Any]:
    """The loop a person would write: list tags, then inspect each, one at a time."""
    step = max(1, repositories // sample)
    chosen = [repository_name(r) for r in range(0, repositories, step)][:sample]
    started = time.monotonic()
    inspected = 0
    for repository in chosen:
        listing = subprocess.run(
            ["skopeo", "list-tags", "--tls-verify=false", f"docker://{host}/{repository}"],
            check=True,
            capture_output=True,
            text=True,
        )
        for tag in json.loads(listing.stdout)["Tags"]:
            subprocess.run(
                [
                    "skopeo",
                    "inspect",
                    "--tls-verify=false",
                    "--format",
                    "{{.Created}} {{.Digest}}",
                    f"docker://{host}/{repository}:{tag}",
                ],
                check=True,
                capture_output=True,
            )
            inspected += 1
    seconds = time.monotonic() - started
    rate = inspected / seconds
    return {
        "repositories": len(chosen),
        "manifests": inspected,
        "seconds": round(seconds, 1),
        "manifests_per_second": round(rate, 1),
        "extrapolated_seconds_for_all": round(repositories * tags / rate),
    }


async def sample_paths(url: str, repositories: int, tags: int) -> dict[str, list[str]]:
    """Manifest and config-blob paths of every tag of 200 repositories."""
    manifests, blobs = [], []
    async with RegistryClient(url, concurrency=REGISTRY_CONCURRENCY) as client:
        for r in range(0, repositories, max(1, repositories // 200)):
            for t in range(tags):
                repository = repository_name(r)
                manifest = await client.get_manifest(repository, f"build-{t}")
                assert manifest.config is not None
                manifests.append(f"/v2/{repository}/manifests/build-{t}")
                blobs.append(f"/v2/{repository}/blobs/{manifest.config.digest}")
    return {"manifests": manifests, "config_blobs": blobs}


def registry_throughput(url: str, repositories: int, tags: int, seconds: int) -> dict[str, Any]:
    """The registry's own GET rates, by what a plan asks for: manifests (every plan)
    and config blobs (cold plans), at 8 and 16 connections."""
    paths = asyncio.run(sample_paths(url, repositories, tags))
    wrk = shutil.which("wrk")
    found: dict[str, Any] = {"tool": "wrk -t2" if wrk else "aiohttp loop (wrk not installed)"}
    for kind, listed in paths.items():
        for connections in (8, 16):
            key = f"{kind}_c{connections}"
            if wrk is None:
                found[key] = asyncio.run(aiohttp_throughput(url, listed, seconds, connections))
            else:
                found[key] = wrk_rate(wrk, url, listed, seconds, connections)
    return found


def wrk_rate(wrk: str, url: str, paths: list[str], seconds: int, connections: int) -> float:
    with tempfile.TemporaryDirectory() as scratch:
        script, listing = Path(scratch) / "cycle.lua", Path(scratch) / "paths.txt"
        script.write_text(WRK_SCRIPT)
        listing.write_text("\n".join(paths) + "\n")
        output = subprocess.run(
            [wrk, "-t2", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "PATHS_FILE": str(listing), "ACCEPT": MANIFEST_ACCEPT},
        ).stdout
    if "Non-2xx" in output:
        raise RuntimeError(f"wrk saw errors:\n{output}")
    match = re.search(r"Requests/sec:\s+([0-9.]+)", output)
    assert match, output
    return float(match.group(1))


async def aiohttp_throughput(url: str, paths: list[str], seconds: int, connections: int) -> float:
    done = 0
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(offset: int) -> None:
            nonlocal done
            index = offset
            while time.monotonic() < deadline:
                path = paths[index % len(paths)]
                headers = {"Accept": MANIFEST_ACCEPT}
                async with session.get(url + path, headers=headers) as response:
                    await response.read()
                done += 1
                index += connections

        await asyncio.gather(*(worker(n) for n in range(connections)))
    return round(done / seconds, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repositories", type=int, default=1000)
    parser.add_argument("--tags", type=int, default=20)
    parser.add_argument("--sample", type=int, default=50, help="repositories skopeo walks")
    parser.add_argument("--wrk-seconds", type=int, default=8)
    parser.add_argument("--store", type=Path, default=CACHE)
    args = parser.parse_args()

    running, provenance = registry(args.store, args.repositories, args.tags)
    # The machine may be shared: the load around the measurement goes into the report.
    load_before = os.getloadavg()
    try:
        print(f"registry: {running.url} ({provenance})", flush=True)
        plans = asyncio.run(planning(running.url))
        skopeo = skopeo_sample(running.host, args.repositories, args.tags, args.sample)
        registry_rates = registry_throughput(
            running.url, args.repositories, args.tags, args.wrk_seconds
        )
    finally:
        running.stop()
    cold, repeated = plans["cold"], plans["repeated"]
    connections = 8 if REGISTRY_CONCURRENCY <= 8 else 16
    manifest_rate = registry_rates[f"manifests_c{connections}"]
    blob_rate = registry_rates[f"config_blobs_c{connections}"]
    cold_ceiling = 1 / (1 / manifest_rate + 1 / blob_rate)
    results = {
        "date": datetime.date.today().isoformat(),
        "load_average_1m_before_after": [round(load_before[0], 1), round(os.getloadavg()[0], 1)],
        "machine": (
            f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"
        ),
        "registry": "Debian docker-registry (distribution 2.8) on loopback",
        "data": f"{args.repositories} repositories x {args.tags} tags",
        "planning": plans,
        "skopeo": skopeo,
        "registry_get_throughput": registry_rates,
        # A cold plan asks for one manifest and one config blob per manifest: at the
        # registry's own rates, at most this many manifests per second.
        "cold_ceiling_manifests_per_second": round(cold_ceiling, 1),
        "ratios": {
            "cold_vs_skopeo": round(
                cold["manifests_per_second"] / skopeo["manifests_per_second"], 1
            ),
            "repeated_vs_skopeo": round(
                repeated["manifests_per_second"] / skopeo["manifests_per_second"], 1
            ),
            "cold_vs_ceiling": round(cold["manifests_per_second"] / cold_ceiling, 2),
            "repeated_requests_vs_registry_manifest_gets": round(
                repeated["requests_per_second"] / manifest_rate, 2
            ),
        },
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
