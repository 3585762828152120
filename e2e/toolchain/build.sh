#!/usr/bin/env bash
# Builds the local control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, kwok) and Helm (for the chart tests) from the Go wrapper
# modules beside this script and prints the folder that holds the binaries.
#
# The binaries are cached outside the repository, in
#   ${CLEO_TOOLCHAIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cleo-operator/toolchain}/<key>/bin
# where <key> hashes every go.mod, go.sum, main.go and this script, so a change to
# any pinned version builds afresh and an unchanged tree costs nothing.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache_root=${CLEO_TOOLCHAIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cleo-operator/toolchain}
key=$(cd "$here" && cat build.sh */go.mod */go.sum */*.go 2>/dev/null | sha256sum | cut -c1-16)
bin="$cache_root/$key/bin"
want=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok kwok-stages.yaml helm)

complete() {
  local b
  for b in "${want[@]}"; do [ -s "$bin/$b" ] || return 1; done
}

if complete; then
  echo "$bin"
  exit 0
fi

# One build at a time per cache key: a second caller (another test session, make run in a
# second terminal) waits for the first and then finds the binaries ready.
mkdir -p "$cache_root/$key"
exec 9>"$cache_root/$key/.lock"
flock 9
if complete; then
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { echo "build.sh: Go is required to build the local control plane" >&2; exit 1; }
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly
mkdir -p "$bin.partial"
log() { echo "build.sh: $*" >&2; }

kube_version=$(grep -Eo "k8s.io/kubernetes v[0-9.]+" "$here/kube/go.mod" | head -n1 | cut -d" " -f2)
major=${kube_version#v}; major=${major%%.*}
minor=${kube_version#v*.}; minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

start=$(date +%s)
if [ ! -x "$bin.partial/kube-apiserver" ] || [ ! -x "$bin.partial/kubectl" ]; then
  log "building Kubernetes $kube_version components (the first build takes 15-25 minutes on 2 cores)"
  (cd "$here/kube" && go build -trimpath -ldflags "$ldflags" -o "$bin.partial/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
fi
if [ ! -x "$bin.partial/etcd" ]; then
  log "building etcd"
  (cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$bin.partial/etcd" .)
fi
if [ ! -x "$bin.partial/kwok" ]; then
  log "building kwok"
  (cd "$here/kwok" && go build -trimpath -ldflags "-s -w" -o "$bin.partial/kwok" sigs.k8s.io/kwok/cmd/kwok)
fi
if [ ! -x "$bin.partial/helm" ]; then
  log "building helm"
  # The stamps Helm's own Makefile sets: its version, and the Kubernetes minor its client
  # libraries speak (client-go v0.N is Kubernetes 1.N), which `helm template` and `helm lint`
  # assume for .Capabilities when they are not talking to a cluster.
  helm_version=$(cd "$here/helm" && go list -m -f '{{.Version}}' helm.sh/helm/v3)
  client_go=$(cd "$here/helm" && go list -m -f '{{.Version}}' k8s.io/client-go)
  client_minor=${client_go#v0.}; client_minor=${client_minor%%.*}
  helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version"
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    helm_ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$client_minor"
  done
  (cd "$here/helm" && go build -trimpath -ldflags "$helm_ldflags" -o "$bin.partial/helm" helm.sh/helm/v3/cmd/helm)
fi
# KWOK does nothing without Stage configuration; take the defaults that kwokctl
# uses (node initialize and heartbeat, pod ready, complete and delete) from the very
# module version that was built, so stages and binary always match.
kwok_dir=$(cd "$here/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
stages="$kwok_dir/kustomize/stage"
for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
         pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
  printf -- '---\n'
  cat "$stages/$f"
done > "$bin.partial/kwok-stages.yaml"
rm -rf "$bin"
mv "$bin.partial" "$bin"
complete || { log "build finished but binaries are missing in $bin"; exit 1; }
log "built in $(( $(date +%s) - start ))s"
echo "$bin"
