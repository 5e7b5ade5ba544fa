#!/usr/bin/env bash
# `make run`: the operator against the current kube context; when there is none, against
# a local test-bed cluster started here. The CRDs are installed (server-side apply) first.
set -euo pipefail
cd "$(dirname "$0")/.."
berth=.venv/bin/berth

if [[ -z "${KUBECONFIG:-}" && ! -f "$HOME/.kube/config" ]] || ! "$berth" context >/dev/null 2>&1; then
  echo "[run] no usable kube context: starting the local test-bed cluster" >&2
  make --no-print-directory cluster-up
  export KUBECONFIG=$PWD/.cache/cluster/kubeconfig
fi
echo "[run] context: $("$berth" context)" >&2
"$berth" crds apply crds/
exec "$berth" operator --all-namespaces "$@"
