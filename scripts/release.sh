#!/usr/bin/env bash
# `make release REGISTRY=host[:port][/path] VERSION=x.y.z`: both images and the chart to one registry.
#   images: REGISTRY/bert-eval-training:VERSION and REGISTRY/bert-eval-eval:VERSION, built for
#           PLATFORMS (default linux/amd64; the eval image also builds for linux/arm64, the training
#           image's CUDA torch wheels are published for linux/amd64 and linux/arm64 (sbsa) too:
#           PLATFORMS=linux/amd64,linux/arm64 builds a multi-arch manifest list, with buildx on Docker
#           or `podman build --manifest`, and needs qemu-user-static for the foreign one);
#           BUILD=0 pushes existing local images instead (TRAINING_IMAGE, EVAL_IMAGE);
#   chart:  oci://REGISTRY/bert-eval, version VERSION, image defaults naming REGISTRY and VERSION
#           (scripts/release_chart.py, the Helm engine of helm-python-sdk).
# CONTAINER=docker|podman (default: docker if present, else podman). PLAIN_HTTP=1 for a local
# registry without TLS (podman: --tls-verify=false; Docker needs it in insecure-registries).
set -euo pipefail
cd "$(dirname "$0")/.."

: "${REGISTRY:?set REGISTRY=host[:port][/path], e.g. ghcr.io/my-org}"
: "${VERSION:?set VERSION=x.y.z (chart version and image tag)}"
REGISTRY=${REGISTRY#oci://}
REGISTRY=${REGISTRY%/}
PYTHON=${PYTHON:-.venv/bin/python}
PLATFORMS=${PLATFORMS:-linux/amd64}
BUILD=${BUILD:-1}
PLAIN_HTTP=${PLAIN_HTTP:-0}
PYTHON_IMAGE=${PYTHON_IMAGE:-python:3.11.13-slim-bookworm}
TRAINING_TORCH_INDEX=${TRAINING_TORCH_INDEX:-https://pypi.org/simple}
EVAL_TORCH_INDEX=${EVAL_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
if [ -z "${CONTAINER:-}" ]; then
  if command -v docker >/dev/null 2>&1; then CONTAINER=docker; else CONTAINER=podman; fi
fi

log() { printf '[release] %s\n' "$*" >&2; }

push_flags=()
if [ "$PLAIN_HTTP" = 1 ] && [ "$CONTAINER" = podman ]; then push_flags+=(--tls-verify=false); fi

release_image() {  # name, local source image, torch index
  local name=$1 source=$2 index=$3 ref="$REGISTRY/bert-eval-$1:$VERSION"
  if [ "$BUILD" = 1 ]; then
    local build_args=(-f "services/Dockerfile.$name" --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" --build-arg "TORCH_INDEX_URL=$index")
    if [[ "$PLATFORMS" == *,* ]]; then
      log "build $ref for $PLATFORMS (multi-arch)"
      if [ "$CONTAINER" = docker ]; then
        docker buildx build --platform "$PLATFORMS" "${build_args[@]}" -t "$ref" --push .
        return
      fi
      podman build --platform "$PLATFORMS" "${build_args[@]}" --manifest "$ref" .
      log "push $ref"
      podman manifest push --all "${push_flags[@]}" "$ref" "docker://$ref"
      return
    fi
    log "build $ref for $PLATFORMS"
    "$CONTAINER" build --platform "$PLATFORMS" "${build_args[@]}" -t "$ref" .
  else
    log "tag $source as $ref"
    "$CONTAINER" tag "$source" "$ref"
  fi
  log "push $ref"
  "$CONTAINER" push "${push_flags[@]}" "$ref"
}

release_image training "${TRAINING_IMAGE:-bert-eval-training:dev}" "$TRAINING_TORCH_INDEX"
release_image eval "${EVAL_IMAGE:-bert-eval-eval:dev}" "$EVAL_TORCH_INDEX"
chart_flags=(--registry "$REGISTRY" --version "$VERSION" --destination "${DIST:-dist}")
if [ "$PLAIN_HTTP" = 1 ]; then chart_flags+=(--plain-http); fi
"$PYTHON" scripts/release_chart.py "${chart_flags[@]}"
log "install: helm install bert-eval oci://$REGISTRY/bert-eval --version $VERSION -n bert-eval -f values-<profile>.yaml"
