#!/usr/bin/env bash
# Build the Kubernetes binaries for the local cluster once and cache them outside the repo.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=tests/cluster/scripts/env.sh
source "$HERE/scripts/env.sh"

# Every command the cluster runs. A cache made before one was added here keeps what it has:
# only the missing commands are built and put next to the others.
CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl kube-proxy)
missing=()
if [[ -f "$KFLOW_BIN_DIR/.complete" ]]; then
  for c in "${CMDS[@]}"; do [[ -x "$KFLOW_BIN_DIR/$c" ]] || missing+=("$c"); done
else
  missing=("${CMDS[@]}")
fi
if (( ${#missing[@]} == 0 )); then
  echo "kubernetes $K8S_VERSION binaries cached in $KFLOW_BIN_DIR"
  exit 0
fi

command -v go >/dev/null || export PATH="/usr/local/go/bin:$PATH"
minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done

echo "building kubernetes $K8S_VERSION (${missing[*]}) into $KFLOW_BIN_DIR (this takes a while the first time)"
start=$(date +%s)
rm -rf "$KFLOW_BIN_DIR.tmp"; mkdir -p "$KFLOW_BIN_DIR.tmp"
pkgs=()
for c in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
cd "$HERE/k8s"
# One invocation so the packages shared by all commands compile once.
GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
  go build -trimpath -ldflags "$ldflags" -o "$KFLOW_BIN_DIR.tmp/" "${pkgs[@]}"
elapsed=$(( $(date +%s) - start ))
if (( ${#missing[@]} == ${#CMDS[@]} )); then
  rm -rf "$KFLOW_BIN_DIR"
  mv "$KFLOW_BIN_DIR.tmp" "$KFLOW_BIN_DIR"
  echo "$elapsed" > "$KFLOW_BIN_DIR/.build-seconds"
else
  for c in "${missing[@]}"; do mv "$KFLOW_BIN_DIR.tmp/$c" "$KFLOW_BIN_DIR/$c"; done
  rm -rf "$KFLOW_BIN_DIR.tmp"
  echo "$elapsed" > "$KFLOW_BIN_DIR/.build-seconds-$(IFS=-; echo "${missing[*]}")"
fi
touch "$KFLOW_BIN_DIR/.complete"
echo "built kubernetes $K8S_VERSION (${missing[*]}) in ${elapsed}s"
