#!/usr/bin/env bash
# Installs the Debian packages the test bed needs, when they are missing:
#   docker-registry  the real registry (distribution 2.8) the tests run on loopback, and
#                    the binary of the real node's registry image
#   skopeo           an independent client to pull back what the tests push
#   buildah, mmdebstrap, mount, busybox-static
#                    the real node's images, built without Docker (testbed.nodeimages)
#   runc, containernetworking-plugins, conntrack, iptables, iproute2
#                    the real node's runtime, Pod network and kube-proxy
# and checks that a Go toolchain new enough for the wrapper modules is on PATH.
set -euo pipefail

missing=()
command -v docker-registry >/dev/null || missing+=(docker-registry)
command -v skopeo >/dev/null || missing+=(skopeo)
command -v buildah >/dev/null || missing+=(buildah)
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
command -v mount >/dev/null || missing+=(mount)
[[ -x /bin/busybox ]] || missing+=(busybox-static)
command -v runc >/dev/null || missing+=(runc)
[[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
command -v conntrack >/dev/null || missing+=(conntrack)
command -v iptables >/dev/null || missing+=(iptables)
command -v ip >/dev/null || missing+=(iproute2)
if ((${#missing[@]})); then
  echo "[deps] installing ${missing[*]}" >&2
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The package may start a registry on :5000 where an init system runs; the tests
  # start their own on free ports, so that one is neither needed nor harmful.
fi

if ! command -v go >/dev/null; then
  for candidate in /usr/local/go/bin /usr/lib/go/bin; do
    [[ -x $candidate/go ]] && { echo "[deps] go is at $candidate; add it to PATH" >&2; exit 1; }
  done
  echo "[deps] no Go toolchain on PATH: the test bed builds kube-apiserver, etcd and kwok from Go modules (Go >= 1.26)" >&2
  exit 1
fi
