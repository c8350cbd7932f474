"""deploy/monitor/compose.yaml run as users run it (monitor + mosquitto, the config mounted), with
the changes these machines need made to a copy: host networking instead of published ports (no
bridge network here; Compose refuses ports beside host networking, so they cannot be overridden
away), the images built here (the cpu image and Debian's mosquitto from
deploy/monitor/mosquitto.Dockerfile) and the tiny model in place of the mounted files. Everything
else (commands, environment, volumes, security options) is the file's own. Events must reach the
broker, and the health page must show the stream."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
import soundfile
import yaml

from tests.docker.containers import ROOT, docker, remove_image, unique
from tests.server_process import free_port

pytestmark = pytest.mark.docker

COMPOSE_FILE = ROOT / "deploy" / "monitor" / "compose.yaml"
HANG_GUARD_S = 180


@pytest.fixture(scope="module")
def mosquitto_image(docker_ready: None) -> Iterator[str]:
    tag = f"soundsift-test-mosquitto:{unique('m')}"
    base = "local/debian:bookworm-slim"
    args = ["--build-arg", f"BASE={base}"] if docker("image", "inspect", base, check=False).returncode == 0 else []
    built = docker(
        "build", "--network", "host", *args, "-f", str(COMPOSE_FILE.parent / "mosquitto.Dockerfile"),
        "-t", tag, str(COMPOSE_FILE.parent), timeout=600, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    try:
        yield tag
    finally:
        remove_image(tag)


def compose_command() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if docker("compose", "version", check=False).returncode == 0:
        return ["docker", "compose"]
    pytest.fail("neither docker-compose nor the docker compose plugin is installed (make system-packages)")


def test_the_monitor_compose_file_runs_and_events_reach_its_broker(
    cpu_image: str, mosquitto_image: str, mounted_model_dir: Path, tmp_path: Path
) -> None:
    import paho.mqtt.client as mqtt

    mqtt_port, health_port = free_port(), free_port()
    files = tmp_path / "files"
    files.mkdir()
    rate = 16_000
    t = np.arange(rate * 300) / rate  # longer than the test: the health page is up while it listens
    soundfile.write(files / "room.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate)
    (files / "monitors.yaml").write_text(
        json.dumps(  # JSON is YAML
            {
                "streams": [
                    {
                        "name": "hall",
                        "source": "/sounds/room.wav",
                        "labels": ["tone", "silence"],
                        "alert": ["tone"],
                        "threshold": 0.0,  # the tiny model's scores mean nothing: every window is heard
                        "confirm": "1/1",
                        "cooldown_s": 0.0,
                    }
                ]
            }
        )
    )
    (files / "mosquitto.conf").write_text(
        f"listener {mqtt_port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
        "persistence_location /mosquitto/data/\nlog_dest stdout\n"
    )
    for path in files.iterdir():
        path.chmod(0o644)
    mounts = {
        "mosquitto": {
            "/mosquitto/config/mosquitto.conf": f"{files / 'mosquitto.conf'}:/mosquitto/config/mosquitto.conf:ro"
        },
        "monitor": {
            "/config/monitors.yaml": f"{files / 'monitors.yaml'}:/config/monitors.yaml:ro",
            "/sounds": f"{files}:/sounds:ro",
            "/models/clap": f"{mounted_model_dir}:/models/clap:ro",
        },
    }
    compose_file = tmp_path / "compose.yaml"
    compose_file.write_text(json.dumps(for_this_machine(COMPOSE_FILE, mounts, monitor_image=cpu_image)))
    project = unique("soundsift-monitor-test").replace(".", "-")
    compose = [*compose_command(), "-p", project, "-f", str(compose_file)]
    environment = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "MOSQUITTO_IMAGE": mosquitto_image,
        "MONITOR_MQTT": f"mqtt://127.0.0.1:{mqtt_port}/soundsift",
        "MONITOR_HEALTH_PORT": str(health_port),
        "SOUNDSIFT_MODEL": "/models/clap",
    }
    events: list[dict] = []
    received = threading.Event()

    def on_message(_client, _userdata, message) -> None:
        if message.topic.endswith("/event"):
            events.append(json.loads(message.payload))
            received.set()

    subscriber = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=unique("compose-test"))
    subscriber.on_message = on_message
    subscriber.on_connect = lambda client, *_: client.subscribe("soundsift/#", qos=1)
    try:
        up = subprocess.run(
            [*compose, "up", "-d", "--no-build"], env=environment, capture_output=True, text=True, timeout=300
        )
        assert up.returncode == 0, up.stderr[-3000:]
        deadline = time.monotonic() + HANG_GUARD_S
        while time.monotonic() < deadline:
            try:
                subscriber.connect("127.0.0.1", mqtt_port)
                break
            except OSError:
                time.sleep(0.5)
        subscriber.loop_start()
        assert received.wait(HANG_GUARD_S), "no event reached the broker: " + _logs(compose, environment)
        health = requests.get(f"http://127.0.0.1:{health_port}/", timeout=10).json()
        assert "hall" in health["streams"], health
        assert events[0]["label"] == "tone" and events[0]["stream"] == "hall", events[0]
    finally:
        subscriber.loop_stop()
        subscriber.disconnect()
        subprocess.run([*compose, "down", "-v", "-t", "5"], env=environment, capture_output=True, timeout=300)


def for_this_machine(path: Path, mounts: dict[str, dict[str, str]], *, monitor_image: str) -> dict:
    """The compose file with host networking for its ports, the monitor's image, and the mounts
    given (by container path) replacing or joining the file's own."""
    spec = yaml.safe_load(path.read_text())
    for name, service in spec["services"].items():
        assert service.pop("ports", None), f"{name} publishes no port any more: update this test"
        service["network_mode"] = "host"
        own = {entry.split(":")[1]: entry for entry in service.get("volumes", [])}
        service["volumes"] = list({**own, **mounts.get(name, {})}.values())
    spec["services"]["monitor"]["image"] = monitor_image
    spec["services"]["monitor"].pop("build")
    return spec


def _logs(compose: list[str], environment: dict[str, str]) -> str:
    done = subprocess.run([*compose, "logs", "--tail", "40"], env=environment, capture_output=True, text=True)
    return done.stdout[-4000:] + done.stderr[-1000:]
