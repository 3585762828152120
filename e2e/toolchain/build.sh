#!/usr/bin/env bash
# Builds the local toolchain and prints the folder that holds its binaries: the control plane
# (etcd, Kubernetes, KWOK) and the programs the tests start beside it (Helm, ...).
#
# Every directory beside this script is one component: its pinned inputs (go.mod and go.sum,
# or package.json and package-lock.json) and a `build` recipe, run with bash in that directory
# with $OUT set to the (empty) folder for its output. Each component is cached on its own,
#   ${CLEO_TOOLCHAIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cleo-operator/toolchain}/components/<name>-<key>/
# where <key> hashes this script and every file of the component's directory. So a new
# component, or a new version of one, builds only that component: the Kubernetes build takes
# 15-25 minutes on 2 cores and is not redone for a change elsewhere. The printed folder,
# <cache>/<combined key>/bin, holds links to every component's files.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache_root=${CLEO_TOOLCHAIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cleo-operator/toolchain}
log() { echo "build.sh: $*" >&2; }

component_key() {
  (cd "$here" && cat build.sh && find "$1" -type f -print0 | LC_ALL=C sort -z | xargs -0 cat) \
    | sha256sum | cut -c1-16
}

build_component() {
  local name=$1 out=$2 start
  # One build at a time per component: a second caller (another test session, make run in a
  # second terminal) waits for the first and then finds the output ready.
  mkdir -p "$cache_root/components"
  exec 9>"$out.lock"
  flock 9
  if [ ! -e "$out/.done" ]; then
    if [ -f "$here/$name/go.mod" ] && ! command -v go >/dev/null; then
      log "Go is required to build $name"; exit 1
    fi
    log "building $name"
    start=$(date +%s)
    rm -rf "$out.partial"
    mkdir -p "$out.partial"
    (
      cd "$here/$name"
      export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false" OUT="$out.partial"
      bash ./build
    ) || { log "building $name failed"; exit 1; }
    [ -n "$(ls -A "$out.partial")" ] || { log "$name built nothing"; exit 1; }
    touch "$out.partial/.done"
    rm -rf "$out"
    mv "$out.partial" "$out"
    log "built $name in $(( $(date +%s) - start ))s"
  fi
  exec 9>&-
}

names=()
for dir in "$here"/*/; do
  [ -f "$dir/build" ] && names+=("$(basename "$dir")")
done
outs=()
for name in "${names[@]}"; do
  out="$cache_root/components/$name-$(component_key "$name")"
  [ -e "$out/.done" ] || build_component "$name" "$out"
  outs+=("$out")
done

combined=$(printf '%s\n' "${outs[@]}" | sha256sum | cut -c1-16)
bin="$cache_root/$combined/bin"
if [ ! -e "$bin/.done" ]; then
  mkdir -p "$cache_root/$combined"
  exec 9>"$cache_root/$combined/.lock"
  flock 9
fi
if [ ! -e "$bin/.done" ]; then
  rm -rf "$bin.partial"
  mkdir -p "$bin.partial"
  for out in "${outs[@]}"; do
    for f in "$out"/*; do ln -sfn "$f" "$bin.partial/$(basename "$f")"; done
  done
  touch "$bin.partial/.done"
  rm -rf "$bin"
  mv "$bin.partial" "$bin"
fi
echo "$bin"
