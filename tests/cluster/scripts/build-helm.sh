#!/usr/bin/env bash
# Build the helm binary from the Go module proxy once and cache it outside the repo; prints its path.
# Helm 3.18 is built on the same k8s.io v0.33 modules as the local cluster, already in the
# module cache after `make cluster-build`.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=tests/cluster/scripts/env.sh
source "$HERE/scripts/env.sh"

HELM_VERSION="${HELM_VERSION:-v3.18.6}"
HELM_DIR="$KFLOW_CACHE_DIR/helm-$HELM_VERSION"
if [[ -x "$HELM_DIR/helm" && -f "$HELM_DIR/.complete" ]]; then
  echo "$HELM_DIR/helm"
  exit 0
fi

command -v go >/dev/null || export PATH="/usr/local/go/bin:$PATH"
mkdir -p "$HELM_DIR"
start=$(date +%s)
GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOBIN="$HELM_DIR" \
  go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
  "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
echo "$(( $(date +%s) - start ))" > "$HELM_DIR/.build-seconds"
touch "$HELM_DIR/.complete"
echo "$HELM_DIR/helm"
