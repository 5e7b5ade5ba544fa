#!/usr/bin/env bash
# Builds the test bed's binaries from the wrapper modules into a cache keyed by their
# versions, and prints that folder. A second run with the same go.mod/go.sum is a no-op.
#
#   kube/        kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, and the
#                real node's kubelet and kube-proxy
#   etcd/        etcd
#   kwok/        kwok, plus the Stage objects it needs (kwok-stages.yaml)
#   helm/        helm (v3), for the chart's lint, template and install tests
#   containerd/  containerd 2, its runc shim and ctr, for the real node
#   coredns/     CoreDNS with the plugins cluster DNS needs (its own main.go)
#   pause/       the sandbox image's binary (our own main.go)
#
# Each module stays separate: a shared go.mod would let version selection bump a
# dependency of one component and break another's build.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

module_version() {  # module_version DIR MODULE
  (cd "$here/$1" && go list -m -f '{{.Version}}' "$2")
}
kube_version=$(module_version kube k8s.io/kubernetes)
etcd_version=$(module_version etcd go.etcd.io/etcd/server/v3)
kwok_version=$(module_version kwok sigs.k8s.io/kwok)
helm_version=$(module_version helm helm.sh/helm/v3)
containerd_version=$(module_version containerd github.com/containerd/containerd/v2)
coredns_version=$(module_version coredns github.com/coredns/coredns)

cache_root=${BERTH_TESTBIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/berth/testbin}
out="$cache_root/k8s-${kube_version#v}_etcd-${etcd_version#v}_kwok-${kwok_version#v}_helm-${helm_version#v}"
out+="_containerd-${containerd_version#v}_coredns-${coredns_version#v}"
fingerprint=$(cat "$here"/kube/go.{mod,sum} "$here"/{etcd,kwok,helm,containerd,coredns}/go.{mod,sum} \
  "$here"/{coredns,pause}/main.go "$here"/pause/go.mod "$0" | sha256sum | cut -d' ' -f1)

if [[ -f "$out/.complete" && "$(cat "$out/.complete")" == "$fingerprint" ]]; then
  echo "$out"
  exit 0
fi

mkdir -p "$out"
rm -f "$out/.complete"
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--p=2} -trimpath -buildvcs=false"
log() { echo "[testbin] $*" >&2; }

minor=${kube_version#v1.}; minor=${minor%%.*}
kube_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kube_ldflags+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  kube_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy; do
  log "building $cmd $kube_version"
  (cd "$here/kube" && go build -ldflags "$kube_ldflags" -o "$out/$cmd" "k8s.io/kubernetes/cmd/$cmd")
done

log "building etcd $etcd_version"
(cd "$here/etcd" && go build -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3)

log "building kwok $kwok_version"
(cd "$here/kwok" && go build -ldflags "-s -w" -o "$out/kwok" sigs.k8s.io/kwok/cmd/kwok)

# As helm's own Makefile does: its version, and the Kubernetes version `helm template` and
# `helm lint` assume (the major and minor of the client-go it is built with, 0.x -> 1.x).
helm_kube=$(module_version helm k8s.io/client-go); helm_kube=${helm_kube#v0.}
helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version"
helm_ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  helm_ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=${helm_kube%%.*}"
done
log "building helm $helm_version"
(cd "$here/helm" && go build -ldflags "$helm_ldflags" -o "$out/helm" helm.sh/helm/v3/cmd/helm)

# containerd as its own releases build it for Linux without CGO: no btrfs, devmapper or
# zfs snapshotters (they need C libraries); overlayfs and native remain.
containerd_ldflags="-s -w -X github.com/containerd/containerd/v2/version.Version=$containerd_version"
containerd_ldflags+=" -X github.com/containerd/containerd/v2/version.Package=github.com/containerd/containerd/v2"
for cmd in containerd containerd-shim-runc-v2 ctr; do
  log "building $cmd $containerd_version"
  (cd "$here/containerd" && go build -tags "no_btrfs no_devmapper no_zfs" \
    -ldflags "$containerd_ldflags" -o "$out/$cmd" "github.com/containerd/containerd/v2/cmd/$cmd")
done

log "building coredns $coredns_version"
(cd "$here/coredns" && go build -ldflags "-s -w" -o "$out/coredns" .)
log "building pause"
(cd "$here/pause" && go build -ldflags "-s -w" -o "$out/pause" .)

# Standalone kwok exits with "no stages found" unless it is given Stage objects; without
# pod-delete, deleted pods stay Terminating forever. The volume stages provision and bind
# PVCs of the StorageClass kwok-volume, which the launcher creates as the default class.
kwok_dir=$(cd "$here/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
stages=(node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease
        pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete
        volume/fast/pvc-provision volume/fast/pv-bind volume/fast/pvc-delete volume/fast/pv-delete)
: > "$out/kwok-stages.yaml"
for stage in "${stages[@]}"; do
  { echo "---"; cat "$kwok_dir/kustomize/stage/$stage.yaml"; } >> "$out/kwok-stages.yaml"
done

echo "$fingerprint" > "$out/.complete"
log "done: $out"
echo "$out"
