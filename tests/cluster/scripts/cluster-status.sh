#!/usr/bin/env bash
# Report whether the local cluster is running and healthy; exit 0 only if every part is.
# --quiet: print nothing, only the exit status.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=tests/cluster/scripts/env.sh
source "$HERE/scripts/env.sh"
# shellcheck source=tests/cluster/scripts/lib.sh
source "$HERE/scripts/lib.sh"

quiet=false; [[ "${1:-}" == "--quiet" ]] && quiet=true
say() { $quiet || echo "$@"; }
ok=0
for c in "${COMPONENTS[@]}"; do
  bin=$c
  if pid=$(pid_of "$c" "$bin"); then
    rss=$(awk '/VmRSS/{print $2}' "/proc/$pid/status" 2>/dev/null)
    say "$(printf '%-24s running  pid %-7s rss %6d MiB' "$c" "$pid" $(( ${rss:-0} / 1024 )))"
  else
    say "$(printf '%-24s stopped' "$c")"; ok=1
  fi
done
if (( ok == 0 )); then
  if ! kctl get --raw /readyz >/dev/null 2>&1; then say "kube-apiserver not ready"; ok=1; fi
  ready=$(kctl get node "$KFLOW_NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)
  if [[ "$ready" != "True" ]]; then say "node $KFLOW_NODE_NAME not Ready"; ok=1; fi
  # The DNS is reported, not required: a restarting CoreDNS pod is no reason to restart the cluster.
  if [[ "$KFLOW_SERVICES" == "1" ]]; then
    dns=$(kctl -n kube-system get deployment coredns -o jsonpath='{.status.readyReplicas}' 2>/dev/null)
    say "$(printf '%-24s %s' "cluster DNS" "$( (( ${dns:-0} > 0 )) && echo "ready at $KFLOW_DNS_IP" || echo "NOT ready")")"
  fi
fi
if ! $quiet; then
  total=0
  # Every process of the cluster: the components, the containerd shims and the pods' processes.
  for p in $(cluster_pids | sort -u); do
    r=$(awk '/VmRSS/{print $2}' "/proc/$p/status" 2>/dev/null); total=$(( total + ${r:-0} ))
  done
  echo "total rss of the cluster's processes: $(( total / 1024 )) MiB"
  if (( ok == 0 )); then
    echo "kubernetes $K8S_VERSION, node $KFLOW_NODE_NAME Ready"
    echo "export KUBECONFIG=$KFLOW_CLUSTER_DIR/kubeconfig"
  else
    echo "cluster not (fully) running; logs in $LOG_DIR"
  fi
fi
exit $ok
