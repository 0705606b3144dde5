#!/usr/bin/env bash
# Stop the local cluster and remove every process, mount, network interface, iptables chain and
# cgroup it made.
# Kept for the next start: binaries, image archives, containerd's image store, certificates, logs.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=tests/cluster/scripts/env.sh
source "$HERE/scripts/env.sh"
# shellcheck source=tests/cluster/scripts/lib.sh
source "$HERE/scripts/lib.sh"

take_lock
quiet=false; [[ "${1:-}" == "--quiet" ]] && quiet=true
say() { $quiet || log "$@"; }

stop() { # seconds name...: TERM them together, KILL what is still there after the grace time
  local secs=$1 name pid i alive; shift
  local -A pids=()
  for name in "$@"; do
    if pid=$(pid_of "$name" "$name"); then pids[$name]=$pid; kill -TERM "$pid" 2>/dev/null; fi
  done
  for (( i = 0; i < secs * 10; i++ )); do
    alive=0
    for pid in "${pids[@]}"; do [[ -d /proc/$pid ]] && alive=1; done
    (( alive )) || break
    sleep 0.1
  done
  for name in "${!pids[@]}"; do
    [[ -d /proc/${pids[$name]} ]] && kill -KILL "${pids[$name]}" 2>/dev/null
    say "stopped $name"
  done
  for name in "$@"; do rm -f "$PID_DIR/$name.pid"; done
}

# Control loops first, so nothing recreates what is removed below.
stop 15 kube-scheduler kube-controller-manager kubelet kube-proxy

# Every container of the cluster, sandboxes included; containerd's records of them go too,
# so the next start recovers nothing from this one.
if running containerd; then
  ids=$(ctrd tasks ls -q 2>/dev/null)
  for id in $ids; do ctrd tasks kill -s SIGKILL "$id" >/dev/null 2>&1; done
  for id in $ids; do ctrd tasks delete -f "$id" >/dev/null 2>&1; done
  for id in $(ctrd containers ls -q 2>/dev/null); do ctrd containers delete "$id" >/dev/null 2>&1; done
fi
# Processes still in the pods' cgroups (a container whose shim died) are killed by cgroup.
CG_ROOT=$(cgroup_root)
for h in $(cgroup_hierarchies); do
  [[ -d "$h$CG_ROOT" ]] || continue
  find "$h$CG_ROOT" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -KILL 2>/dev/null
done
stop 10 containerd
for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $CTRD_SOCK"); do kill -KILL "$pid" 2>/dev/null; done
stop 10 kube-apiserver
stop 10 etcd

# Mounts: container root file systems, pod volumes (tmpfs), network namespace handles.
for (( i = 0; i < 3; i++ )); do
  mapfile -t mounts < <(awk -v a="$KFLOW_RUN_DIR" -v b="$KFLOW_CLUSTER_DIR" \
    'index($2, a"/") == 1 || $2 == a || index($2, b"/") == 1 {print $2}' /proc/self/mounts | sort -r)
  (( ${#mounts[@]} == 0 )) && break
  for m in "${mounts[@]}"; do
    m=$(printf '%b' "$m")
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
  done
done

# Network: the pods' veth ends vanish with their namespaces; the bridge goes here.
for dev in $(ip -o link show master "$KFLOW_BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
  ip link delete "$dev" 2>/dev/null
done
if ip link show "$KFLOW_BRIDGE" >/dev/null 2>&1; then
  ip link delete "$KFLOW_BRIDGE" && say "removed bridge $KFLOW_BRIDGE"
fi
# This instance's egress chain (raw table), with the jump into it.
for ipt in iptables ip6tables; do
  command -v $ipt >/dev/null || continue
  while $ipt -w -t raw -D PREROUTING -j "$KFLOW_EGRESS_CHAIN" 2>/dev/null; do :; done
  if $ipt -w -t raw -F "$KFLOW_EGRESS_CHAIN" 2>/dev/null; then
    $ipt -w -t raw -X "$KFLOW_EGRESS_CHAIN" && say "removed $ipt chain $KFLOW_EGRESS_CHAIN"
  fi
done
# The chains of the kubelet (its canaries, the rule that drops non-local traffic to
# 127.0.0.0/8) and of kube-proxy (Services, endpoints, masquerading marks), with the jumps
# into them. They are shared by every kubelet and kube-proxy on the host, so they stay while
# another one (a second local cluster) runs.
if ! pgrep -x kubelet >/dev/null && ! pgrep -x kube-proxy >/dev/null; then
  # kube-proxy knows its own rules (iptables of both families, and its nftables table).
  [[ -x "$KFLOW_BIN_DIR/kube-proxy" ]] && "$KFLOW_BIN_DIR/kube-proxy" --cleanup >/dev/null 2>&1
  # Whatever is left (the kubelet's chains, an older kube-proxy's): jumps from the built-in
  # chains go first, then every KUBE-* chain is emptied, then deleted.
  for ipt in iptables ip6tables; do
    command -v $ipt >/dev/null || continue
    for t in filter nat mangle raw; do
      rules=$($ipt -w -t "$t" -S 2>/dev/null) || continue
      chains=$(awk '$1 == "-N" && $2 ~ /^KUBE-/ {print $2}' <<< "$rules")
      [[ -n "$chains" ]] || continue
      awk '$1 == "-A" && $2 !~ /^KUBE-/ {for (i = 1; i <= NF; i++) if ($i == "-j" && $(i+1) ~ /^KUBE-/) {print; next}}' <<< "$rules" |
        while read -r rule; do
          # shellcheck disable=SC2086
          eval "$ipt -w -t $t ${rule/-A /-D }" 2>/dev/null
        done
      for c in $chains; do $ipt -w -t "$t" -F "$c" 2>/dev/null; done
      for c in $chains; do $ipt -w -t "$t" -X "$c" 2>/dev/null; done
    done
  done
  # The host-wide settings go back to what they were before the first instance started.
  if [[ -f "$SYSCTL_SAVED" ]]; then
    while IFS='=' read -r k v; do [[ -n "$k" ]] && sysctl -qw "$k=$v"; done < "$SYSCTL_SAVED"
    rm -f "$SYSCTL_SAVED"
  fi
fi

# Cgroups the kubelet and runc made under our root, then the levels cluster-up created.
for h in $(cgroup_hierarchies); do
  [[ -d "$h$CG_ROOT" ]] || continue
  find "$h$CG_ROOT" -mindepth 1 -depth -type d -exec rmdir {} \; 2>/dev/null
done
if [[ -f "$KFLOW_RUN_DIR/cgroups-created" ]]; then
  tac "$KFLOW_RUN_DIR/cgroups-created" | while read -r d; do rmdir "$d" 2>/dev/null; done
else
  for h in $(cgroup_hierarchies); do rmdir "$h$CG_ROOT" 2>/dev/null; done
fi

# The kubelet links each container's log into /var/log/containers; ours point into our dir.
if [[ -d /var/log/containers ]]; then
  find /var/log/containers -maxdepth 1 -type l -lname "$KFLOW_CLUSTER_DIR/*" -delete 2>/dev/null
fi
rm -rf "$KFLOW_CLUSTER_DIR/kubelet/pod-logs"

rm -rf "$KFLOW_RUN_DIR"
say "cluster down"
exit 0
