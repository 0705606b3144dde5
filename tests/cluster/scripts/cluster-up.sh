#!/usr/bin/env bash
# Start the local cluster: etcd, containerd, kube-apiserver, controller-manager, scheduler, kubelet,
# kube-proxy and the cluster DNS (CoreDNS).
# Reuses a running cluster; builds (or takes from the cache) binaries and images first.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=tests/cluster/scripts/env.sh
source "$HERE/scripts/env.sh"
# shellcheck source=tests/cluster/scripts/lib.sh
source "$HERE/scripts/lib.sh"

take_lock
[[ $EUID -eq 0 ]] || die "the local cluster needs root (kubelet, containerd, mounts); run as root"
for cmd in etcd containerd containerd-shim-runc-v2 runc ctr openssl iptables ip buildah debootstrap gcc curl; do
  command -v "$cmd" >/dev/null || die "$cmd not found; install the packages listed in tests/cluster/README.md"
done
[[ -x /usr/lib/cni/bridge ]] || die "/usr/lib/cni/bridge not found; apt-get install containernetworking-plugins"
IMAGES=(pause runner)
[[ "$KFLOW_SERVICES" == "1" ]] && IMAGES+=(coredns)

if bash "$HERE/scripts/cluster-status.sh" --quiet; then
  bash "$HERE/scripts/build-images.sh" "${IMAGES[@]}"
  bash "$HERE/scripts/import-images.sh"
  [[ "$KFLOW_SERVICES" == "1" ]] && bash "$HERE/scripts/cluster-dns.sh" apply
  log "already running"
  echo "export KUBECONFIG=$KFLOW_CLUSTER_DIR/kubeconfig"
  exit 0
fi
# Whatever a crashed run left behind goes first, so this start is clean.
bash "$HERE/scripts/cluster-down.sh" --quiet

bash "$HERE/scripts/build-k8s.sh"
bash "$HERE/scripts/build-images.sh" "${IMAGES[@]}"

START=$(date +%s.%N)
mkdir -p "$PID_DIR" "$LOG_DIR/previous" "$KFLOW_RUN_DIR" "$KFLOW_CLUSTER_DIR"
# The logs of the previous run stay readable (a failed start is often explained there).
rm -f "$LOG_DIR"/previous/*.log
for f in "$LOG_DIR"/*.log; do [[ -e "$f" ]] && mv "$f" "$LOG_DIR/previous/"; done
B="$KFLOW_BIN_DIR"
NODE="$KFLOW_NODE_NAME"
API="https://127.0.0.1:$KFLOW_API_PORT"

# ---------------------------------------------------------------- certificates
# Made once and kept, so a kubeconfig handed out earlier stays valid across restarts.
cert() { # name CN O SANs(comma list or "") usage(server|client|both)
  local name=$1 cn=$2 org=$3 sans=$4 usage=$5 ext
  [[ -f "$PKI/$name.crt" ]] && return
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/$name.key" 2>/dev/null
  local subj="/CN=$cn"; [[ -n "$org" ]] && subj="/O=$org$subj"
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  case $usage in
    server) ext="extendedKeyUsage=serverAuth" ;;
    client) ext="extendedKeyUsage=clientAuth" ;;
    both) ext="extendedKeyUsage=serverAuth,clientAuth" ;;
  esac
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "$ext"
    [[ -n "$sans" ]] && echo "subjectAltName=$sans"
  } > "$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}
# A new node name makes a new CA and all; a certificate added later, or new addresses for the
# API server, only make what is missing, so the CA and the admin kubeconfig stay.
if [[ ! -f "$PKI/.complete" || "$(cat "$PKI/.complete")" != "$NODE" ]]; then
  rm -rf "$PKI"; mkdir -p "$PKI"; chmod 700 "$PKI"
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=kflow-local-ca" -days 3650 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out "$PKI/ca.crt" 2>/dev/null
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/sa.key" 2>/dev/null
  openssl ec -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  echo "$NODE" > "$PKI/.complete"
fi
# Pods reach the API server at the bridge address (the `kubernetes` Service's endpoint) and
# by the Service's address and names.
API_SANS="IP:127.0.0.1,IP:$KFLOW_BRIDGE_IP,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
if [[ "$(cat "$PKI/apiserver.sans" 2>/dev/null)" != "$API_SANS" ]]; then
  rm -f "$PKI/apiserver.crt" "$PKI/apiserver.key"
  echo "$API_SANS" > "$PKI/apiserver.sans"
fi
cert apiserver kube-apiserver "" "$API_SANS" server
cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters "" client
cert admin kflow-admin system:masters "" client
cert controller-manager system:kube-controller-manager "" "" client
cert scheduler system:kube-scheduler "" "" client
cert kube-proxy system:kube-proxy "" "" client
cert kubelet "system:node:$NODE" system:nodes "" client
node_san="DNS:$NODE"
[[ "$NODE" =~ ^[0-9.]+$ ]] && node_san="IP:$NODE"
cert kubelet-serving "system:node:$NODE" system:nodes "IP:127.0.0.1,DNS:localhost,$node_san" server

kubeconfig() { # file user cert
  local file=$1 user=$2 crt=$3
  cat > "$file" <<KCFG
apiVersion: v1
kind: Config
clusters:
- name: kflow-local
  cluster:
    server: $API
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$crt.crt")
    client-key-data: $(base64 -w0 "$PKI/$crt.key")
contexts:
- name: kflow-local
  context: {cluster: kflow-local, user: $user}
current-context: kflow-local
KCFG
  chmod 600 "$file"
}
kubeconfig "$KFLOW_CLUSTER_DIR/kubeconfig" kflow-admin admin
kubeconfig "$PKI/controller-manager.kubeconfig" system:kube-controller-manager controller-manager
kubeconfig "$PKI/scheduler.kubeconfig" system:kube-scheduler scheduler
kubeconfig "$PKI/kubelet.kubeconfig" "system:node:$NODE" kubelet
kubeconfig "$PKI/kube-proxy.kubeconfig" system:kube-proxy kube-proxy

start() { # name binary args...
  local name=$1; shift
  # setsid: the component outlives the shell (and make) that started it; it must not keep
  # the lock's descriptor either.
  setsid "$@" >>"$LOG_DIR/$name.log" 2>&1 < /dev/null 9>&- &
  echo $! > "$PID_DIR/$name.pid"
}

wait_for() { # what seconds command...
  local what=$1 secs=$2; shift 2
  local deadline=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    if (( $(date +%s) > deadline )); then
      echo "[cluster] $what not ready after ${secs}s; last log lines:" >&2
      tail -n 30 "$LOG_DIR/$what.log" >&2 || true
      exit 1
    fi
    sleep 0.3
  done
}

# ---------------------------------------------------------------- etcd
# A fresh cluster on every start: no pods or objects from an earlier session come back.
rm -rf "$KFLOW_CLUSTER_DIR/etcd"
start etcd etcd --name kflow --data-dir "$KFLOW_CLUSTER_DIR/etcd" \
  --listen-client-urls "http://127.0.0.1:$KFLOW_ETCD_PORT" \
  --advertise-client-urls "http://127.0.0.1:$KFLOW_ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$((KFLOW_ETCD_PORT + 1))" \
  --initial-advertise-peer-urls "http://127.0.0.1:$((KFLOW_ETCD_PORT + 1))" \
  --initial-cluster "kflow=http://127.0.0.1:$((KFLOW_ETCD_PORT + 1))" \
  --quota-backend-bytes 1073741824 --snapshot-count 10000 \
  --auto-compaction-retention 1 --unsafe-no-fsync

# ---------------------------------------------------------------- containerd
mkdir -p "$KFLOW_CLUSTER_DIR/cni/net.d" "$KFLOW_RUN_DIR/containerd" "$KFLOW_CLUSTER_DIR/containerd"
cat > "$KFLOW_CLUSTER_DIR/cni/net.d/10-kflow.conflist" <<CNI
{
  "cniVersion": "1.0.0",
  "name": "kflow",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$KFLOW_BRIDGE",
      "isGateway": true,
      "isDefaultGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$KFLOW_POD_CIDR", "gateway": "$KFLOW_BRIDGE_IP"}]],
        "dataDir": "$KFLOW_RUN_DIR/cni/ipam"
      }
    }
  ]
}
CNI
# The bridge carries the first address of the pod range: the pods' gateway to the Service
# network and to the API server. Nothing routes further: see the egress chain below.
if ! ip link show "$KFLOW_BRIDGE" >/dev/null 2>&1; then
  ip link add "$KFLOW_BRIDGE" type bridge
  sysctl -qw "net.ipv6.conf.$KFLOW_BRIDGE.disable_ipv6=1" || true
fi
ip addr replace "$KFLOW_BRIDGE_IP/${KFLOW_POD_CIDR#*/}" dev "$KFLOW_BRIDGE"
ip link set "$KFLOW_BRIDGE" up
if [[ "$KFLOW_SERVICES" == "1" ]]; then
  # Service addresses are on the bridge's side too, so the host's own connections to them never
  # take the default route; kube-proxy rewrites them to a pod or the API server on the way.
  ip route replace "$KFLOW_SERVICE_CIDR" dev "$KFLOW_BRIDGE" src "$KFLOW_BRIDGE_IP"
fi
# Forwarding between pods and Services needs these (kube-proxy rewrites addresses at layer 3,
# also for packets bridged between two pods); their values before are kept for cluster-down.
[[ -d /proc/sys/net/bridge ]] || modprobe br_netfilter 2>/dev/null || true
[[ -d /proc/sys/net/bridge ]] || die "bridge netfilter is missing (modprobe br_netfilter)"
if [[ ! -f "$SYSCTL_SAVED" ]]; then
  for k in "${NET_SYSCTLS[@]}"; do echo "$k=$(sysctl -n "$k")"; done > "$SYSCTL_SAVED.tmp"
  mv "$SYSCTL_SAVED.tmp" "$SYSCTL_SAVED"
fi
for k in "${NET_SYSCTLS[@]}"; do sysctl -qw "$k=1"; done

# The egress rule: in the raw table, before kube-proxy's address rewriting, anything a pod
# sends that is not for a pod, a Service or loopback is dropped, so a pod reaches nothing
# off this machine (there is no masquerading either). The chain also keeps outside hosts
# from reaching the pods and this instance's API server port (which listens on every address
# so that pods reach it at the bridge address and the host at 127.0.0.1).
IPTS=(iptables)
[[ -e /proc/net/if_inet6 ]] && IPTS+=(ip6tables)
for ipt in "${IPTS[@]}"; do
  $ipt -w -t raw -N "$KFLOW_EGRESS_CHAIN" 2>/dev/null || $ipt -w -t raw -F "$KFLOW_EGRESS_CHAIN"
  $ipt -w -t raw -C PREROUTING -j "$KFLOW_EGRESS_CHAIN" 2>/dev/null ||
    $ipt -w -t raw -I PREROUTING 1 -j "$KFLOW_EGRESS_CHAIN"
  $ipt -w -t raw -A "$KFLOW_EGRESS_CHAIN" -i lo -j RETURN
done
E=(iptables -w -t raw -A "$KFLOW_EGRESS_CHAIN")
"${E[@]}" -s "$KFLOW_POD_CIDR" -d "$KFLOW_POD_CIDR" -j RETURN
# Without our own kube-proxy the Service range would be another instance's: not ours to reach.
[[ "$KFLOW_SERVICES" == "1" ]] && "${E[@]}" -s "$KFLOW_POD_CIDR" -d "$KFLOW_SERVICE_CIDR" -j RETURN
"${E[@]}" -s "$KFLOW_POD_CIDR" -d 127.0.0.0/8 -j RETURN
"${E[@]}" -s "$KFLOW_POD_CIDR" -m comment --comment "kflow: pods reach only this machine" -j DROP
"${E[@]}" ! -i "$KFLOW_BRIDGE" -d "$KFLOW_POD_CIDR" -j DROP
"${E[@]}" ! -i "$KFLOW_BRIDGE" -p tcp --dport "$KFLOW_API_PORT" -m addrtype --dst-type LOCAL -j DROP
[[ -e /proc/net/if_inet6 ]] && ip6tables -w -t raw -A "$KFLOW_EGRESS_CHAIN" -p tcp --dport "$KFLOW_API_PORT" -j DROP
cat > "$KFLOW_CLUSTER_DIR/containerd/config.toml" <<TOML
version = 2
root = "$KFLOW_CLUSTER_DIR/containerd/root"
state = "$KFLOW_RUN_DIR/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$CTRD_SOCK"
[ttrpc]
  address = "$KFLOW_RUN_DIR/containerd/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$KFLOW_CLUSTER_DIR/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/kflow-pause:1"
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  # This machine withholds CAP_SYS_RESOURCE, so no process may lower its OOM score; containerd
  # then keeps each pod's score at or above its own instead of failing to start the sandbox.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$KFLOW_RUN_DIR/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$KFLOW_CLUSTER_DIR/cni/net.d"
    max_conf_num = 1
TOML
start containerd containerd --config "$KFLOW_CLUSTER_DIR/containerd/config.toml"

# ---------------------------------------------------------------- kube-apiserver
wait_for etcd 30 curl -fsS "http://127.0.0.1:$KFLOW_ETCD_PORT/health"
start kube-apiserver "$B/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$KFLOW_ETCD_PORT" \
  --bind-address 0.0.0.0 --advertise-address "$KFLOW_BRIDGE_IP" --secure-port "$KFLOW_API_PORT" \
  --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
  --client-ca-file "$PKI/ca.crt" \
  --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
  --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority "$PKI/ca.crt" \
  --kubelet-preferred-address-types InternalIP,Hostname \
  --service-account-key-file "$PKI/sa.pub" \
  --service-account-signing-key-file "$PKI/sa.key" \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-cluster-ip-range "$KFLOW_SERVICE_CIDR" \
  --authorization-mode Node,RBAC \
  --enable-admission-plugins NodeRestriction \
  --allow-privileged=true --profiling=false --v=1

# Images go into containerd while the API server starts.
wait_for containerd 30 ctrd version
bash "$HERE/scripts/import-images.sh"

wait_for kube-apiserver 90 curl -fsS --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" \
  --key "$PKI/admin.key" "$API/readyz"

# ---------------------------------------------------------------- kube-proxy, DNS objects
if [[ "$KFLOW_SERVICES" == "1" ]]; then
  mkdir -p "$KFLOW_CLUSTER_DIR/kube-proxy"
  cat > "$KFLOW_CLUSTER_DIR/kube-proxy/config.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $PKI/kube-proxy.kubeconfig}
hostnameOverride: $NODE
# The node's primary address for kube-proxy (the node object only has 127.0.0.1).
bindAddress: $KFLOW_BRIDGE_IP
clusterCIDR: $KFLOW_POD_CIDR
detectLocalMode: ClusterCIDR
healthzBindAddress: 127.0.0.1:$KFLOW_PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$KFLOW_PROXY_METRICS_PORT
# NodePorts open on the bridge address only, never on the host's outside interfaces.
nodePortAddresses: ["$KFLOW_BRIDGE_IP/32"]
iptables: {localhostNodePorts: false, masqueradeAll: false, syncPeriod: 30s, minSyncPeriod: 0s}
# Leave the host's conntrack table size and timeouts as they are.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
YAML
  start kube-proxy "$B/kube-proxy" --config "$KFLOW_CLUSTER_DIR/kube-proxy/config.yaml" --v=1
  bash "$HERE/scripts/cluster-dns.sh" apply
fi

# ---------------------------------------------------------------- controllers, scheduler
start kube-controller-manager "$B/kube-controller-manager" \
  --kubeconfig "$PKI/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$PKI/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$PKI/controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$KFLOW_CONTROLLER_PORT" --leader-elect=false \
  --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
  --use-service-account-credentials=true --controllers '*' \
  --profiling=false --v=1
start kube-scheduler "$B/kube-scheduler" \
  --kubeconfig "$PKI/scheduler.kubeconfig" \
  --authentication-kubeconfig "$PKI/scheduler.kubeconfig" \
  --authorization-kubeconfig "$PKI/scheduler.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$KFLOW_SCHEDULER_PORT" --leader-elect=false \
  --profiling=false --v=1

# ---------------------------------------------------------------- kubelet
CG_ROOT=$(cgroup_root)
echo "$CG_ROOT" > "$KFLOW_RUN_DIR/cgroup-root"
: > "$KFLOW_RUN_DIR/cgroups-created"
while read -r h; do
  # Create each missing level (recording it for cluster-down); cpuset levels need cpus and mems.
  p="$h"
  IFS='/' read -ra parts <<< "${CG_ROOT#/}"
  for part in "${parts[@]}"; do
    parent="$p"; p="$p/$part"
    if [[ ! -d "$p" ]]; then
      mkdir "$p"; echo "$p" >> "$KFLOW_RUN_DIR/cgroups-created"
      if [[ -f "$p/cpuset.cpus" ]]; then
        cat "$parent/cpuset.cpus" > "$p/cpuset.cpus"; cat "$parent/cpuset.mems" > "$p/cpuset.mems"
      fi
    fi
  done
done < <(cgroup_hierarchies)

mkdir -p "$KFLOW_CLUSTER_DIR/kubelet"
# The kubelet listens where the node's address points (the node name when it is an address).
KUBELET_ADDRESS=127.0.0.1
[[ "$NODE" =~ ^127\.[0-9]+\.[0-9]+\.[0-9]+$ ]] && KUBELET_ADDRESS=$NODE
cat > "$KFLOW_CLUSTER_DIR/kubelet/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $KUBELET_ADDRESS
port: $KFLOW_KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KFLOW_KUBELET_HEALTHZ_PORT
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
containerRuntimeEndpoint: unix://$CTRD_SOCK
imageServiceEndpoint: unix://$CTRD_SOCK
cgroupDriver: cgroupfs
cgroupRoot: $CG_ROOT
cgroupsPerQOS: true
# Debian 12 hosts here still mount cgroup v1; Kubernetes 1.33 runs there when told so.
failCgroupV1: false
failSwapOn: false
# Each local cluster keeps its container logs apart: a kubelet prunes log dirs of pods it does not know.
podLogsDir: $KFLOW_CLUSTER_DIR/kubelet/pod-logs
memorySwap: {}
clusterDomain: cluster.local
$( [[ "$KFLOW_SERVICES" == "1" ]] && echo "clusterDNS: [$KFLOW_DNS_IP]" )
resolvConf: /etc/resolv.conf
maxPods: 60
serializeImagePulls: false
# A shared development machine: evict only when it is really out of room.
evictionHard: {memory.available: 100Mi, nodefs.available: 2%, imagefs.available: 2%, nodefs.inodesFree: 2%}
imageGCHighThresholdPercent: 98
imageGCLowThresholdPercent: 95
nodeStatusUpdateFrequency: 10s
syncFrequency: 10s
fileCheckFrequency: 20s
shutdownGracePeriod: 0s
localStorageCapacityIsolation: true
YAML
# The node is named by its loopback address: the kubelet then reports 127.0.0.1 as the node
# address, so the API server reaches the kubelet (logs, exec) over loopback only.
start kubelet "$B/kubelet" \
  --config "$KFLOW_CLUSTER_DIR/kubelet/config.yaml" \
  --kubeconfig "$PKI/kubelet.kubeconfig" \
  --hostname-override "$NODE" \
  --root-dir "$KFLOW_CLUSTER_DIR/kubelet/root" \
  --cert-dir "$KFLOW_CLUSTER_DIR/kubelet/pki" \
  --v=1

wait_for kubelet 60 kctl get node "$NODE"
if ! kctl wait --for=condition=Ready "node/$NODE" --timeout=90s >/dev/null; then
  tail -n 40 "$LOG_DIR/kubelet.log" >&2
  die "node $NODE did not become Ready"
fi
# Pods can be created only once the service-account controller made the default account.
wait_for kube-controller-manager 60 kctl -n default get serviceaccount default
if [[ "$KFLOW_SERVICES" == "1" ]]; then
  wait_for kube-proxy 30 curl -fsS "http://127.0.0.1:$KFLOW_PROXY_HEALTHZ_PORT/healthz"
  bash "$HERE/scripts/cluster-dns.sh" wait || die "the cluster DNS did not become Ready"
fi
ELAPSED=$(awk -v s="$START" -v e="$(date +%s.%N)" 'BEGIN{printf "%.1f", e-s}')
echo "$ELAPSED" > "$KFLOW_RUN_DIR/start-seconds"
log "cluster up in ${ELAPSED}s (kubernetes $K8S_VERSION, node $NODE$( [[ "$KFLOW_SERVICES" == "1" ]] && echo ", DNS $KFLOW_DNS_IP"))"
echo "export KUBECONFIG=$KFLOW_CLUSTER_DIR/kubeconfig"
