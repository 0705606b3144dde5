# Local Kubernetes cluster for kflow's tests and demos (included by the top-level Makefile).
# Needs root and the Debian packages listed in tests/cluster/README.md.
KFLOW_CLUSTER_SCRIPTS := $(CURDIR)/tests/cluster/scripts

.PHONY: cluster-up cluster-down cluster-status cluster-build images

# Build (or reuse) binaries and images, start the cluster, print `export KUBECONFIG=...`.
cluster-up:
	@bash $(KFLOW_CLUSTER_SCRIPTS)/cluster-up.sh

# Stop everything; no process, mount, interface, iptables chain or cgroup of the cluster is left.
cluster-down:
	@bash $(KFLOW_CLUSTER_SCRIPTS)/cluster-down.sh

cluster-status:
	@bash $(KFLOW_CLUSTER_SCRIPTS)/cluster-status.sh

# Build the Kubernetes binaries and CoreDNS into the cache (once per version).
cluster-build:
	@bash $(KFLOW_CLUSTER_SCRIPTS)/build-k8s.sh
	@bash $(KFLOW_CLUSTER_SCRIPTS)/build-coredns.sh

# Build every image (pause, CoreDNS, runner, operator, examples, Redis); load them when the
# cluster is running.
images:
	@bash $(KFLOW_CLUSTER_SCRIPTS)/build-images.sh pause coredns runner operator examples redis
	@if bash $(KFLOW_CLUSTER_SCRIPTS)/cluster-status.sh --quiet; then \
	  bash $(KFLOW_CLUSTER_SCRIPTS)/import-images.sh; fi
