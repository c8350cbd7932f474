#!/usr/bin/env bash
# Build one target of the Dockerfile with the arguments this machine needs; used by `make image`
# and by the docker test tier (tests/docker).
#
#   deploy/docker/build.sh TARGET TAG [more docker build arguments...]
#
# What it works out (each can be forced by an environment variable):
#   builder   BuildKit: `docker build` when the buildx plugin is there, else the docker CLI with
#             DOCKER_BUILDKIT=1 (DOCKER_CLI=...; /usr/bin/docker is preferred for that, a 20.10 CLI
#             that still has the built-in BuildKit client)
#   network   --network host when the daemon has no bridge network (DOCKER_NETWORK=host|default)
#   base      BASE=local/debian:bookworm-slim when that local image exists, else the Dockerfile's
#             default python:3.11-slim (SOUNDSIFT_DOCKER_BASE=image)
#   torch     a local CPU torch wheel (TORCH_WHEEL=path, else /opt/wheels or ../shared/tools) for
#             the cpu and onnx targets: it is put into deploy/docker/wheels and pinned, instead
#             of downloading torch from PyTorch's CPU index
set -euo pipefail

if [ $# -lt 2 ]; then
  sed -n '2,17p' "$0" >&2
  exit 2
fi
target=$1 tag=$2
shift 2
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
say() { echo "[build.sh] $*" >&2; }

if [ -z "${DOCKER_CLI:-}" ]; then
  if docker buildx version >/dev/null 2>&1; then DOCKER_CLI=docker
  elif [ -x /usr/bin/docker ]; then DOCKER_CLI=/usr/bin/docker
  else DOCKER_CLI=docker
  fi
fi
export DOCKER_BUILDKIT=1

args=(--target "$target" --tag "$tag" --force-rm)
network=${DOCKER_NETWORK:-}
if [ -z "$network" ]; then
  if docker network inspect bridge >/dev/null 2>&1; then network=default; else network=host; fi
fi
[ "$network" = default ] || args+=(--network "$network")

base=${SOUNDSIFT_DOCKER_BASE:-}
if [ -z "$base" ] && docker image inspect local/debian:bookworm-slim >/dev/null 2>&1; then
  base=local/debian:bookworm-slim
fi
[ -z "$base" ] || args+=(--build-arg "BASE=$base")

if [ "$target" != gpu ]; then
  wheel=${TORCH_WHEEL:-}
  if [ -z "$wheel" ]; then
    for candidate in /opt/wheels/torch-*+cpu-*.whl "$root"/../shared/tools/torch-*+cpu-*.whl; do
      if [ -f "$candidate" ]; then wheel=$candidate; break; fi
    done
  fi
  if [ -n "$wheel" ]; then
    name=$(basename "$wheel")
    dest=deploy/docker/wheels/$name
    if ! cmp -s "$wheel" "$dest" 2>/dev/null; then
      ln -f "$wheel" "$dest" 2>/dev/null || cp "$wheel" "$dest"
    fi
    version=$(echo "$name" | cut -d- -f2)          # torch-2.13.0+cpu-cp311-... -> 2.13.0+cpu
    args+=(--build-arg "TORCH_SPEC=torch==$version" --build-arg "TORCH_INDEX=")
  fi
fi

revision=$(git rev-parse HEAD 2>/dev/null || true)
[ -z "$revision" ] || args+=(--build-arg "REVISION=$revision")

say "$DOCKER_CLI build ${args[*]} $* ."
exec "$DOCKER_CLI" build "${args[@]}" "$@" .
