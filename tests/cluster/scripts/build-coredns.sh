#!/usr/bin/env bash
# Build the cluster's DNS server (CoreDNS, Go module in coredns/) once and cache it outside the repo.
# Prints nothing but progress; the binary ends up at $KFLOW_COREDNS_DIR/coredns.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=tests/cluster/scripts/env.sh
source "$HERE/scripts/env.sh"

out="$KFLOW_COREDNS_DIR"
if [[ -x "$out/coredns" && -f "$out/.complete" ]]; then
  echo "coredns $COREDNS_VERSION cached in $out"
  exit 0
fi
command -v go >/dev/null || export PATH="/usr/local/go/bin:$PATH"
echo "building coredns $COREDNS_VERSION into $out"
start=$(date +%s)
rm -rf "$out.tmp"; mkdir -p "$out.tmp"
cd "$HERE/coredns"
# Static, like the pause binary: the image holds nothing else.
GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
  go build -trimpath -ldflags "-s -w" -o "$out.tmp/coredns" .
elapsed=$(( $(date +%s) - start ))
echo "$elapsed" > "$out.tmp/.build-seconds"
touch "$out.tmp/.complete"
rm -rf "$out"; mv "$out.tmp" "$out"
# Builds of an older version or plugin list are superseded.
find "$KFLOW_CACHE_DIR" -maxdepth 1 -type d -name 'coredns-*' ! -name "$(basename "$out")" \
  ! -name '*.tmp' -exec rm -rf {} +
echo "built coredns $COREDNS_VERSION in ${elapsed}s"
