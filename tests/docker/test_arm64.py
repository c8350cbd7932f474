"""The torch-free (onnx) image for linux/arm64 (a Raspberry Pi 4/5), under QEMU user emulation:
built from the arm64 twin of the local base (deploy/docker/arm64-base.sh), it is an arm64 image
whose CLI runs.

Not tested here, because this machine's emulation cannot run it: loading a model. Under
qemu-aarch64 7.2 (Debian bookworm) onnxruntime's arm64 build dies as soon as it loads the model:

    docker run --rm --network none -v ONNX_DIR:/models/clap:ro -v CLIPS:/clips:ro \
      -e SOUNDSIFT_MODEL=/models/clap -e SOUNDSIFT_BACKEND=onnx soundsift:onnx-arm64 \
      classify /clips --labels "dog, rain"
    qemu: uncaught target signal 11 (Segmentation fault) - core dumped

(the same for `serve` and `monitor`), so classifying and the monitor on arm64 wait for real arm64
hardware (docs/raspberry-pi.md).

Emulation makes this tier slow (the arm64 base takes about 11 minutes to debootstrap on 2 cores,
the image's pip installs longer still), so it runs with `make test-arm64`
(SOUNDSIFT_ARM64_TESTS=1), not in `make test`."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docker.containers import (
    BUILD_SCRIPT,
    ROOT,
    docker,
    remove_image,
    unique,
)

pytestmark = pytest.mark.docker
ARM64_BASE = "local/debian:bookworm-slim-arm64"


@pytest.fixture(scope="module")
def arm64_image(docker_ready: None, build_logs: Path) -> Iterator[str]:
    if os.environ.get("SOUNDSIFT_ARM64_TESTS") != "1":
        pytest.skip("the arm64 tier runs with `make test-arm64` (SOUNDSIFT_ARM64_TESTS=1): QEMU emulation is slow")
    base = subprocess.run(
        [str(ROOT / "deploy" / "docker" / "arm64-base.sh")], capture_output=True, text=True, timeout=3600
    )
    assert base.returncode == 0, base.stderr[-3000:]
    tag = f"soundsift-test:{unique('onnx-arm64')}"
    log = build_logs / "onnx-arm64.log"
    with open(log, "w") as out:
        built = subprocess.run(
            [str(BUILD_SCRIPT), "onnx", tag, "--platform", "linux/arm64", "--progress", "plain"],
            env={**os.environ, "SOUNDSIFT_DOCKER_BASE": ARM64_BASE},
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=5400,
        )
    assert built.returncode == 0, log.read_text()[-4000:]
    try:
        yield tag
    finally:
        remove_image(tag)


def test_the_arm64_image_is_arm64_and_its_cli_runs(arm64_image: str) -> None:
    assert docker("image", "inspect", arm64_image, "--format", "{{.Architecture}}").stdout.strip() == "arm64"
    machine = docker("run", "--rm", "--entrypoint", "uname", arm64_image, "-m", timeout=120)
    assert machine.stdout.strip() == "aarch64"
    models = docker("run", "--rm", "--network", "none", arm64_image, "models", timeout=600, check=False)
    assert models.returncode == 0, models.stderr[-2000:]
    assert "laion/clap-htsat-fused" in models.stdout
    machine_of_python = docker(
        "run", "--rm", "--entrypoint", "python", arm64_image, "-c", "import platform; print(platform.machine())",
        timeout=600,
    )  # fmt: skip
    assert machine_of_python.stdout.strip() == "aarch64"
