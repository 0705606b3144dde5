#!/usr/bin/env bash
# Import the cached image archives into the cluster's containerd (namespace k8s.io) when they changed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=tests/cluster/scripts/env.sh
source "$HERE/scripts/env.sh"
# shellcheck source=tests/cluster/scripts/lib.sh
source "$HERE/scripts/lib.sh"

take_lock
IMG_DIR="$KFLOW_CACHE_DIR/images"
ctrd version >/dev/null 2>&1 || die "containerd of the cluster is not running (make cluster-up)"
for link in "$IMG_DIR"/current-*.tar; do
  [[ -e "$link" ]] || continue
  name=$(basename "$link" .tar); name=${name#current-}
  case $name in pause) ref="localhost/kflow-pause:1" ;; coredns) ref="localhost/kflow-coredns:$COREDNS_VERSION" ;; *) ref="localhost/kflow-$name:dev" ;; esac
  archive=$(readlink -f "$link")
  marker="$KFLOW_CLUSTER_DIR/containerd/imported-$name"
  if [[ -f "$marker" && "$(<"$marker")" == "$archive" ]] && [[ -n "$(ctrd images ls -q "name==$ref")" ]]; then
    continue
  fi
  log "importing $ref from $archive"
  ctrd images import --no-unpack=false "$archive" >/dev/null
  [[ -n "$(ctrd images ls -q "name==$ref")" ]] || die "importing $archive did not create $ref"
  echo "$archive" > "$marker"
done
