"""Process and polling helpers shared by the test bed's launchers (control plane, node)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

_PR_SET_PDEATHSIG = 1


class ClusterError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    what: str, check: Callable[[], bool], timeout: float, *, interval: float = 0.2
) -> None:
    """Poll `check` until it returns True; raise ClusterError after `timeout` seconds.

    A ClusterError raised by `check` (a component died) ends the wait at once.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except ClusterError:
            raise
        except Exception as error:  # the component is still coming up
            last_error = error
        time.sleep(interval)
    raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last_error})")


def die_with_parent() -> None:
    """preexec_fn: the kernel kills the child when the thread that started it dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def terminate_pids(pids: list[int], timeout: float = 10.0) -> None:
    """SIGTERM each process group, then SIGKILL whatever is still alive after `timeout`."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for pid in pids:
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
    for pid in pids:
        while alive(pid):
            time.sleep(0.05)


def alive(pid: int) -> bool:
    # Reap our own children so they do not linger as zombies, then look at /proc.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"


def runs(pid: int, exe: str) -> bool:
    """Whether `pid` is alive and runs the binary `exe` (a PID reused by another is not ours)."""
    try:
        return os.readlink(f"/proc/{pid}/exe") == exe and alive(pid)
    except OSError:
        return False
