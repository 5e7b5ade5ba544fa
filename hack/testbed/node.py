"""One real node for the test-bed cluster: containerd 2 + runc + CNI, a kubelet, kube-proxy,
CoreDNS for cluster DNS and a local-volume provisioner, all on this machine.

The node's address sits on an empty bridge (`berth-node0`, a /32: the kubelet refuses a
loopback address and this kernel has no `dummy` module); Pods live on `berth-cni0`. Pods get
routes only to the service range and the node address, and forwarded traffic from the Pod
bridge to any other interface is dropped: nothing a Pod sends leaves the machine. Pulls of
images that are not on the node go to a closed local port (containerd's `_default`
hosts.toml), never out. The apiserver listens on the node address, so Pods reach it through
the `kubernetes` Service and the machine reaches it directly.

Some of what a node touches is machine-wide whatever root folders it is given (iptables
chains, sysctls, /var/log/containers, /var/lib/cni, /var/lib/kubelet/device-plugins,
cgroups, network links). So one real node runs per machine at a time, claimed in
`/run/berth-testbed/node.json` together with what the machine looked like before; `sweep()`
puts it back, at `stop()` and at the next start after a crashed run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from berth.node.files import hosts_owners, hosts_text, write_text_in_place
from testbed import pki
from testbed.procs import (
    ClusterError,
    Component,
    free_port,
    kill_pids,
    locked,
    runs,
    terminate_pids,
    wait_for,
)

NODE_NAME = "berth-node-0"
NODE_BRIDGE = "berth-node0"
NODE_IP = "10.201.0.1"
POD_BRIDGE = "berth-cni0"
POD_CIDR = "10.202.0.0/24"
CLUSTER_DOMAIN = "cluster.local"
LOCAL_STORAGE_CLASS = "berth-local"
LOCAL_PROVISIONER = "berth.dev/testbed-local"
# containerd's default sandbox image name, built by testbed.nodeimages.
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
NODE_LABEL = "berth.dev/testbed-node"

STATE_DIR = Path("/run/berth-testbed")
STATE_FILE = STATE_DIR / "node.json"
_LOCK_FILE = STATE_DIR / "node.lock"
# containerd's sockets: unix socket paths have a length limit (shim sockets' folder at most
# 42 characters), which folders under pytest's or the repository's are past.
SOCKETS = STATE_DIR / "run"

# Host paths a kubelet, containerd or the CNI plugins create whatever folders they are given.
MACHINE_PATHS = (
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
    "/var/lib/cni",
    "/run/containerd",
    "/var/run/nri",
    "/opt/containerd",
    "/etc/cni",
    "/opt/cni",
)
# Sysctls the node's components set: the bridge plugin turns forwarding on, the kubelet sets
# its "kernel defaults" unless protectKernelDefaults, kube-proxy may set route_localnet.
SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/forwarding",
    "net/ipv4/conf/all/route_localnet",
    "net/ipv6/conf/all/forwarding",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/netfilter/nf_conntrack_max",
    "net/netfilter/nf_conntrack_tcp_timeout_established",
    "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
)
# Processes of ours: the node's binaries from the test bed's build folder.
NODE_BINARIES = ("containerd", "containerd-shim-runc-v2", "kubelet", "kube-proxy", "coredns")
_FILTER_CHAIN = "BERTH-TESTBED"
HOSTS_FILE = Path("/etc/hosts")
_CAPABILITIES = {"CAP_NET_ADMIN": 12, "CAP_SYS_ADMIN": 21, "CAP_SYS_CHROOT": 18, "CAP_MKNOD": 27}
_NEEDED_COMMANDS = {
    "runc": "runc",
    "conntrack": "conntrack",
    "iptables": "iptables",
    "ip6tables": "iptables",
    "ip": "iproute2",
    "mount": "mount",
}
_CNI_DIR = Path("/usr/lib/cni")


class NodeError(ClusterError):
    pass


def _log(message: str) -> None:
    print(f"[node] {message}", flush=True)


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise NodeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


# -- preflight ---------------------------------------------------------------------------


def preflight() -> None:
    """A clear error naming what is missing: root, capabilities, commands, CNI plugins."""
    problems, packages = [], False
    if os.geteuid() != 0:
        problems.append(
            "root: the real node mounts, makes network links and iptables rules, and runs "
            "containers (run as root, or BERTH_REAL_NODE=0 for a cluster of the kwok node only)"
        )
    effective = _effective_capabilities()
    missing_caps = [name for name, bit in _CAPABILITIES.items() if not effective >> bit & 1]
    if missing_caps:
        problems.append(f"capabilities {', '.join(missing_caps)}")
    for command, package in _NEEDED_COMMANDS.items():
        if shutil.which(command) is None:
            problems.append(f"the command {command} (Debian package {package})")
            packages = True
    for plugin in ("bridge", "host-local", "loopback"):
        if not (_CNI_DIR / plugin).exists():
            problems.append(f"{_CNI_DIR / plugin} (Debian package containernetworking-plugins)")
            packages = True
    if not Path("/proc/sys/net/bridge").exists():
        problems.append("the kernel's bridge netfilter (/proc/sys/net/bridge)")
    if problems:
        hint = " (hack/install-system-deps.sh installs the packages)" if packages else ""
        raise NodeError("the real node cannot start here; missing: " + "; ".join(problems) + hint)


def _effective_capabilities() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


# -- the claim on the machine ------------------------------------------------------------


def _locked() -> contextlib.AbstractContextManager[None]:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    return locked(_LOCK_FILE)


def _read_state() -> dict[str, Any] | None:
    try:
        state = json.loads(STATE_FILE.read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def running_owner() -> str | None:
    """The folder of the real node that runs on this machine now, if any."""
    state = _read_state()
    if state is None:
        return None
    for process in state.get("processes", []):
        if runs(int(process["pid"]), str(process["exe"])):
            return str(state["workdir"])
    return None


def _read_sysctl(name: str) -> str | None:
    try:
        return (Path("/proc/sys") / name).read_text().strip()
    except OSError:
        return None


def machine_snapshot() -> dict[str, Any]:
    """What the node may change on the machine, as it is now."""
    return {
        "sysctls": {name: _read_sysctl(name) for name in SYSCTLS},
        "paths": {path: os.path.lexists(path) for path in MACHINE_PATHS},
    }


def machine_state(binaries: Path) -> dict[str, Any]:
    """Everything of the machine a node could leave behind, to compare before and after:
    processes of the node's binaries and in Pod cgroups, mount points, network links,
    iptables and ip6tables chains and rules, the sysctls and host paths above."""
    chains = {}
    for save in ("iptables-save", "ip6tables-save"):
        listing = _run(save, check=False).stdout.splitlines()
        # Chains and rules, without the packet counters of the built-in chains.
        chains[save] = sorted(line.split(" [")[0] for line in listing if line[:1] in (":", "-"))
    return {
        "processes": sorted(_our_pids(binaries) + _container_pids()),
        "mounts": sorted(set(_mounts_under(("/",)))),
        "links": sorted(str(link["ifname"]) for link in _links()),
        "hosts": HOSTS_FILE.read_text(),
        "iptables": chains,
        **machine_snapshot(),
    }


# -- the node ----------------------------------------------------------------------------


@dataclass
class RealNode:
    """The node's processes and configuration under `root` (the cluster folder's node/)."""

    root: Path
    binaries: Path
    processes: list[Component] = field(default_factory=list)
    dns_ready_url: str = ""
    proxy_healthz_url: str = ""

    @property
    def containerd_socket(self) -> Path:
        return SOCKETS / "containerd.sock"

    @property
    def certs_d(self) -> Path:
        """containerd's registry host configuration (hosts.toml per host), read on every pull."""
        return self.root / "certs.d"

    @property
    def volumes(self) -> Path:
        return self.root / "volumes"

    def claim(self, workdir: Path) -> None:
        """Take the machine's one real node, sweeping what a crashed run left."""
        with _locked():
            owner = running_owner()
            if owner is not None:
                raise NodeError(
                    f"a real test-bed node already runs on this machine (cluster {owner}): "
                    "one per machine; stop it first (make cluster-down)"
                )
            previous = _read_state()
            if previous is not None:
                _log(f"sweeping what the node of {previous.get('workdir')} left behind")
                sweep(previous)
            STATE_DIR.mkdir(parents=True, exist_ok=True)
            state = {
                "workdir": str(workdir),
                "root": str(self.root),
                "binaries": str(self.binaries),
                "processes": [],
                **machine_snapshot(),
            }
            STATE_FILE.write_text(json.dumps(state, indent=2))

    def record_processes(self) -> None:
        with _locked():
            state = _read_state() or {}
            state["processes"] = [
                {"name": p.name, "pid": p.process.pid, "exe": os.path.realpath(p.argv[0])}
                for p in self.processes
                if p.process is not None
            ]
            STATE_FILE.write_text(json.dumps(state, indent=2))

    # -- network -----------------------------------------------------------------------

    def setup_network(self, service_cidr: str) -> None:
        _run("ip", "link", "add", NODE_BRIDGE, "type", "bridge")
        _run("ip", "addr", "add", f"{NODE_IP}/32", "dev", NODE_BRIDGE)
        _run("ip", "link", "set", NODE_BRIDGE, "up")
        # Service addresses that kube-proxy has not translated end here, not on the default
        # route: nothing addressed to the service range leaves the machine.
        _run("ip", "route", "add", service_cidr, "dev", NODE_BRIDGE)
        for iptables in ("iptables", "ip6tables"):
            _run(iptables, "-w", "-N", _FILTER_CHAIN)
            _run(iptables, "-w", "-A", _FILTER_CHAIN, "-i", POD_BRIDGE, "-o", POD_BRIDGE,
                 "-j", "ACCEPT")  # fmt: skip
            _run(iptables, "-w", "-A", _FILTER_CHAIN, "-i", POD_BRIDGE, "-j", "DROP")
            _run(iptables, "-w", "-A", _FILTER_CHAIN, "-o", POD_BRIDGE, "-j", "DROP")
            _run(iptables, "-w", "-I", "FORWARD", "1", "-j", _FILTER_CHAIN)
        # Pod -> Service -> Pod on the same bridge must pass through iptables both ways.
        Path("/proc/sys/net/bridge/bridge-nf-call-iptables").write_text("1")
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1")

    # -- start -------------------------------------------------------------------------

    def start(
        self,
        *,
        ca: pki.CertificateAuthority,
        ca_path: Path,
        server: str,
        service_cidr: str,
        images: list[tuple[str, Path]],
        attached: bool,
        admin_kubeconfig: Path,
        timeout: float,
    ) -> None:
        for sub in ("containerd", "kubelet", "pods-logs", "cni/net.d", "cni/ipam", "certs.d",
                    "volumes", "pki", "opt", "logs", "proxy"):  # fmt: skip
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (SOCKETS / "s").mkdir(parents=True, exist_ok=True)
        self._write_cni_config(service_cidr)
        self._write_default_hosts()
        self._start_containerd(attached, timeout)
        self._import_images(images)
        kubeconfigs = self._node_credentials(ca, ca_path, server)
        self._start_kubelet(kubeconfigs["kubelet"], ca_path, attached)
        self._start_kube_proxy(kubeconfigs["kube-proxy"], attached)
        self._start_coredns(admin_kubeconfig, attached)
        self._start_provisioner(admin_kubeconfig, attached)
        self.record_processes()

    def _spawn(
        self,
        name: str,
        argv: list[str],
        attached: bool,
        env: dict[str, str] | None = None,
    ) -> Component:
        process = Component(name, argv, self.root / "logs" / f"{name}.log", env)
        process.start(attached=attached)
        self.processes.append(process)
        return process

    def check_alive(self) -> None:
        for process in self.processes:
            process.check_alive()

    def _write_cni_config(self, service_cidr: str) -> None:
        gateway = POD_CIDR.rsplit(".", 1)[0] + ".1"
        conflist = {
            "cniVersion": "1.0.0",
            "name": "berth",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": POD_BRIDGE,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_CIDR, "gateway": gateway}]],
                        # No default route: a Pod reaches Services and the node, nothing else.
                        "routes": [{"dst": service_cidr}, {"dst": f"{NODE_IP}/32"}],
                        "dataDir": str(self.root / "cni" / "ipam"),
                    },
                },
                {"type": "loopback"},
            ],
        }
        (self.root / "cni" / "net.d" / "10-berth.conflist").write_text(json.dumps(conflist))

    def _write_default_hosts(self) -> None:
        # Any registry without a hosts.toml of its own is "served" by a closed local port:
        # an image that is not on the node fails to pull at once instead of going out.
        default = self.certs_d / "_default"
        default.mkdir(parents=True, exist_ok=True)
        (default / "hosts.toml").write_text('server = "https://127.0.0.1:9"\n')

    def agent_settings(self) -> dict[str, Any]:
        """Where Berth's node agent finds this node's files (the chart's nodeAgent values;
        BERTH_NODE_AGENT for an operator run as a process): the machine's /etc/hosts, and
        containerd's configuration and certs.d under the node's folder. Install settings:
        nothing here configures the node itself."""
        return {
            "hostsFile": str(HOSTS_FILE),
            "containerdConfig": str(self.root / "containerd" / "config.toml"),
            "containerdCertsDir": str(self.certs_d),
            "crioCertsDir": str(self.root / "containers-certs.d"),
        }

    def _start_containerd(self, attached: bool, timeout: float) -> None:
        base = self.root / "containerd"
        runtime = "plugins.'io.containerd.cri.v1.runtime'"
        config = f"""version = 4
root = '{base / "root"}'
state = '{base / "state"}'
imports = []
disabled_plugins = ['io.containerd.snapshotter.v1.blockfile', 'io.containerd.snapshotter.v1.erofs',
  'io.containerd.differ.v1.erofs', 'io.containerd.mount-handler.v1.erofs',
  'io.containerd.nri.v1.nri', 'io.containerd.image-verifier.v1.bindir']

[plugins.'io.containerd.server.v1.grpc']
  address = '{self.containerd_socket}'
[plugins.'io.containerd.server.v1.ttrpc']
  address = '{self.containerd_socket}.ttrpc'

[plugins.'io.containerd.internal.v1.opt']
  path = '{self.root / "opt"}'
[plugins.'io.containerd.shim.v1.manager']
  socket_dir = '{SOCKETS / "s"}'
[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = '{PAUSE_IMAGE}'
[plugins.'io.containerd.cri.v1.images'.registry]
  config_path = '{self.certs_d}'
[{runtime}]
  # Root here lacks CAP_SYS_RESOURCE: without this every sandbox fails to start.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_criu = false
  cdi_spec_dirs = []
[{runtime}.containerd.runtimes.runc]
  runtime_type = 'io.containerd.runc.v2'
[{runtime}.containerd.runtimes.runc.options]
  BinaryName = '{shutil.which("runc") or "runc"}'
  Root = '{self.root / "runc"}'
  SystemdCgroup = false
[{runtime}.cni]
  bin_dirs = ['{_CNI_DIR}']
  conf_dir = '{self.root / "cni" / "net.d"}'
[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = '127.0.0.1'
"""
        config_path = base / "config.toml"
        config_path.write_text(config)
        env = {**os.environ, "PATH": f"{self.binaries}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
        process = self._spawn(
            "containerd",
            [str(self.binaries / "containerd"), "--config", str(config_path)],
            attached,
            env,
        )
        # The kubelet exits if the CRI is not up yet: wait for containerd's own word.
        wait_for(
            "containerd to boot",
            lambda: _booted(process),
            timeout,
        )

    def ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        return _run(str(self.binaries / "ctr"), "--address", str(self.containerd_socket),
                    "--namespace", "k8s.io", *args)  # fmt: skip

    def _import_images(self, images: list[tuple[str, Path]]) -> None:
        for name, archive in images:
            self.ctr("images", "import", "--all-platforms", str(archive))
            listed = self.ctr("images", "list", "--quiet").stdout.split()
            if name not in listed:
                raise NodeError(f"importing {archive} did not give the image {name}: {listed}")

    def _node_credentials(
        self, ca: pki.CertificateAuthority, ca_path: Path, server: str
    ) -> dict[str, Path]:
        pki_dir = self.root / "pki"
        kubelet = ca.issue(
            f"system:node:{NODE_NAME}", organization="system:nodes", client=True
        ).write(pki_dir, "kubelet-client")
        ca.issue(NODE_NAME, dns_names=(NODE_NAME,), ip_addresses=(NODE_IP,), server=True).write(
            pki_dir, "kubelet-serving"
        )
        proxy = ca.issue("system:kube-proxy", client=True).write(pki_dir, "kube-proxy")
        result = {}
        for name, (cert, key) in (("kubelet", kubelet), ("kube-proxy", proxy)):
            path = pki_dir / f"{name}.kubeconfig"
            path.write_text(yaml.safe_dump(kubeconfig_document(server, ca_path, cert, key, name)))
            result[name] = path
        return result

    def _start_kubelet(self, kubeconfig: Path, ca_path: Path, attached: bool) -> None:
        pki_dir = self.root / "pki"
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # This machine has cgroup v1 (hybrid) and swap may be on; kubelet 1.36 refuses both
            # unless told.
            "failCgroupV1": False,
            "failSwapOn": False,
            "cgroupDriver": "cgroupfs",
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(ca_path)},
            },
            "authorization": {"mode": "Webhook"},
            "tlsCertFile": str(pki_dir / "kubelet-serving.crt"),
            "tlsPrivateKeyFile": str(pki_dir / "kubelet-serving.key"),
            "address": NODE_IP,
            "port": 10250,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": 0,
            "clusterDNS": [NODE_IP],
            "clusterDomain": CLUSTER_DOMAIN,
            # No upstream resolvers in Pods: names outside the cluster do not resolve.
            "resolvConf": "",
            "podLogsDir": str(self.root / "pods-logs"),
            "volumePluginDir": str(self.root / "volume-plugins"),
            "protectKernelDefaults": False,
            "serializeImagePulls": False,
            # The node's images are imported, never pulled again: no image GC, no eviction
            # for a machine's disk that the test bed does not own.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "100Mi"},
            "maxPods": 110,
            "registerNode": True,
            "rotateCertificates": False,
            "serverTLSBootstrap": False,
            "shutdownGracePeriod": "0s",
            "syncFrequency": "10s",
            "fileCheckFrequency": "10s",
            "nodeStatusUpdateFrequency": "5s",
        }
        config_path = self.root / "kubelet-config.yaml"
        config_path.write_text(yaml.safe_dump(config))
        self._spawn(
            "kubelet",
            [
                str(self.binaries / "kubelet"),
                f"--config={config_path}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={self.root / 'kubelet'}",
                f"--cert-dir={pki_dir}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={NODE_IP}",
                f"--node-labels={NODE_LABEL}=real",
                "--v=1",
            ],
            attached,
        )

    def _start_kube_proxy(self, kubeconfig: Path, attached: bool) -> None:
        healthz_port = free_port()
        self.proxy_healthz_url = f"http://127.0.0.1:{healthz_port}/healthz"
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(kubeconfig)},
            "hostnameOverride": NODE_NAME,
            "mode": "iptables",
            "clusterCIDR": POD_CIDR,
            "bindAddress": NODE_IP,
            "healthzBindAddress": f"127.0.0.1:{healthz_port}",
            "metricsBindAddress": f"127.0.0.1:{free_port()}",
            "nodePortAddresses": [f"{NODE_IP}/32"],
            # Every Service connection is masqueraded to the node: replies from a Pod on the
            # same bridge come back through the host, and no route_localnet is needed.
            "iptables": {"masqueradeAll": True, "localhostNodePorts": False},
            # Leave the machine's conntrack settings as they are.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
        }
        config_path = self.root / "proxy" / "config.yaml"
        config_path.write_text(yaml.safe_dump(config))
        self._spawn(
            "kube-proxy",
            [str(self.binaries / "kube-proxy"), f"--config={config_path}", "--v=1"],
            attached,
        )

    def _start_coredns(self, kubeconfig: Path, attached: bool) -> None:
        # Only the cluster's zones: a name outside them is refused, there is no upstream.
        ready_port = free_port()
        corefile = f"""{CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
    bind {NODE_IP}
    errors
    ready 127.0.0.1:{ready_port}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} berth-testbed
        pods insecure
    }}
    cache 5
    loadbalance
}}
"""
        path = self.root / "Corefile"
        path.write_text(corefile)
        self.dns_ready_url = f"http://127.0.0.1:{ready_port}/ready"
        self._spawn("coredns", [str(self.binaries / "coredns"), "-conf", str(path)], attached)

    def _start_provisioner(self, kubeconfig: Path, attached: bool) -> None:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        self._spawn(
            "provisioner",
            [
                sys.executable,
                "-m",
                "testbed.provisioner",
                "--kubeconfig",
                str(kubeconfig),
                "--root",
                str(self.volumes),
                "--storage-class",
                LOCAL_STORAGE_CLASS,
                "--provisioner",
                LOCAL_PROVISIONER,
            ],
            attached,
            env,
        )

    # -- stop --------------------------------------------------------------------------

    def stop(self, drain: Callable[[], None] | None = None) -> None:
        stop(drain, workdir=self.root.parent)
        for process in self.processes:
            if process.process is not None:
                process.process.wait()
        self.processes.clear()


# The order the node's processes stop in: nothing new is scheduled or routed, then the
# kubelet stops its containers' supervision, then the runtime.
_STOP_ORDER = ("provisioner", "coredns", "kube-proxy", "kubelet", "containerd")


def stop(drain: Callable[[], None] | None = None, *, workdir: Path | None = None) -> None:
    """Drain, stop the node's processes in order, then put the machine back as it was.

    Works from the claim's record alone, so a detached cluster stops the same way. With
    `workdir`, only the node of that cluster; without, whichever node the record names.
    """
    state = _read_state()
    if state is None or (workdir is not None and state.get("workdir") != str(workdir)):
        return
    if drain is not None:
        try:
            drain()
        except Exception as error:  # the sweep below still runs
            _log(f"drain failed ({error}); stopping anyway")
    with _locked():
        state = _read_state()
        if state is None:
            return
        processes = {str(p["name"]): p for p in state.get("processes", [])}
        for name in _STOP_ORDER:
            process = processes.get(name)
            if process is not None and runs(int(process["pid"]), str(process["exe"])):
                terminate_pids([int(process["pid"])], timeout=15.0)
        sweep(state)
    # Nothing of the claim stays behind either.
    with contextlib.suppress(OSError):
        _LOCK_FILE.unlink()
        STATE_DIR.rmdir()


def _booted(containerd: Component) -> bool:
    containerd.check_alive()
    return "containerd successfully booted" in containerd.log_path.read_text(errors="replace")


def kubeconfig_document(
    server: str, ca_path: Path, cert: Path, key: Path, user: str
) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "berth-testbed",
                "cluster": {"server": server, "certificate-authority": str(ca_path)},
            }
        ],
        "users": [
            {"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}
        ],
        "contexts": [
            {"name": "berth-testbed", "context": {"cluster": "berth-testbed", "user": user}}
        ],
        "current-context": "berth-testbed",
    }


# -- putting the machine back ------------------------------------------------------------


def _our_pids(binaries: Path) -> list[int]:
    ours = {str(binaries / name) for name in NODE_BINARIES}
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            exe = os.readlink(entry / "exe")
        except OSError:
            continue
        if exe in ours:
            pids.append(int(entry.name))
    return pids


def _kubepods_cgroups() -> list[Path]:
    """Every cgroup under /kubepods in every hierarchy, deepest first."""
    found: list[Path] = []
    cgroup_root = Path("/sys/fs/cgroup")
    tops = [cgroup_root / "kubepods"] + [
        h / "kubepods" for h in cgroup_root.iterdir() if h.is_dir() and not h.is_symlink()
    ]
    for top in tops:
        if top.is_dir():
            found.extend(sorted((p for p in top.rglob("*") if p.is_dir()), reverse=True))
            found.append(top)
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def _container_pids() -> list[int]:
    pids: set[int] = set()
    for group in _kubepods_cgroups():
        with contextlib.suppress(OSError):
            pids.update(int(p) for p in (group / "cgroup.procs").read_text().split())
    return sorted(pids)


def _mounts_under(prefixes: tuple[str, ...]) -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if any(point == p or point.startswith(p.rstrip("/") + "/") for p in prefixes):
            points.append(point)
    return points


def _unmount_all(prefixes: tuple[str, ...]) -> None:
    for _ in range(5):  # bind mounts can stack: repeat until none is left
        points = _mounts_under(prefixes)
        if not points:
            return
        for point in sorted(set(points), key=lambda p: p.count("/"), reverse=True):
            _run("umount", "--lazy", point, check=False)
    left = _mounts_under(prefixes)
    if left:
        raise NodeError(f"mounts left under {prefixes}: {left}")


def _iptables_sweep() -> None:
    """Remove our chain and every KUBE-* chain (kubelet, kube-proxy) with the rules that jump
    to them, in every table, for IPv4 and IPv6."""
    for iptables in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle", "raw"):
            listing = _run(iptables, "-w", "-t", table, "-S", check=False).stdout.splitlines()
            ours = {
                line.split()[1]
                for line in listing
                if line.startswith("-N ") and (line.split()[1].startswith(("KUBE-", _FILTER_CHAIN)))
            }
            for line in listing:
                words = shlex.split(line)
                if words[:1] == ["-A"] and words[1] not in ours and any(c in words for c in ours):
                    _run(iptables, "-w", "-t", table, "-D", *words[1:], check=False)
            for chain in ours:
                _run(iptables, "-w", "-t", table, "-F", chain, check=False)
            for chain in ours:
                _run(iptables, "-w", "-t", table, "-X", chain, check=False)


def _links() -> list[dict[str, Any]]:
    links: list[dict[str, Any]] = json.loads(_run("ip", "-j", "link", "show").stdout or "[]")
    return links


def _our_links() -> list[str]:
    names = []
    for link in _links():
        name = str(link.get("ifname", ""))
        if name in (NODE_BRIDGE, POD_BRIDGE) or link.get("master") == POD_BRIDGE:
            names.append(name)
    return names


def sweep(state: dict[str, Any]) -> None:
    """Put the machine back as `state` (written when the node was claimed) found it.

    Safe to run again: each step removes only what is still there.
    """
    root = Path(state["root"])
    binaries = Path(state["binaries"])
    kill_pids(_our_pids(binaries))
    kill_pids(_container_pids())
    runc_root = root / "runc"
    if runc_root.exists():
        for line in _run(
            "runc", "--root", str(runc_root), "list", "-q", check=False
        ).stdout.split():
            _run("runc", "--root", str(runc_root), "delete", "--force", line, check=False)
    _unmount_all((str(root), str(SOCKETS)))
    shutil.rmtree(SOCKETS, ignore_errors=True)
    for group in _kubepods_cgroups():
        with contextlib.suppress(OSError):
            group.rmdir()
    for name in _our_links():
        _run("ip", "link", "delete", name, check=False)
    _iptables_sweep()
    _remove_agent_lines()
    for name, value in state.get("sysctls", {}).items():
        if value is not None and _read_sysctl(name) != value:
            with contextlib.suppress(OSError):
                (Path("/proc/sys") / name).write_text(value)
    for path, existed in state.get("paths", {}).items():
        if not existed and os.path.lexists(path):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                Path(path).unlink(missing_ok=True)
    for path, existed in state.get("paths", {}).items():
        if existed and path == "/var/log/containers":
            _remove_links_into(Path(path), root)
        if existed and path == "/var/lib/cni":
            for leftover in Path(path).glob("results/berth-*"):
                leftover.unlink(missing_ok=True)
    STATE_FILE.unlink(missing_ok=True)


def _remove_agent_lines() -> None:
    """The lines Berth's node agent kept for Registries that were not deleted before the
    node stopped (the agent removes them itself for Registries that go)."""
    current = HOSTS_FILE.read_text()
    text = current
    for owner in hosts_owners(text):
        text = hosts_text(text, owner, {})
    if text != current:
        write_text_in_place(HOSTS_FILE, text)


def _remove_links_into(folder: Path, root: Path) -> None:
    for link in folder.iterdir():
        with contextlib.suppress(OSError):
            if link.is_symlink() and os.readlink(link).startswith(str(root)):
                link.unlink()
