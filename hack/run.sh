#!/usr/bin/env bash
# `make run`: the operator against the current kube context; when there is none, against
# a local test-bed cluster started here. The CRDs are installed (server-side apply) first.
#
# On the local cluster it also gives a working registry: the sample Registry in namespace
# `registry`, a namespace `demo` that may push to it; Berth's node agent makes the real
# node resolve and trust it (its settings say where the test-bed node keeps containerd's
# files). The README's "Try it" commands push an image from the machine and run it in a Pod.
set -euo pipefail
cd "$(dirname "$0")/.."
berth=.venv/bin/berth
cluster=.cache/cluster

local_cluster=""
if [[ -z "${KUBECONFIG:-}" && ! -f "$HOME/.kube/config" ]] || ! "$berth" context >/dev/null 2>&1; then
  echo "[run] no usable kube context: starting the local test-bed cluster" >&2
  make --no-print-directory cluster-up
  export KUBECONFIG=$PWD/$cluster/kubeconfig
  local_cluster=yes
fi
echo "[run] context: $("$berth" context)" >&2
"$berth" crds apply crds/

if [[ -n $local_cluster ]]; then
  kubectl=$(hack/testbin/build.sh)/kubectl
  "$kubectl" create namespace registry --dry-run=client -o yaml | "$kubectl" apply -f - >/dev/null
  "$kubectl" create namespace demo --dry-run=client -o yaml | "$kubectl" apply -f - >/dev/null
  "$kubectl" label namespace demo berth.dev/registry=push --overwrite >/dev/null
  "$kubectl" apply -n registry -f manifests/samples/registry.yaml >/dev/null
  echo "[run] sample Registry registry/registry applied; namespace demo may push to it" >&2
  BERTH_NODE_AGENT=$(PYTHONPATH=hack .venv/bin/python -m testbed agent-settings --dir "$cluster")
  export BERTH_NODE_AGENT
  PYTHONPATH=hack .venv/bin/python -m testbed trust --dir "$cluster" --registry registry/registry \
    > "$cluster/logs/trust.log" 2>&1 &
  echo "[run] once it is Ready, its CA and a demo image are in $cluster (log: $cluster/logs/trust.log)" >&2
fi
exec "$berth" operator --all-namespaces "$@"
