# Shared settings for the local cluster scripts; sourced, never run.
# shellcheck shell=bash
K8S_VERSION="${K8S_VERSION:-v1.33.13}"
KFLOW_CACHE_DIR="${KFLOW_CACHE_DIR:-$HOME/.cache/kflow}"
KFLOW_CLUSTER_DIR="${KFLOW_CLUSTER_DIR:-/var/lib/kflow-cluster}"
KFLOW_BIN_DIR="$KFLOW_CACHE_DIR/k8s-$K8S_VERSION"
# Runtime state (sockets, network namespaces, pod mounts) lives apart from the persistent image store.
KFLOW_RUN_DIR="${KFLOW_RUN_DIR:-/run/kflow-cluster}"
# The node is named by its loopback address, so the kubelet reports 127.0.0.1 as the node address.
KFLOW_NODE_NAME="${KFLOW_NODE_NAME:-127.0.0.1}"
KFLOW_BRIDGE="${KFLOW_BRIDGE:-kflow0}"
KFLOW_POD_CIDR="${KFLOW_POD_CIDR:-10.244.0.0/24}"
KFLOW_SERVICE_CIDR="${KFLOW_SERVICE_CIDR:-10.96.0.0/24}"
KFLOW_API_PORT="${KFLOW_API_PORT:-6443}"
# Not 2379: Debian's etcd-server package may start a system etcd there.
KFLOW_ETCD_PORT="${KFLOW_ETCD_PORT:-12379}"
KFLOW_KUBELET_PORT="${KFLOW_KUBELET_PORT:-10250}"
KFLOW_KUBELET_HEALTHZ_PORT="${KFLOW_KUBELET_HEALTHZ_PORT:-10248}"
KFLOW_CONTROLLER_PORT="${KFLOW_CONTROLLER_PORT:-10257}"
KFLOW_SCHEDULER_PORT="${KFLOW_SCHEDULER_PORT:-10259}"
# CoreDNS: the version is the one coredns/go.mod requires; the cache dir also carries a hash of
# the module and its main, so changing the plugin list or the version builds it again.
COREDNS_VERSION=$(awk '$1 == "require" && $2 == "github.com/coredns/coredns" {print $3}' \
  "$(dirname "${BASH_SOURCE[0]}")/../coredns/go.mod")
KFLOW_COREDNS_DIR="$KFLOW_CACHE_DIR/coredns-$COREDNS_VERSION-$(cat "$(dirname "${BASH_SOURCE[0]}")"/../coredns/{go.mod,go.sum,main.go} | sha256sum | cut -c1-12)"
# Service network: kube-proxy and the cluster DNS (CoreDNS). 0 leaves both out; a second
# instance on the same host needs that, as kube-proxy's iptables chains are host-wide.
KFLOW_SERVICES="${KFLOW_SERVICES:-1}"
# The cluster DNS Service address (kubelet clusterDNS), inside the Service range.
KFLOW_DNS_IP="${KFLOW_DNS_IP:-10.96.0.10}"
KFLOW_PROXY_HEALTHZ_PORT="${KFLOW_PROXY_HEALTHZ_PORT:-10256}"
KFLOW_PROXY_METRICS_PORT="${KFLOW_PROXY_METRICS_PORT:-10249}"
# The bridge's own address, the first of the pod range: the pods' gateway and the address
# the API server advertises for the `kubernetes` Service.
_pod_net=${KFLOW_POD_CIDR%/*}
KFLOW_BRIDGE_IP="${KFLOW_BRIDGE_IP:-${_pod_net%.*}.$(( ${_pod_net##*.} + 1 ))}"
unset _pod_net
# The instance's own raw-table chain: drops what pods send anywhere but this machine.
KFLOW_EGRESS_CHAIN="KFLOW-EGRESS-$KFLOW_BRIDGE"
# Name of the cgroup (under the caller's memory cgroup) that holds the pods.
KFLOW_CGROUP_NAME="${KFLOW_CGROUP_NAME:-kflow}"
export KFLOW_KUBELET_PORT KFLOW_KUBELET_HEALTHZ_PORT KFLOW_CONTROLLER_PORT KFLOW_SCHEDULER_PORT \
  KFLOW_CGROUP_NAME
export COREDNS_VERSION KFLOW_COREDNS_DIR KFLOW_DNS_IP KFLOW_SERVICES KFLOW_PROXY_HEALTHZ_PORT \
  KFLOW_PROXY_METRICS_PORT KFLOW_BRIDGE_IP KFLOW_EGRESS_CHAIN
export K8S_VERSION KFLOW_CACHE_DIR KFLOW_CLUSTER_DIR KFLOW_BIN_DIR KFLOW_RUN_DIR KFLOW_NODE_NAME \
  KFLOW_BRIDGE KFLOW_POD_CIDR KFLOW_SERVICE_CIDR KFLOW_API_PORT KFLOW_ETCD_PORT
