"""A real local Kubernetes control plane on loopback: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and kwok (simulated nodes), no Docker.

    cluster = LocalCluster(workdir)
    cluster.start()          # blocks until a node is Ready and default/default exists
    cluster.kubeconfig       # admin kubeconfig
    cluster.stop()           # reverse order, SIGTERM then SIGKILL, nothing left running

Attached clusters (the default, used by the pytest fixture) ask the kernel to kill each
component when the launching thread dies (PR_SET_PDEATHSIG), so even a test run killed
with SIGKILL leaves no orphan. Detached clusters (`make cluster-up`) outlive the
launcher; their PIDs are kept in `state.json` for `stop_detached()`.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from testbed import pki, testbin

SERVICE_CIDR = "10.96.0.0/12"
FIRST_SERVICE_IP = "10.96.0.1"
NODE_NAME = "kwok-node-0"
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
    """Poll `check` until it returns True; raise ClusterError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as error:  # the component is still coming up
            last_error = error
        time.sleep(interval)
    raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last_error})")


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Component:
    name: str
    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self, *, attached: bool) -> None:
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal is ours to handle
                preexec_fn=_die_with_parent if attached else None,
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


def terminate_pids(pids: list[int], timeout: float = 10.0) -> None:
    """SIGTERM each process group, then SIGKILL whatever is still alive after `timeout`."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for pid in pids:
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
    for pid in pids:
        while _alive(pid):
            time.sleep(0.05)


def _alive(pid: int) -> bool:
    # Reap our own children so they do not linger as zombies, then look at /proc.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"


@dataclass
class LocalCluster:
    workdir: Path
    attached: bool = True
    binaries: Path | None = None
    components: list[Component] = field(default_factory=list)
    api_port: int = 0
    startup_seconds: float = 0.0

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- start -------------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> None:
        started = time.monotonic()
        binaries = self.binaries or testbin.ensure_built()
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        for sub in ("pki", "logs", "etcd", "kcm", "scheduler"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        try:
            self._start(binaries, timeout)
        except BaseException:
            self.stop(remove=False)
            raise
        if not self.attached:
            self._write_state()
        self.startup_seconds = time.monotonic() - started

    def _start(self, bin_dir: Path, timeout: float) -> None:
        pki_dir = self.workdir / "pki"
        ca = pki.CertificateAuthority()
        ca_path = pki_dir / "ca.crt"
        ca_path.write_bytes(ca.cert_pem)
        serving_cert, serving_key = ca.issue(
            "kube-apiserver",
            dns_names=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ip_addresses=("127.0.0.1", "::1", FIRST_SERVICE_IP),
            server=True,
        ).write(pki_dir, "apiserver")
        admin_cert, admin_key = ca.issue(
            "berth-admin", organization="system:masters", client=True
        ).write(pki_dir, "admin")
        sa_private, sa_public = pki.rsa_key_pair()
        sa_key_path, sa_pub_path = pki_dir / "sa.key", pki_dir / "sa.pub"
        sa_key_path.write_bytes(sa_private)
        sa_pub_path.write_bytes(sa_public)

        etcd_port, etcd_peer_port = free_port(), free_port()
        self.api_port = free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{etcd_peer_port}"

        etcd = self._component(
            "etcd",
            [
                str(bin_dir / "etcd"),
                "--name=berth",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=berth={peer_url}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )
        wait_for("etcd /health", lambda: self._etcd_healthy(etcd, etcd_url), timeout)

        apiserver = self._component(
            "kube-apiserver",
            [
                str(bin_dir / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.api_port}",
                "--endpoint-reconciler-type=none",
                f"--tls-cert-file={serving_cert}",
                f"--tls-private-key-file={serving_key}",
                f"--client-ca-file={ca_path}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={sa_pub_path}",
                f"--service-account-signing-key-file={sa_key_path}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=true",
                f"--cert-dir={pki_dir}",
                "--v=1",
            ],
        )
        context = ssl.create_default_context(cafile=str(ca_path))
        context.load_cert_chain(str(admin_cert), str(admin_key))
        wait_for(
            "kube-apiserver /readyz",
            lambda: self._api_ready(apiserver, context),
            timeout,
            interval=0.3,
        )

        self.kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {
                            "name": "berth-testbed",
                            "cluster": {
                                "server": self.server,
                                "certificate-authority": str(ca_path),
                            },
                        }
                    ],
                    "users": [
                        {
                            "name": "berth-admin",
                            "user": {
                                "client-certificate": str(admin_cert),
                                "client-key": str(admin_key),
                            },
                        }
                    ],
                    "contexts": [
                        {
                            "name": "berth-testbed",
                            "context": {"cluster": "berth-testbed", "user": "berth-admin"},
                        }
                    ],
                    "current-context": "berth-testbed",
                }
            )
        )
        kubeconfig = f"--kubeconfig={self.kubeconfig}"
        auth = [
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
        ]
        self._component(
            "kube-controller-manager",
            [
                str(bin_dir / "kube-controller-manager"),
                kubeconfig,
                *auth,
                f"--secure-port={free_port()}",
                f"--cert-dir={self.workdir / 'kcm'}",
                f"--root-ca-file={ca_path}",
                f"--service-account-private-key-file={sa_key_path}",
                "--use-service-account-credentials=true",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
            ],
        )
        self._component(
            "kube-scheduler",
            [
                str(bin_dir / "kube-scheduler"),
                kubeconfig,
                *auth,
                f"--secure-port={free_port()}",
                f"--cert-dir={self.workdir / 'scheduler'}",
            ],
        )
        self._component(
            "kwok",
            [
                str(bin_dir / "kwok"),
                kubeconfig,
                f"--config={bin_dir / 'kwok-stages.yaml'}",
                "--manage-all-nodes=true",
                "--node-lease-duration-seconds=40",
                f"--server-address=127.0.0.1:{free_port()}",
            ],
        )
        self._register_node(timeout)

    def _component(self, name: str, argv: list[str]) -> Component:
        component = Component(name, argv, self.workdir / "logs" / f"{name}.log")
        component.start(attached=self.attached)
        self.components.append(component)
        return component

    @staticmethod
    def _etcd_healthy(etcd: Component, url: str) -> bool:
        etcd.check_alive()
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return bool(json.load(response).get("health") == "true")

    def _api_ready(self, apiserver: Component, context: ssl.SSLContext) -> bool:
        apiserver.check_alive()
        try:
            with urllib.request.urlopen(
                f"{self.server}/readyz", timeout=2, context=context
            ) as response:
                return bool(response.read() == b"ok")
        except urllib.error.HTTPError:
            return False

    def _register_node(self, timeout: float) -> None:
        from kubernetes import client, config

        api_client = config.new_client_from_config(str(self.kubeconfig))  # type: ignore[no-untyped-call]
        core = client.CoreV1Api(api_client)
        try:
            capacity = {"cpu": "32", "memory": "256Gi", "pods": "110"}
            core.create_node(
                {  # type: ignore[arg-type]  # the client accepts plain dicts
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": NODE_NAME,
                        "annotations": {"kwok.x-k8s.io/node": "fake"},
                        "labels": {
                            "kubernetes.io/hostname": NODE_NAME,
                            "kubernetes.io/os": "linux",
                            "kubernetes.io/arch": "amd64",
                            "type": "kwok",
                        },
                    },
                    "status": {"capacity": capacity, "allocatable": capacity},
                }
            )

            def node_ready() -> bool:
                self.check_alive()
                status = core.read_node(NODE_NAME).status
                return status is not None and any(
                    c.type == "Ready" and c.status == "True" for c in status.conditions or []
                )

            def default_sa_exists() -> bool:
                self.check_alive()
                core.read_namespaced_service_account("default", "default")
                return True

            # kwok's volume stages provision and bind claims of this class.
            client.StorageV1Api(api_client).create_storage_class(
                {  # type: ignore[arg-type]
                    "apiVersion": "storage.k8s.io/v1",
                    "kind": "StorageClass",
                    "metadata": {
                        "name": "kwok-volume",
                        "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
                    },
                    "provisioner": "kwok.x-k8s.io/volume",
                    "reclaimPolicy": "Delete",
                    "volumeBindingMode": "Immediate",
                }
            )
            wait_for(f"node {NODE_NAME} Ready", node_ready, timeout)
            wait_for("ServiceAccount default/default", default_sa_exists, timeout)
        finally:
            api_client.close()

    def check_alive(self) -> None:
        for component in self.components:
            component.check_alive()

    # -- stop --------------------------------------------------------------------------

    def stop(self, *, remove: bool = True) -> None:
        pids = [c.process.pid for c in reversed(self.components) if c.process]
        terminate_pids(pids)
        for component in self.components:
            if component.process:
                component.process.wait()
        self.components.clear()
        if remove:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def logs(self) -> Iterator[tuple[str, str]]:
        for component in self.components:
            yield component.name, component.log_tail()

    # -- detached clusters -------------------------------------------------------------

    def _write_state(self) -> None:
        state = {
            "server": self.server,
            "components": [
                {"name": c.name, "pid": c.process.pid, "exe": c.argv[0]}
                for c in self.components
                if c.process
            ],
        }
        (self.workdir / "state.json").write_text(json.dumps(state, indent=2))


def detached_pids(workdir: Path) -> list[int]:
    """PIDs of a detached cluster's components that are still running, newest first."""
    try:
        state = json.loads((workdir / "state.json").read_text())
    except (OSError, ValueError):
        return []
    pids = []
    for component in reversed(state.get("components", [])):
        pid = int(component["pid"])
        try:  # only a process that still runs the same binary is ours
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            continue
        if exe == component["exe"] and _alive(pid):
            pids.append(pid)
    return pids


def stop_detached(workdir: Path) -> int:
    pids = detached_pids(workdir)
    terminate_pids(pids)
    (workdir / "state.json").unlink(missing_ok=True)
    return len(pids)
