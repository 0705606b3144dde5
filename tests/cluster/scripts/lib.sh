# Helpers shared by cluster-up/down/status; sourced, never run.
# shellcheck shell=bash
PID_DIR="$KFLOW_RUN_DIR/pids"
LOG_DIR="$KFLOW_CLUSTER_DIR/logs"
PKI="$KFLOW_CLUSTER_DIR/pki"
CTRD_SOCK="$KFLOW_RUN_DIR/containerd/containerd.sock"
# Components in start order; cluster-down stops them in reverse.
COMPONENTS=(etcd containerd kube-apiserver kube-controller-manager kube-scheduler kubelet)
[[ "$KFLOW_SERVICES" == "1" ]] && COMPONENTS+=(kube-proxy)

log() { echo "[cluster] $*"; }
die() { echo "[cluster] error: $*" >&2; exit 1; }

pid_of() {
  local f="$PID_DIR/$1.pid" pid
  [[ -f "$f" ]] || return 1
  pid=$(<"$f")
  [[ -n "$pid" && -d "/proc/$pid" ]] || return 1
  # A recycled pid must not be taken for ours: compare the executable name.
  [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$(basename "$2" | cut -c1-15)" ]] || return 1
  echo "$pid"
}

running() { pid_of "$1" "${2:-$1}" >/dev/null; }

kctl() { "$KFLOW_BIN_DIR/kubectl" --kubeconfig "$KFLOW_CLUSTER_DIR/kubeconfig" "$@"; }

ctrd() { ctr --address "$CTRD_SOCK" -n k8s.io "$@"; }

# The cgroup every pod lives under: nested in our own memory cgroup so the cluster stays
# accounted to whoever started it, created in every v1 hierarchy the kubelet uses.
cgroup_root() {
  local memcg
  # cluster-down may run from another cgroup than cluster-up: use what cluster-up recorded.
  if [[ -f "$KFLOW_RUN_DIR/cgroup-root" ]]; then cat "$KFLOW_RUN_DIR/cgroup-root"; return; fi
  memcg=$(awk -F: '$2=="memory"{print $3}' /proc/self/cgroup)
  [[ -z "$memcg" ]] && memcg=/
  echo "${memcg%/}/$KFLOW_CGROUP_NAME"
}

cgroup_hierarchies() {
  local d
  for d in /sys/fs/cgroup/*; do
    [[ -d "$d" && ! -L "$d" ]] || continue
    [[ -f "$d/cgroup.procs" ]] && echo "$d"
  done
}

# Pids of everything the cluster runs: components, containerd shims of our socket, and the
# processes inside the pods' cgroups.
cluster_pids() {
  local c pid
  for c in "${COMPONENTS[@]}"; do pid_of "$c" "$c" || true; done
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $CTRD_SOCK" || true); do echo "$pid"; done
  local cg
  cg=$(cgroup_root)
  [[ -d "/sys/fs/cgroup/pids$cg" ]] && find "/sys/fs/cgroup/pids$cg" -name cgroup.procs -exec cat {} + 2>/dev/null
  true
}

# One cluster operation at a time (two test sessions may start together); scripts that
# call each other inherit the lock through KFLOW_CLUSTER_LOCKED.
take_lock() {
  [[ "${KFLOW_CLUSTER_LOCKED:-}" == "1" ]] && return
  mkdir -p "$KFLOW_CLUSTER_DIR"
  exec 9>"$KFLOW_CLUSTER_DIR/.lock"
  flock -w 3600 9 || die "another cluster operation holds $KFLOW_CLUSTER_DIR/.lock"
  export KFLOW_CLUSTER_LOCKED=1
}

# Host-wide network settings the cluster changes, with their values from before the first
# instance started; the last instance to stop puts them back.
SYSCTL_SAVED=/run/kflow-cluster-sysctls
NET_SYSCTLS=(net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables)
