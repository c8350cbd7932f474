#!/usr/bin/env bash
# The arm64 twin of the local amd64 base image (a Raspberry Pi 4/5 runs linux/arm64), made the same
# way: ../shared/tools/docker-base.sh debootstraps Debian and imports it, here with --arch=arm64,
# run under QEMU user emulation (Debian's qemu-user-static, registered with binfmt_misc).
#
#   deploy/docker/arm64-base.sh        # prints the tag: local/debian:bookworm-slim-arm64
#
# Needs root (packages, binfmt_misc). Idempotent; DOCKER_BASE_FORCE=1 rebuilds.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
base_script=${DOCKER_BASE_SCRIPT:-$root/../shared/tools/docker-base.sh}
tag=local/debian:bookworm-slim-arm64
say() { echo "[arm64-base] $*" >&2; }

if [ ! -x /usr/bin/qemu-aarch64-static ] || ! command -v update-binfmts >/dev/null; then
  say "installing qemu-user-static binfmt-support"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-user-static binfmt-support >&2
fi
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64 >&2
grep -q '^flags: .*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 \
  || { say "qemu-aarch64 is registered without the F flag: containers cannot use it"; exit 1; }

# docker-base.sh calls `debootstrap` and `docker import` by name; these shims make the rootfs arm64
# and the image linux/arm64. (`docker import --platform` is ignored by this Docker unless its daemon
# is experimental, so the shim imports with a BuildKit build FROM scratch for linux/arm64 instead,
# the --change lines becoming the Dockerfile's instructions.) `docker run` needs no change: the
# kernel hands arm64 binaries to QEMU.
shims=$(mktemp -d)
trap 'rm -rf "$shims"' EXIT
debootstrap_bin=$(command -v debootstrap || echo /usr/sbin/debootstrap)
docker_bin=$(command -v docker)
build_cli=$docker_bin  # a CLI with BuildKit: buildx, or the 20.10 CLI's built-in client (as build.sh)
if ! $docker_bin buildx version >/dev/null 2>&1 && [ -x /usr/bin/docker ]; then build_cli=/usr/bin/docker; fi
cat > "$shims/debootstrap" <<SHIM
#!/bin/sh
exec $debootstrap_bin --arch=arm64 "\$@"
SHIM
cat > "$shims/docker" <<SHIM
#!/usr/bin/env bash
set -euo pipefail
[ "\$1" = import ] || exec $docker_bin "\$@"
shift
context=\$(mktemp -d)
trap 'rm -rf "\$context"' EXIT
echo "FROM scratch" > "\$context/Dockerfile"
echo "ADD rootfs.tar /" >> "\$context/Dockerfile"
while [ "\$1" = --change ]; do echo "\$2" >> "\$context/Dockerfile"; shift 2; done
[ "\$1" = - ] || { echo "arm64 import shim: expected '-' (the rootfs on stdin), got \$1" >&2; exit 2; }
cat > "\$context/rootfs.tar"
DOCKER_BUILDKIT=1 $build_cli build --platform linux/arm64 --network host -t "\$2" "\$context" >&2
SHIM
chmod +x "$shims/debootstrap" "$shims/docker"
PATH="$shims:$PATH" DOCKER_BASE_TAG=$tag bash "$base_script"
