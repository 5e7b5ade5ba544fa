"""Locates (building if needed) the test bed's Go binaries."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "testbin" / "build.sh"


def ensure_built() -> Path:
    """The folder holding kube-apiserver, etcd, kwok, ...; builds them on first use.

    `BERTH_TESTBIN` names a folder of ready binaries and skips the build.
    """
    override = os.environ.get("BERTH_TESTBIN")
    if override:
        return Path(override)
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], check=True, stdout=subprocess.PIPE, text=True
    )
    return Path(result.stdout.strip().splitlines()[-1])
