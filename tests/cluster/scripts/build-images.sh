#!/usr/bin/env bash
# Build the local images (pause, coredns, base, runner, operator) without Docker and cache them as OCI archives.
# Usage: build-images.sh [pause] [coredns] [runner] [operator]   (default: pause, runner, operator;
# base is built as needed)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
# shellcheck source=tests/cluster/scripts/env.sh
source "$HERE/scripts/env.sh"

IMG_DIR="$KFLOW_CACHE_DIR/images"
mkdir -p "$IMG_DIR"
# A private buildah store, so nothing else on the machine shares or prunes it.
BUILDAH=(buildah --root "$KFLOW_CACHE_DIR/buildah/root" --runroot "$KFLOW_CACHE_DIR/buildah/run"
  --storage-driver vfs)
DEBIAN_SUITE="${KFLOW_DEBIAN_SUITE:-bookworm}"
DEBIAN_MIRROR="${KFLOW_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

log() { echo "[images] $*"; }

have_image() { "${BUILDAH[@]}" inspect --type image "$1" >/dev/null 2>&1; }

# The base image is keyed by the Debian suite and the package list, never by the repo's code.
base_key() {
  local sum
  sum=$( (echo "$DEBIAN_SUITE v1"; grep -v '^#' "$REPO/images/base/packages") | sha256sum | cut -c1-12)
  echo "$DEBIAN_SUITE-$sum"
}

build_base() {
  local key tag archive
  key=$(base_key); tag="localhost/kflow-base:$key"; archive="$IMG_DIR/base-$key.tar"
  if have_image "$tag"; then BASE_TAG=$tag; return; fi
  if [[ -f "$archive" ]]; then
    log "loading cached base $archive"
    "${BUILDAH[@]}" pull -q "oci-archive:$archive" >/dev/null
    "${BUILDAH[@]}" tag "$(oci_archive_image_id "$archive")" "$tag" 2>/dev/null || true
    if have_image "$tag"; then BASE_TAG=$tag; return; fi
  fi
  log "debootstrap $DEBIAN_SUITE for $tag"
  local start rootfs ctr mnt pkgs
  start=$(date +%s)
  rootfs=$(mktemp -d "$KFLOW_CACHE_DIR/rootfs.XXXXXX")
  pkgs=$(grep -v '^#' "$REPO/images/base/packages" | xargs | tr ' ' ',')
  debootstrap --variant=minbase --include="$pkgs" "$DEBIAN_SUITE" "$rootfs" "$DEBIAN_MIRROR" \
    > "$KFLOW_CACHE_DIR/debootstrap.log" 2>&1 || { tail -20 "$KFLOW_CACHE_DIR/debootstrap.log"; exit 1; }
  # Package caches and lists only make the image bigger.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*
  ctr=$("${BUILDAH[@]}" from scratch)
  mnt=$("${BUILDAH[@]}" mount "$ctr")
  cp -a "$rootfs"/. "$mnt"/
  "${BUILDAH[@]}" umount "$ctr" >/dev/null
  "${BUILDAH[@]}" config --cmd /bin/bash --env LANG=C.UTF-8 \
    --label "dev.kflow.base=$key" "$ctr"
  "${BUILDAH[@]}" commit -q "$ctr" "$tag" >/dev/null
  "${BUILDAH[@]}" rm "$ctr" >/dev/null
  rm -rf "$rootfs"
  "${BUILDAH[@]}" push -q "$tag" "oci-archive:$archive.tmp:$tag"
  mv "$archive.tmp" "$archive"
  log "base $tag built in $(( $(date +%s) - start ))s"
  BASE_TAG=$tag
}

oci_archive_image_id() { "${BUILDAH[@]}" images -q --filter "reference=$1" 2>/dev/null | head -1; }

build_pause() {
  local sum archive tag ctr work
  sum=$(sha256sum "$REPO/images/pause/pause.c" | cut -c1-12)
  archive="$IMG_DIR/pause-$sum.tar"; tag="localhost/kflow-pause:1"
  if [[ -f "$archive" ]]; then ln -sf "$archive" "$IMG_DIR/current-pause.tar"; return; fi
  log "building $tag"
  work=$(mktemp -d)
  gcc -static -Os -o "$work/pause" "$REPO/images/pause/pause.c"
  strip "$work/pause"
  ctr=$("${BUILDAH[@]}" from scratch)
  "${BUILDAH[@]}" copy -q "$ctr" "$work/pause" /pause >/dev/null
  "${BUILDAH[@]}" config --entrypoint '["/pause"]' --cmd '' "$ctr"
  "${BUILDAH[@]}" commit -q "$ctr" "$tag" >/dev/null
  "${BUILDAH[@]}" rm "$ctr" >/dev/null
  "${BUILDAH[@]}" push -q "$tag" "oci-archive:$archive.tmp:$tag"
  mv "$archive.tmp" "$archive"
  "${BUILDAH[@]}" rmi "$tag" >/dev/null 2>&1 || true
  rm -rf "$work"
  ln -sf "$archive" "$IMG_DIR/current-pause.tar"
}

# The cluster's DNS server, made like the pause image: one static binary (build-coredns.sh,
# cached by version and module hash) in an image from scratch.
build_coredns() {
  local key archive tag ctr
  bash "$HERE/scripts/build-coredns.sh" >/dev/null
  key=$(basename "$KFLOW_COREDNS_DIR"); key=${key#coredns-}
  archive="$IMG_DIR/coredns-$key.tar"; tag="localhost/kflow-coredns:$COREDNS_VERSION"
  if [[ -f "$archive" ]]; then ln -sf "$archive" "$IMG_DIR/current-coredns.tar"; return; fi
  log "building $tag"
  ctr=$("${BUILDAH[@]}" from scratch)
  "${BUILDAH[@]}" copy -q "$ctr" "$KFLOW_COREDNS_DIR/coredns" /coredns >/dev/null
  "${BUILDAH[@]}" config --entrypoint '["/coredns"]' --cmd '' --port 53/udp --port 53/tcp "$ctr"
  "${BUILDAH[@]}" commit -q "$ctr" "$tag" >/dev/null
  "${BUILDAH[@]}" rm "$ctr" >/dev/null
  "${BUILDAH[@]}" push -q "$tag" "oci-archive:$archive.tmp:$tag"
  mv "$archive.tmp" "$archive"
  "${BUILDAH[@]}" rmi "$tag" >/dev/null 2>&1 || true
  find "$IMG_DIR" -maxdepth 1 -name "coredns-*.tar" ! -name "coredns-$key.tar" -delete
  ln -sf "$archive" "$IMG_DIR/current-coredns.tar"
}

# kflow images are rebuilt when the package source, pyproject or the Dockerfile change.
source_hash() {
  local name=$1
  (
    cd "$REPO"
    find operator pyproject.toml README.md "images/$name/Dockerfile" -type f \
      -not -path '*/__pycache__/*' -not -name '*.pyc' 2>/dev/null | LC_ALL=C sort | xargs sha256sum
    echo "$(base_key)"
  ) | sha256sum | cut -c1-12
}

build_kflow() {
  local name=$1 sum archive tag ctx start
  sum=$(source_hash "$name")
  archive="$IMG_DIR/$name-$sum.tar"; tag="localhost/kflow-$name:dev"
  if [[ -f "$archive" ]]; then ln -sf "$archive" "$IMG_DIR/current-$name.tar"; return; fi
  build_base
  log "building $tag from images/$name/Dockerfile on $BASE_TAG"
  start=$(date +%s)
  # A small context: what the Dockerfile copies, without the venv and caches of the work tree.
  ctx=$(mktemp -d)
  cp "$REPO/pyproject.toml" "$ctx/"
  [[ -f "$REPO/README.md" ]] && cp "$REPO/README.md" "$ctx/"
  tar -C "$REPO" --exclude=__pycache__ --exclude='*.pyc' -cf - operator | tar -C "$ctx" -xf -
  # The host's CA bundle is mounted for the build steps only (this network may re-sign TLS for
  # PyPI); it is never committed into the image.
  local ca_mount=()
  [[ -f /etc/ssl/certs/ca-certificates.crt ]] &&
    ca_mount=(-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
  "${BUILDAH[@]}" bud -q --isolation chroot --layers=false --build-arg "BASE=$BASE_TAG" "${ca_mount[@]}" \
    -f "$REPO/images/$name/Dockerfile" -t "$tag" "$ctx" > "$IMG_DIR/$name-build.log" 2>&1 \
    || { tail -30 "$IMG_DIR/$name-build.log"; rm -rf "$ctx"; exit 1; }
  rm -rf "$ctx"
  "${BUILDAH[@]}" push -q "$tag" "oci-archive:$archive.tmp:$tag"
  mv "$archive.tmp" "$archive"
  # The archive is the cache; the vfs store keeps only the base (each image there is a full copy).
  "${BUILDAH[@]}" rmi "$tag" >/dev/null 2>&1 || true
  "${BUILDAH[@]}" rmi --prune >/dev/null 2>&1 || true
  # Older archives of this image are superseded.
  find "$IMG_DIR" -maxdepth 1 -name "$name-*.tar" ! -name "$name-$sum.tar" -delete
  ln -sf "$archive" "$IMG_DIR/current-$name.tar"
  log "$tag built in $(( $(date +%s) - start ))s"
}

targets=("$@")
[[ ${#targets[@]} -eq 0 ]] && targets=(pause runner operator)
for t in "${targets[@]}"; do
  case "$t" in
    pause) build_pause ;;
    coredns) build_coredns ;;
    base) build_base ;;
    runner|operator) build_kflow "$t" ;;
    *) echo "unknown image $t (pause, coredns, base, runner, operator)" >&2; exit 2 ;;
  esac
done
