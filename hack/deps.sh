#!/usr/bin/env bash
# Installs the Debian packages kflow's demo and tests need, if any is missing.
# Used by `make demo`, `make test` and .ci/run, so a fresh Debian 12 machine needs nothing else.
# chromium: the web view's tests and bench drive it headless through Playwright (which never
# downloads a browser of its own). Node.js 20 and npm 11 (`make web`) come with the machine.
set -euo pipefail
pkgs=(redis-server etcd-server containerd runc containernetworking-plugins debootstrap buildah
      iptables conntrack socat busybox-static iproute2 ethtool gcc make libc6-dev openssl curl
      ca-certificates chromium)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "kflow needs these Debian packages: ${missing[*]}" >&2
  echo "install them as root: apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q "${missing[@]}"
# The tests and the demo start their own redis-server processes; the packaged service is not
# needed, and etcd's packaged service would hold the port range the cluster avoids anyway.
for svc in redis-server etcd; do
  systemctl stop "$svc" 2>/dev/null || service "$svc" stop 2>/dev/null || true
done
