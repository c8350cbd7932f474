"""Fixtures of the docker tier: the cpu and onnx images, built once per run, and the tiny model.

Tests marked `docker` need a Docker daemon and ../shared; without either they are skipped with the
reason, unless SOUNDSIFT_DOCKER_TESTS=require, which turns the skip into a failure (for CI, where
`make docker-ready` has started the daemon). Images are tagged per run and removed afterwards; the
build cache stays, so the next run rebuilds only what changed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docker.containers import build_image, docker_problem, readable_copy, remove_image, unique


@pytest.fixture(scope="session")
def docker_ready() -> None:
    problem = docker_problem()
    if problem is None:
        return
    if os.environ.get("SOUNDSIFT_DOCKER_TESTS") == "require":
        pytest.fail(f"SOUNDSIFT_DOCKER_TESTS=require, but {problem}")
    pytest.skip(f"docker tier skipped: {problem} (as root, `make docker-ready` sets Docker up)")


@pytest.fixture(scope="session")
def build_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("docker-build-logs")


def _image(target: str, build_logs: Path) -> Iterator[str]:
    tag = f"soundsift-test:{unique(target)}"
    try:
        build_image(target, tag, build_logs / f"{target}.log")
        yield tag
    finally:
        remove_image(tag)


@pytest.fixture(scope="session")
def cpu_image(docker_ready: None, build_logs: Path) -> Iterator[str]:
    yield from _image("cpu", build_logs)


@pytest.fixture(scope="session")
def onnx_image(docker_ready: None, build_logs: Path) -> Iterator[str]:
    yield from _image("onnx", build_logs)


@pytest.fixture(scope="session")
def mounted_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny CLAP checkpoint, readable by the image's user (safetensors writes its file 0600)."""
    return readable_copy(tiny_model_dir, tmp_path_factory.mktemp("docker-models") / "clap")


@pytest.fixture(scope="session")
def mounted_onnx_dir(mounted_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint exported on the host with `soundsift export`, as a user would."""
    out = tmp_path_factory.mktemp("docker-onnx") / "export"
    subprocess.run(
        [sys.executable, "-m", "soundsift", "export", "--model", str(mounted_model_dir), "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return readable_copy(out, out.with_name("clap-onnx"))
