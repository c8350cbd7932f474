"""The cpu and onnx images as users and operators run them: real builds, real containers.

Each image serves the tiny CLAP (mounted read-only) from a read-only root file system with every
capability dropped, as the Kubernetes manifests run it, behind an API key; the tests classify a
real ESC-50 clip over HTTP, check who the processes run as, and stop the container as
`docker stop` does. Offline without a model, the container must fail as clearly as the CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

import soundsift
from soundsift.core.settings import DEFAULT_MODEL
from tests.docker.containers import IMAGE_UID, Container, docker, post_clip, readable_copy, unique

pytestmark = pytest.mark.docker

API_KEY = "docker-tier-key-4f1c"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
LABELS = ["dog", "rain", "siren", "crying baby"]
# What the Kubernetes Deployment's securityContext asks for (deploy/kubernetes/deployment.yaml).
LOCKED_DOWN = ["--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]


@pytest.fixture(scope="module", params=["cpu", "onnx"])
def server(request: pytest.FixtureRequest) -> Iterator[Container]:
    """A running container of the image, healthy; the tiny model (exported, for onnx) mounted ro."""
    target = request.param
    image = request.getfixturevalue(f"{target}_image")
    model = request.getfixturevalue("mounted_model_dir" if target == "cpu" else "mounted_onnx_dir")
    container = Container(
        image,
        name=unique(f"soundsift-test-{target}"),
        target=target,
        env={"SOUNDSIFT_MODEL": "/models/clap", "SOUNDSIFT_API_KEY": API_KEY},
        run_args=[*LOCKED_DOWN, "--volume", f"{model}:/models/clap:ro"],
    )
    try:
        container.start()
        container.wait_healthy()
        yield container
    finally:
        container.remove()


def test_serves_the_page_and_classifies_a_real_clip(server: Container, esc50_clips: list[Path]) -> None:
    response = post_clip(server.url, esc50_clips[0], ", ".join(LABELS), AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["source"] == esc50_clips[0].name
    assert body["top_label"] in LABELS
    assert sorted(score["label"] for score in body["scores"]) == sorted(LABELS)
    assert abs(sum(score["score"] for score in body["scores"]) - 1) < 1e-3
    page = requests.get(f"{server.url}/", headers=AUTH, timeout=30)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    # With a key set, a browser without it is sent to the login page.
    login = requests.get(f"{server.url}/", headers={"Accept": "text/html"}, allow_redirects=False, timeout=30)
    assert login.status_code == 303 and login.headers["Location"] == "/login"


def test_api_key_is_enforced(server: Container, esc50_clips: list[Path]) -> None:
    missing = post_clip(server.url, esc50_clips[1], ", ".join(LABELS))
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "unauthorized"
    wrong = post_clip(server.url, esc50_clips[1], ", ".join(LABELS), {"Authorization": "Bearer not-the-key"})
    assert wrong.status_code == 401
    assert post_clip(server.url, esc50_clips[1], ", ".join(LABELS), AUTH).status_code == 200
    # probes stay open: Docker, Kubernetes and Prometheus send no key
    assert requests.get(f"{server.url}/readyz", timeout=10).status_code == 200
    metrics = requests.get(f"{server.url}/metrics", timeout=10)
    assert metrics.status_code == 200
    assert "soundsift_queue_depth" in metrics.text  # the HorizontalPodAutoscaler's custom metric


def test_runs_as_user_10001_under_tini(server: Container) -> None:
    assert server.exec("id", "-u").stdout.strip() == str(IMAGE_UID)
    assert server.exec("cat", "/proc/1/comm").stdout.strip() == "tini"
    tini = server.host_pid()
    children = Path(f"/proc/{tini}/task/{tini}/children").read_text().split()
    assert len(children) == 1
    command = Path(f"/proc/{children[0]}/cmdline").read_bytes().split(b"\0")
    assert b"serve" in command
    for pid in (tini, int(children[0])):
        uids = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Uid:"))
        assert uids.split()[1:] == [str(IMAGE_UID)] * 4, uids


def test_root_file_system_is_read_only_and_data_writable(server: Container) -> None:
    denied = server.exec("touch", "/opt/soundsift/probe")
    assert denied.returncode != 0
    assert "Read-only file system" in denied.stderr
    for folder in ("/data/huggingface", "/data/cache", "/tmp"):
        assert server.exec("touch", f"{folder}/probe").returncode == 0, folder


def test_image_settings_user_and_labels(server: Container) -> None:
    config = json.loads(docker("image", "inspect", "--format", "{{json .Config}}", server.image).stdout)
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["SOUNDSIFT_HOST"] == "0.0.0.0"
    assert env["SOUNDSIFT_PORT"] == "7860"
    assert env["HF_HOME"] == "/data/huggingface"
    assert env["SOUNDSIFT_CACHE"] == "/data/cache"
    assert env["SOUNDSIFT_BACKEND"] == ("torch" if server.target == "cpu" else "onnx")
    assert env["SOUNDSIFT_MODEL"] == DEFAULT_MODEL  # nothing baked in
    assert "SOUNDSIFT_GPUS" not in env
    assert config["User"] == f"{IMAGE_UID}:{IMAGE_UID}"
    assert "/data" in config["Volumes"]
    assert config["Entrypoint"] == ["/usr/bin/tini", "--", "soundsift"]
    assert config["Cmd"] == ["serve"]
    assert "/opt/soundsift/healthcheck.py" in config["Healthcheck"]["Test"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == soundsift.__version__
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.source"].startswith("https://")


def test_docker_stop_shuts_down_gracefully(server: Container) -> None:
    exit_code, seconds = server.stop(grace_s=30)
    logs = server.logs()
    # uvicorn re-raises SIGTERM after its clean shutdown, so 143 (128 + 15) is the normal ending
    # 137 (128 + SIGKILL) would mean the grace period ran out and it was killed; how long the stop
    # took is only reported (a loaded machine makes a graceful stop slower, not a killed one).
    assert exit_code in (0, 143), f"exit {exit_code} after {seconds:.1f} s:\n{logs}"
    print(f"docker stop: exit {exit_code} after {seconds:.1f} s")
    assert "Application shutdown complete." in logs
    assert "Finished server process" in logs


def test_onnx_image_has_no_torch_and_is_a_fraction_of_the_cpu_image(onnx_image: str, cpu_image: str) -> None:
    probe = docker(
        "run", "--rm", "--network", "none", "--entrypoint", "python", onnx_image, "-c", "import torch", check=False
    )
    assert probe.returncode == 1
    assert "No module named 'torch'" in probe.stderr
    onnx_size, cpu_size = (
        int(docker("image", "inspect", "--format", "{{.Size}}", image).stdout) for image in (onnx_image, cpu_image)
    )
    assert onnx_size < 0.6 * cpu_size, (onnx_size, cpu_size)


def host_cli_error(tmp_path: Path) -> str:
    """The error line `soundsift serve` prints on this host offline, with an empty model cache."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SOUNDSIFT_")}
    env.update(HF_HOME=str(tmp_path / "empty-hf-home"), HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, "-m", "soundsift", "serve"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    return result.stderr.strip().splitlines()[-1]


def offline_run(image: str, target: str) -> tuple[int, str]:
    """The image started with no network at all and no model: (exit code, log)."""
    container = Container(
        image, name=unique(f"soundsift-test-offline-{target}"), network="none", env={"HF_HUB_OFFLINE": "1"}
    )
    try:
        container.start()
        return container.wait_exit(timeout_s=120), container.logs()
    finally:
        container.remove()


def test_cpu_offline_without_a_model_exits_with_the_cli_error(cpu_image: str, tmp_path: Path) -> None:
    expected = host_cli_error(tmp_path)
    assert expected.startswith("soundsift serve: error: could not load the CLAP model")
    exit_code, logs = offline_run(cpu_image, "cpu")
    assert exit_code == 1, logs
    assert expected in logs.splitlines()
    assert "Traceback" not in logs


def test_onnx_offline_without_a_model_exits_with_a_clear_error(onnx_image: str) -> None:
    exit_code, logs = offline_run(onnx_image, "onnx")
    assert exit_code == 1, logs
    assert "Traceback" not in logs, logs
    assert any(line.startswith("soundsift serve: error: ") for line in logs.splitlines()), logs


def test_the_torch_free_image_runs_classify_batch_and_eval(
    onnx_image: str, mounted_onnx_dir: Path, esc50_clips: list[Path], tmp_path: Path
) -> None:
    """The ONNX-only install (no torch in the image) runs the CLI's jobs, not only the server."""
    staged = tmp_path / "staged"
    for index, clip in enumerate(esc50_clips[:4]):
        target = staged / ("dog" if index % 2 else "rain") / clip.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(clip.read_bytes())
    clips = readable_copy(staged, tmp_path / "clips")
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)  # the image's user writes here
    common = [
        "run", "--rm", "--network", "none",
        "-v", f"{mounted_onnx_dir}:/models/clap:ro", "-v", f"{clips}:/clips:ro", "-v", f"{out}:/out",
        "-e", "SOUNDSIFT_MODEL=/models/clap", "-e", "SOUNDSIFT_BACKEND=onnx",
        onnx_image,
    ]  # fmt: skip
    classify = docker(*common, "classify", "/clips", "--labels", "dog, rain", "--json", check=False)
    assert classify.returncode == 0, classify.stderr
    assert len(json.loads(classify.stdout)) == 4
    batch = docker(*common, "batch", "/clips", "--labels", "dog, rain", "--out", "/out/rows.jsonl", check=False)
    assert batch.returncode == 0, batch.stderr
    assert len((out / "rows.jsonl").read_text().splitlines()) == 4
    evaluation = docker(*common, "eval", "folder", "/clips", "--out", "/out/eval", check=False)
    assert evaluation.returncode == 0, evaluation.stderr
    report = json.loads((out / "eval" / "results.json").read_text())
    assert report["clips"] == 4 and "torch" not in report["versions"] and "onnxruntime" in report["versions"]
