#!/usr/bin/env bash
# Build the local images (pause, coredns, base, runner, operator) without Docker and cache them as OCI archives.
# Usage: build-images.sh [pause] [coredns] [runner] [operator] [examples]   (default: pause, runner,
# operator; base is built as needed, examples builds runner first)
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

# The runtime dependencies exactly as uv.lock pins them, with their hashes (no dev extra, not kflow
# itself), and the "fast" extra: `kflow worker` runs on uvloop in the images as in the benchmarks. Exported on the host by the uv that wrote the lock and `make venv` syncs from; the
# Dockerfiles install it in a layer of its own. Written once per run into $REQS (call it outside
# a command substitution, so the variable sticks).
REQS=""
export_requirements() {
  [[ -n "$REQS" ]] && return
  command -v "${UV:-uv}" >/dev/null || { echo "uv is needed to export uv.lock (make venv installs it)" >&2; exit 1; }
  REQS=$(mktemp)
  trap 'rm -f "$REQS"' EXIT
  (cd "$REPO" && "${UV:-uv}" export --quiet --frozen --no-dev --extra fast --no-emit-project \
    --format requirements-txt --no-header --no-annotate) > "$REQS"
}

# kflow images are rebuilt when the package source, pyproject, the locked dependencies or the
# Dockerfile change.
source_hash() {
  local name=$1
  [[ -n "$REQS" ]] || { echo "source_hash: export_requirements first" >&2; exit 1; }
  (
    cd "$REPO"
    find operator pyproject.toml README.md "images/$name/Dockerfile" -type f \
      -not -path '*/__pycache__/*' -not -name '*.pyc' 2>/dev/null | LC_ALL=C sort | xargs sha256sum
    sha256sum < "$REQS"
    base_key
  ) | sha256sum | cut -c1-12
}

# The host's CA bundle is mounted for the build steps only (this network may re-sign TLS for
# PyPI); it is never committed into the image.
CA_MOUNT=()
[[ -f /etc/ssl/certs/ca-certificates.crt ]] &&
  CA_MOUNT=(-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)

# The dependency image of a Dockerfile: its `deps` stage (comments aside) on the base, with the
# exported lock. runner and operator have the same stage, so they share one.
deps_ref() {
  local dockerfile=$1 key
  # shellcheck disable=SC2016  # the Dockerfile's own ${...}, matched as text
  key=$(
    sed -n '/^FROM ${BASE} AS deps/,/^FROM ${DEPS}/p' "$dockerfile" | grep -v -e '^#' -e '^FROM ${DEPS}'
    cat "$REQS"
    base_key
  )
  echo "localhost/kflow-deps:$(sha256sum <<< "$key" | cut -c1-12)"
}

# The vfs store keeps the newest build of each image (tagged by its hash: the examples image and
# tests/images start from it) and the dependency image under runner and operator, so the next
# build of new code starts from it; everything older goes, since every vfs layer is a full copy.
prune_store() {
  local repo=$1; shift
  local ref keep k
  while read -r ref; do
    keep=0
    for k in "$@"; do [[ "$ref" == "$k" ]] && keep=1; done
    (( keep )) || "${BUILDAH[@]}" rmi "$ref" >/dev/null 2>&1 || true
  done < <("${BUILDAH[@]}" images --format '{{.Name}}:{{.Tag}}' | grep -E "^$repo:" || true)
  "${BUILDAH[@]}" rmi --prune >/dev/null 2>&1 || true
}

# runner and operator: Python and the locked dependencies (the `deps` stage), then kflow.
# The dependency image is built once per lock, with --layers (each step cached by its parent and
# content). kflow goes on top of it in one build without --layers: under vfs every cached step
# would be another full copy of the file system, and a code change reruns those steps anyway.
build_kflow() {
  local name=$1 sum archive tag deps ctx start
  # The package data carries the web view that `kflow server` serves: build it first (npm ci
  # and vite, each skipped when up to date), so no image ships without it.
  make --no-print-directory -C "$REPO" web >&2
  export_requirements
  sum=$(source_hash "$name")
  archive="$IMG_DIR/$name-$sum.tar"; tag="localhost/kflow-$name:$sum"
  if [[ -f "$archive" ]]; then ln -sf "$archive" "$IMG_DIR/current-$name.tar"; return; fi
  build_base
  deps=$(deps_ref "$REPO/images/$name/Dockerfile")
  log "building $tag from images/$name/Dockerfile on $deps"
  start=$(date +%s)
  # A small context: what the Dockerfile copies, without the venv and caches of the work tree.
  ctx=$(mktemp -d)
  mkdir "$ctx/images"
  cp "$REQS" "$ctx/images/requirements.txt"
  cp "$REPO/pyproject.toml" "$ctx/"
  [[ -f "$REPO/README.md" ]] && cp "$REPO/README.md" "$ctx/"
  tar -C "$REPO" --exclude=__pycache__ --exclude='*.pyc' -cf - operator | tar -C "$ctx" -xf -
  local bud=("${BUILDAH[@]}" bud --isolation chroot --build-arg "BASE=$BASE_TAG"
    "${CA_MOUNT[@]}" -f "$REPO/images/$name/Dockerfile")
  : > "$IMG_DIR/$name-build.log"
  if ! have_image "$deps"; then
    "${bud[@]}" --layers --target deps -t "$deps" "$ctx" >> "$IMG_DIR/$name-build.log" 2>&1 \
      || { tail -30 "$IMG_DIR/$name-build.log"; rm -rf "$ctx"; exit 1; }
    log "dependency image $deps built in $(( $(date +%s) - start ))s"
  fi
  "${bud[@]}" --layers=false --build-arg "DEPS=$deps" -t "$tag" "$ctx" \
    >> "$IMG_DIR/$name-build.log" 2>&1 || { tail -30 "$IMG_DIR/$name-build.log"; rm -rf "$ctx"; exit 1; }
  rm -rf "$ctx"
  # In the archive (and so in the cluster) the image is localhost/kflow-<name>:dev.
  "${BUILDAH[@]}" push -q "$tag" "oci-archive:$archive.tmp:localhost/kflow-$name:dev"
  mv "$archive.tmp" "$archive"
  prune_store "localhost/kflow-$name" "$tag"
  prune_store localhost/kflow-deps "$deps"
  # Older archives of this image are superseded.
  find "$IMG_DIR" -maxdepth 1 -name "$name-*.tar" ! -name "$name-$sum.tar" -delete
  ln -sf "$archive" "$IMG_DIR/current-$name.tar"
  log "$tag built in $(( $(date +%s) - start ))s"
}

# The runner image of this build in the vfs store, taken from its archive when the store lost it.
runner_in_store() {
  local sum ref
  sum=$(source_hash runner); ref="localhost/kflow-runner:$sum"
  if ! have_image "$ref"; then
    "${BUILDAH[@]}" pull -q "oci-archive:$IMG_DIR/runner-$sum.tar" >/dev/null
    "${BUILDAH[@]}" tag localhost/kflow-runner:dev "$ref"
    "${BUILDAH[@]}" rmi localhost/kflow-runner:dev >/dev/null
  fi
  RUNNER_REF=$ref
}

# The examples image: the runner with examples/ in /work (images/examples/Dockerfile); in the
# cluster localhost/kflow-examples:dev, the image examples/*.yaml name.
build_examples() {
  local sum archive tag ctx start
  build_kflow runner
  runner_in_store
  sum=$(
    cd "$REPO"
    { find examples images/examples/Dockerfile -type f -not -path '*/__pycache__/*' \
        -not -name '*.pyc' | LC_ALL=C sort | xargs sha256sum; echo "$RUNNER_REF"; } \
      | sha256sum | cut -c1-12
  )
  archive="$IMG_DIR/examples-$sum.tar"; tag="localhost/kflow-examples:$sum"
  if [[ -f "$archive" ]]; then ln -sf "$archive" "$IMG_DIR/current-examples.tar"; return; fi
  log "building $tag from images/examples/Dockerfile on $RUNNER_REF"
  start=$(date +%s)
  ctx=$(mktemp -d)
  tar -C "$REPO" --exclude=__pycache__ --exclude='*.pyc' -cf - examples | tar -C "$ctx" -xf -
  "${BUILDAH[@]}" bud --isolation chroot --layers=false --build-arg "RUNNER=$RUNNER_REF" \
    -f "$REPO/images/examples/Dockerfile" -t "$tag" "$ctx" > "$IMG_DIR/examples-build.log" 2>&1 \
    || { tail -30 "$IMG_DIR/examples-build.log"; rm -rf "$ctx"; exit 1; }
  rm -rf "$ctx"
  "${BUILDAH[@]}" push -q "$tag" "oci-archive:$archive.tmp:localhost/kflow-examples:dev"
  mv "$archive.tmp" "$archive"
  prune_store localhost/kflow-examples "$tag"
  find "$IMG_DIR" -maxdepth 1 -name "examples-*.tar" ! -name "examples-$sum.tar" -delete
  ln -sf "$archive" "$IMG_DIR/current-examples.tar"
  log "$tag built in $(( $(date +%s) - start ))s"
}

# Redis for the chart's bundled Redis (images/redis/Dockerfile: Debian's redis-server on the
# base); in the cluster localhost/kflow-redis:dev. Rebuilt when the Dockerfile or base changes.
build_redis() {
  local sum archive tag ctx start
  build_base
  sum=$( { sha256sum < "$REPO/images/redis/Dockerfile"; echo "$BASE_TAG"; } | sha256sum | cut -c1-12)
  archive="$IMG_DIR/redis-$sum.tar"; tag="localhost/kflow-redis:$sum"
  if [[ -f "$archive" ]]; then ln -sf "$archive" "$IMG_DIR/current-redis.tar"; return; fi
  log "building $tag from images/redis/Dockerfile on $BASE_TAG"
  start=$(date +%s)
  ctx=$(mktemp -d)
  "${BUILDAH[@]}" bud --isolation chroot --layers=false --build-arg "BASE=$BASE_TAG" \
    "${CA_MOUNT[@]}" -f "$REPO/images/redis/Dockerfile" -t "$tag" "$ctx" \
    > "$IMG_DIR/redis-build.log" 2>&1 || { tail -30 "$IMG_DIR/redis-build.log"; rm -rf "$ctx"; exit 1; }
  rm -rf "$ctx"
  "${BUILDAH[@]}" push -q "$tag" "oci-archive:$archive.tmp:localhost/kflow-redis:dev"
  mv "$archive.tmp" "$archive"
  prune_store localhost/kflow-redis "$tag"
  find "$IMG_DIR" -maxdepth 1 -name "redis-*.tar" ! -name "redis-$sum.tar" -delete
  ln -sf "$archive" "$IMG_DIR/current-redis.tar"
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
    examples) build_examples ;;
    redis) build_redis ;;
    *) echo "unknown image $t (pause, coredns, base, runner, operator, examples, redis)" >&2; exit 2 ;;
  esac
done
