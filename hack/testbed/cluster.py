"""A real local Kubernetes cluster on this machine, no Docker: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, one real node (containerd, kubelet, kube-proxy,
CoreDNS, local volumes: testbed.node) that Pods land on by default, and a kwok node
(simulated: Pods become Ready without running) for Pods that ask for it.

    cluster = LocalCluster(workdir)
    cluster.start()          # blocks until both nodes are Ready and default/default exists
    cluster.kubeconfig       # admin kubeconfig
    cluster.stop()           # drains the real node, stops everything, restores the machine

Pods go to the kwok node only with its toleration; a namespace carrying
`KWOK_NAMESPACE_ANNOTATIONS` gives every Pod in it the toleration and a node selector
(the PodTolerationRestriction and PodNodeSelector admission plugins). `real_node=False`
(or `BERTH_REAL_NODE=0`) starts the control plane with the kwok node alone, on loopback.

Attached clusters (the default, used by the pytest fixture) ask the kernel to kill each
component when the launching thread dies (PR_SET_PDEATHSIG), so even a test run killed
with SIGKILL leaves no orphan, and the next start sweeps what the real node left. Detached
clusters (`make cluster-up`) outlive the launcher; their PIDs are kept in `state.json`
for `stop_detached()`.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from testbed import node, pki, testbin
from testbed.procs import (
    ClusterError,
    Component,
    free_port,
    runs,
    terminate_pids,
    wait_for,
)

__all__ = [
    "KWOK_NAMESPACE_ANNOTATIONS",
    "ClusterError",
    "LocalCluster",
    "detached_pids",
    "free_port",
    "stop_detached",
    "wait_for",
]

SERVICE_CIDR = "10.96.0.0/12"
FIRST_SERVICE_IP = "10.96.0.1"
NODE_NAME = "kwok-node-0"
KWOK_TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}
# On a namespace: every Pod in it goes to the kwok node.
KWOK_NAMESPACE_ANNOTATIONS = {
    "scheduler.alpha.kubernetes.io/node-selector": "type=kwok",
    "scheduler.alpha.kubernetes.io/defaultTolerations": json.dumps(
        [{"key": KWOK_TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}]
    ),
}


def real_node_wanted() -> bool:
    return os.environ.get("BERTH_REAL_NODE", "1") not in ("0", "false", "no")


@dataclass
class LocalCluster:
    workdir: Path
    attached: bool = True
    binaries: Path | None = None
    real_node: bool = field(default_factory=real_node_wanted)
    components: list[Component] = field(default_factory=list)
    node: node.RealNode | None = None
    api_port: int = 0
    startup_seconds: float = 0.0

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def api_host(self) -> str:
        # With a real node the apiserver listens on the node's address, which Pods reach
        # (through the `kubernetes` Service) and so does the machine.
        return node.NODE_IP if self.real_node else "127.0.0.1"

    @property
    def server(self) -> str:
        return f"https://{self.api_host}:{self.api_port}"

    @property
    def ca_path(self) -> Path:
        return self.workdir / "pki" / "ca.crt"

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- start -------------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> None:
        started = time.monotonic()
        if self.real_node:
            node.preflight()
        binaries = self.binaries or testbin.ensure_built()
        images = []
        if self.real_node:
            from testbed.nodeimages import ensure_images

            images = [(image.name, image.archive) for image in ensure_images(binaries)]
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        for sub in ("pki", "logs", "etcd", "kcm", "scheduler"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        try:
            if self.real_node:
                real = node.RealNode(self.workdir / "node", binaries)
                real.claim(self.workdir)  # refused while another cluster's node runs
                self.node = real
                real.setup_network(SERVICE_CIDR)
            self._start(binaries, images, timeout)
        except BaseException:
            self.stop(remove=False)
            raise
        if not self.attached:
            self._write_state()
        self.startup_seconds = time.monotonic() - started

    def _start(self, bin_dir: Path, images: list[tuple[str, Path]], timeout: float) -> None:
        pki_dir = self.workdir / "pki"
        ca = pki.CertificateAuthority()
        ca_path = self.ca_path
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
            ip_addresses=("127.0.0.1", "::1", FIRST_SERVICE_IP, node.NODE_IP),
            server=True,
        ).write(pki_dir, "apiserver")
        admin_cert, admin_key = ca.issue(
            "berth-admin", organization="system:masters", client=True
        ).write(pki_dir, "admin")
        # How the apiserver authenticates to kubelets (logs, exec, port-forward).
        kubelet_client_cert, kubelet_client_key = ca.issue(
            "kube-apiserver-kubelet-client", organization="system:masters", client=True
        ).write(pki_dir, "apiserver-kubelet-client")
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

        if self.real_node:
            # The `kubernetes` Service's endpoints are the apiserver's own address.
            endpoints = ["--endpoint-reconciler-type=lease"]
        else:
            endpoints = ["--endpoint-reconciler-type=none"]
        apiserver = self._component(
            "kube-apiserver",
            [
                str(bin_dir / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                f"--bind-address={self.api_host}",
                f"--advertise-address={self.api_host}",
                f"--secure-port={self.api_port}",
                *endpoints,
                f"--tls-cert-file={serving_cert}",
                f"--tls-private-key-file={serving_key}",
                f"--client-ca-file={ca_path}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={sa_pub_path}",
                f"--service-account-signing-key-file={sa_key_path}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=true",
                # Namespaces may send their Pods to the kwok node (KWOK_NAMESPACE_ANNOTATIONS).
                "--enable-admission-plugins=PodNodeSelector,PodTolerationRestriction",
                "--kubelet-preferred-address-types=InternalIP",
                f"--kubelet-client-certificate={kubelet_client_cert}",
                f"--kubelet-client-key={kubelet_client_key}",
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
                node.kubeconfig_document(self.server, ca_path, admin_cert, admin_key, "berth-admin")
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
                # Only the kwok node: kwok must not race the real kubelet for its Lease.
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--node-lease-duration-seconds=40",
                f"--server-address=127.0.0.1:{free_port()}",
            ],
        )
        self._register_kwok_node(timeout)
        if self.node is not None:
            self.node.start(
                ca=ca,
                ca_path=ca_path,
                server=self.server,
                service_cidr=SERVICE_CIDR,
                images=images,
                attached=self.attached,
                admin_kubeconfig=self.kubeconfig,
                timeout=timeout,
            )
            self._wait_real_node(timeout)
        self._wait_default_service_account(timeout)

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

    def _api(self) -> object:
        from kubernetes import config

        return config.new_client_from_config(str(self.kubeconfig))  # type: ignore[no-untyped-call]

    def _register_kwok_node(self, timeout: float) -> None:
        from kubernetes import client

        api_client = self._api()
        core = client.CoreV1Api(api_client)
        storage = client.StorageV1Api(api_client)
        try:
            capacity = {"cpu": "32", "memory": "256Gi", "pods": "110"}
            spec = {"taints": [KWOK_TAINT]} if self.real_node else {}
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
                    "spec": spec,
                    "status": {"capacity": capacity, "allocatable": capacity},
                }
            )
            # kwok's volume stages provision and bind claims of this class; with a real node,
            # the default class is the node's local volumes.
            storage.create_storage_class(
                {  # type: ignore[arg-type]
                    "apiVersion": "storage.k8s.io/v1",
                    "kind": "StorageClass",
                    "metadata": {
                        "name": "kwok-volume",
                        "annotations": {
                            "storageclass.kubernetes.io/is-default-class": str(
                                not self.real_node
                            ).lower()
                        },
                    },
                    "provisioner": "kwok.x-k8s.io/volume",
                    "reclaimPolicy": "Delete",
                    "volumeBindingMode": "Immediate",
                }
            )
            if self.real_node:
                storage.create_storage_class(
                    {  # type: ignore[arg-type]
                        "apiVersion": "storage.k8s.io/v1",
                        "kind": "StorageClass",
                        "metadata": {
                            "name": node.LOCAL_STORAGE_CLASS,
                            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
                        },
                        "provisioner": node.LOCAL_PROVISIONER,
                        "reclaimPolicy": "Delete",
                        "volumeBindingMode": "WaitForFirstConsumer",
                    }
                )
            wait_for(f"node {NODE_NAME} Ready", lambda: self._node_ready(core, NODE_NAME), timeout)
        finally:
            api_client.close()  # type: ignore[attr-defined]

    def _node_ready(self, core: object, name: str) -> bool:
        self.check_alive()
        status = core.read_node(name).status  # type: ignore[attr-defined]
        return status is not None and any(
            c.type == "Ready" and c.status == "True" for c in status.conditions or []
        )

    def _wait_real_node(self, timeout: float) -> None:
        from kubernetes import client

        assert self.node is not None
        api_client = self._api()
        core = client.CoreV1Api(api_client)
        try:
            wait_for(
                f"node {node.NODE_NAME} Ready",
                lambda: self._node_ready(core, node.NODE_NAME),
                timeout,
            )
            real = self.node
            wait_for("CoreDNS ready", lambda: _http_ok(real.dns_ready_url), timeout)
            wait_for("kube-proxy healthy", lambda: _http_ok(real.proxy_healthz_url), timeout)
            # kube-proxy has programmed the `kubernetes` Service: the machine reaches it.
            wait_for(
                f"the kubernetes Service at {FIRST_SERVICE_IP}:443",
                lambda: self._tcp_open(FIRST_SERVICE_IP, 443),
                timeout,
            )
        finally:
            api_client.close()  # type: ignore[attr-defined]

    def _tcp_open(self, host: str, port: int) -> bool:
        self.check_alive()
        with socket.create_connection((host, port), timeout=1):
            return True

    def _wait_default_service_account(self, timeout: float) -> None:
        from kubernetes import client

        api_client = self._api()
        core = client.CoreV1Api(api_client)

        def default_sa_exists() -> bool:
            self.check_alive()
            core.read_namespaced_service_account("default", "default")
            return True

        try:
            wait_for("ServiceAccount default/default", default_sa_exists, timeout)
        finally:
            api_client.close()  # type: ignore[attr-defined]

    def check_alive(self) -> None:
        for component in self.components:
            component.check_alive()
        if self.node is not None:
            self.node.check_alive()

    # -- stop --------------------------------------------------------------------------

    def stop(self, *, remove: bool = True) -> None:
        if self.node is not None:
            kubeconfig = self.kubeconfig
            self.node.stop(drain=(lambda: drain(kubeconfig)) if kubeconfig.exists() else None)
            self.node = None
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
        if self.node is not None:
            for process in self.node.processes:
                yield process.name, process.log_tail()

    # -- detached clusters -------------------------------------------------------------

    def _write_state(self) -> None:
        state = {
            "server": self.server,
            "real_node": self.real_node,
            "components": [
                {"name": c.name, "pid": c.process.pid, "exe": c.argv[0]}
                for c in self.components
                if c.process
            ],
        }
        (self.workdir / "state.json").write_text(json.dumps(state, indent=2))


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return bool(response.status == 200)


def drain(kubeconfig: Path, timeout: float = 60.0) -> None:
    """Cordon the real node, delete every Pod on it and wait until the kubelet has stopped
    them all (containers stopped, volumes unmounted, CNI torn down). Cordoned, the node
    gets no replacement from a Deployment's ReplicaSet in the meantime."""
    from kubernetes import client, config

    api_client = config.new_client_from_config(str(kubeconfig))  # type: ignore[no-untyped-call]
    core = client.CoreV1Api(api_client)
    selector = f"spec.nodeName={node.NODE_NAME}"
    try:
        core.patch_node(node.NODE_NAME, {"spec": {"unschedulable": True}})
        for pod in core.list_pod_for_all_namespaces(field_selector=selector).items:
            meta = pod.metadata
            assert meta is not None
            assert meta.name is not None
            assert meta.namespace is not None
            try:
                core.delete_namespaced_pod(meta.name, meta.namespace, grace_period_seconds=2)
            except client.ApiException as error:
                if error.status != 404:
                    raise
        wait_for(
            "the real node's Pods to stop",
            lambda: not core.list_pod_for_all_namespaces(field_selector=selector).items,
            timeout,
            interval=0.5,
        )
    finally:
        api_client.close()


def detached_pids(workdir: Path) -> list[int]:
    """PIDs of a detached cluster's components that are still running, newest first."""
    try:
        state = json.loads((workdir / "state.json").read_text())
    except (OSError, ValueError):
        return []
    pids = []
    for component in reversed(state.get("components", [])):
        pid = int(component["pid"])
        if runs(pid, str(component["exe"])):  # only a process that still runs it is ours
            pids.append(pid)
    return pids


def stop_detached(workdir: Path) -> int:
    pids = detached_pids(workdir)
    owner = node.running_owner()
    if owner is not None and Path(owner) == workdir:
        kubeconfig = workdir / "kubeconfig"
        node.stop(drain=(lambda: drain(kubeconfig)) if pids else None, workdir=workdir)
    elif owner is None:
        node.stop()  # a node that crashed (any cluster's): sweep what it left
    terminate_pids(pids)
    (workdir / "state.json").unlink(missing_ok=True)
    return len(pids)
