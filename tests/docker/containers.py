"""Build soundsift images and run containers for the docker test tier; every loop is bounded.

Containers use host networking (the only kind this project's machines allow) and listen on
127.0.0.1 at a free port, so `-p` is never needed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.data.shared import SHARED
from tests.server_process import free_port

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "deploy" / "docker" / "build.sh"
IMAGE_UID = 10001


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=check)


def docker_problem() -> str | None:
    """Why the docker tier cannot run here, or None when it can."""
    if not SHARED.is_dir():
        return f"{SHARED} (the tiny model's tokenizer corpus and the ESC-50 clips) is missing"
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    try:
        info = docker("info", "--format", "{{.ServerVersion}}", timeout=20, check=False)
    except subprocess.TimeoutExpired:
        return "the Docker daemon did not answer `docker info` in 20 s"
    if info.returncode != 0:
        reason = info.stderr.strip().splitlines()[-1] if info.stderr.strip() else "docker info failed"
        return f"no Docker daemon ({reason})"
    return None


def build_image(target: str, tag: str, log_path: Path, timeout_s: float = 1500) -> None:
    """Build one target with deploy/docker/build.sh (this machine's arguments)."""
    with open(log_path, "w") as log:
        result = subprocess.run(
            [str(BUILD_SCRIPT), target, tag, "--progress", "plain"],
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=timeout_s,
            check=False,
        )
    if result.returncode != 0:
        tail = "\n".join(log_path.read_text().splitlines()[-40:])
        raise RuntimeError(f"building target {target} failed (exit {result.returncode}); log {log_path}:\n{tail}")


def remove_image(tag: str) -> None:
    docker("image", "rm", "--force", tag, check=False)


def readable_copy(source: Path, target: Path) -> Path:
    """A copy that the image's user (uid 10001) can read through a read-only bind mount."""
    shutil.copytree(source, target)
    for path in [target, *target.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target


@dataclass
class Container:
    """A detached `docker run` of an image; remove() deletes it and its anonymous volumes."""

    image: str
    name: str
    target: str = ""
    env: dict[str, str] = field(default_factory=dict)
    run_args: list[str] = field(default_factory=list)
    network: str = "host"
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {"SOUNDSIFT_HOST": "127.0.0.1", "SOUNDSIFT_PORT": str(self.port), **self.env}
        args = ["run", "--detach", "--name", self.name, "--network", self.network, "--health-interval", "1s"]
        for key, value in env.items():
            args += ["--env", f"{key}={value}"]
        docker(*args, *self.run_args, self.image)

    def state(self) -> dict:
        return json.loads(docker("inspect", "--format", "{{json .State}}", self.name).stdout)

    def wait_healthy(self, timeout_s: float = 180) -> None:
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            state = self.state()
            if state["Status"] == "exited":
                raise RuntimeError(f"{self.name} exited with {state['ExitCode']} before it was healthy:\n{self.logs()}")
            if state.get("Health", {}).get("Status") == "healthy":
                return
            time.sleep(0.25)
        raise TimeoutError(f"{self.name} not healthy in {timeout_s} s:\n{self.logs()}")

    def wait_exit(self, timeout_s: float = 120) -> int:
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            state = self.state()
            if state["Status"] == "exited":
                return state["ExitCode"]
            time.sleep(0.25)
        raise TimeoutError(f"{self.name} still running after {timeout_s} s:\n{self.logs()}")

    def logs(self) -> str:
        result = docker("logs", self.name, check=False)
        return result.stdout + result.stderr

    def exec(self, *command: str) -> subprocess.CompletedProcess[str]:
        return docker("exec", self.name, *command, check=False)

    def host_pid(self) -> int:
        """The host PID of the container's PID 1."""
        return int(docker("inspect", "--format", "{{.State.Pid}}", self.name).stdout)

    def stop(self, grace_s: int = 30) -> tuple[int, float]:
        """`docker stop` with a grace period; (exit code, seconds it took)."""
        started = time.monotonic()
        docker("stop", "--time", str(grace_s), self.name, timeout=grace_s + 30)
        return self.state()["ExitCode"], time.monotonic() - started

    def remove(self) -> None:
        docker("rm", "--force", "--volumes", self.name, check=False)


def post_clip(url: str, clip: Path, labels: str, headers: dict[str, str] | None = None) -> requests.Response:
    with open(clip, "rb") as audio:
        return requests.post(
            f"{url}/api/classify",
            files={"audio": (clip.name, audio, "audio/wav")},
            data={"labels": labels},
            headers=headers or {},
            timeout=60,
        )


def unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{time.monotonic_ns() % 1_000_000}"
