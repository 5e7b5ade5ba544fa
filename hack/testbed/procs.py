"""Process and polling helpers shared by the test bed's launchers (control plane, node)."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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
    _wait_gone(pids, timeout)
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
    _wait_gone(pids, None)


def kill_pids(pids: list[int], timeout: float = 10.0) -> None:
    """SIGKILL each process (not its group: strays found by their executable), and wait
    up to `timeout` for them to be gone."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    _wait_gone(pids, timeout)


def _wait_gone(pids: list[int], timeout: float | None) -> None:
    """Until every process is gone, or `timeout` seconds (None: no limit)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    for pid in pids:
        while alive(pid) and (deadline is None or time.monotonic() < deadline):
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


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive flock on `path` (created if missing) for the duration of the block."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class Component:
    """One process of the test bed, its output in `log_path`."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    process: subprocess.Popen[bytes] | None = None

    def start(self, *, attached: bool) -> None:
        """Attached: the kernel kills it when the thread that started it dies."""
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal is ours to handle
                preexec_fn=die_with_parent if attached else None,
                env=self.env,
            )
        finally:
            log.close()

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise ClusterError(
                f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
