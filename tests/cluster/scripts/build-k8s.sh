#!/usr/bin/env bash
# Build the Kubernetes binaries for the local cluster once and cache them outside the repo.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=tests/cluster/scripts/env.sh
source "$HERE/scripts/env.sh"

if [[ -x "$KFLOW_BIN_DIR/kubelet" && -f "$KFLOW_BIN_DIR/.complete" ]]; then
  echo "kubernetes $K8S_VERSION binaries cached in $KFLOW_BIN_DIR"
  exit 0
fi

command -v go >/dev/null || export PATH="/usr/local/go/bin:$PATH"
mkdir -p "$KFLOW_BIN_DIR.tmp"
minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done

echo "building kubernetes $K8S_VERSION into $KFLOW_BIN_DIR (this takes a while the first time)"
start=$(date +%s)
cd "$HERE/k8s"
# One invocation so the packages shared by all commands compile once.
GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
  go build -trimpath -ldflags "$ldflags" -o "$KFLOW_BIN_DIR.tmp/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubelet \
  k8s.io/kubernetes/cmd/kubectl
elapsed=$(( $(date +%s) - start ))
rm -rf "$KFLOW_BIN_DIR"
mv "$KFLOW_BIN_DIR.tmp" "$KFLOW_BIN_DIR"
echo "$elapsed" > "$KFLOW_BIN_DIR/.build-seconds"
touch "$KFLOW_BIN_DIR/.complete"
echo "built kubernetes $K8S_VERSION in ${elapsed}s"
