"""A real mosquitto on a free loopback port, and a recording MQTT client.

mosquitto comes from the Debian package (`make system-packages` installs it). Without the binary the
tests that need it are skipped with the reason, or fail where SOUNDSIFT_REQUIRE_SHARED=1 (CI), so a
missing broker never passes silently. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or next(
        (path for path in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(path, os.X_OK)), None
    )
    if found:
        return found
    reason = "needs the mosquitto broker (Debian package mosquitto; `make system-packages` installs it)"
    if os.environ.get("SOUNDSIFT_REQUIRE_SHARED") == "1":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


class Broker:
    """mosquitto on 127.0.0.1:<port>, with persistence so that it can be stopped and started again
    with its sessions (a subscriber with a persistent session misses nothing across a restart)."""

    def __init__(self, folder: Path, *, tls: TlsFiles | None = None) -> None:
        self.binary = mosquitto_binary()
        self.tls = tls
        self.port = free_port()
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.config = folder / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            # As root, mosquitto switches to its own user, which cannot read pytest's private folders.
            + ("user root\n" if os.geteuid() == 0 else "")
            + f"persistence_location {folder}/\nlog_dest file {folder}/mosquitto.log\nmax_queued_messages 100000\n"
            + (
                f"cafile {tls.ca}\ncertfile {tls.server_cert}\nkeyfile {tls.server_key}\nrequire_certificate true\n"
                if tls
                else ""
            )
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10.0) -> None:
        self.process = subprocess.Popen([self.binary, "-c", str(self.config)], stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited: {self.process.stderr.read().decode() if self.process.stderr else ''}"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"mosquitto did not listen on {self.port} within {timeout_s} s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: mosquitto saves its persistence file
            self.process.wait(timeout=10)
        self.process = None


@dataclass(frozen=True)
class TlsFiles:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def make(cls, folder: Path) -> TlsFiles:
        openssl = shutil.which("openssl")
        if not openssl:
            pytest.skip("needs the openssl command to make test certificates")
        folder.mkdir(parents=True, exist_ok=True)

        def run(*args: str) -> None:
            subprocess.run([openssl, *args], cwd=folder, check=True, capture_output=True, timeout=60)

        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=soundsift test CA")  # fmt: skip
        (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
        for name, subject in (("server", "/CN=127.0.0.1"), ("client", "/CN=soundsift")):
            run(
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                f"{name}.key",
                "-out",
                f"{name}.csr",
                "-subj",
                subject,
            )
            run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "2", "-extfile", "san.ext")  # fmt: skip
        return cls(folder / "ca.pem", folder / "server.pem", folder / "server.key", folder / "client.pem",
                   folder / "client.key")  # fmt: skip


@dataclass
class Message:
    topic: str
    payload: bytes
    retain: bool
    at: float

    def json(self) -> dict:
        return json.loads(self.payload)


class Recorder:
    """A subscriber that keeps every message it receives, in order."""

    def __init__(self, broker: Broker, topics: str | list[str], *, client_id: str | None = None) -> None:
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self.topics = [topics] if isinstance(topics, str) else topics
        persistent = client_id is not None
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or "", clean_session=not persistent
        )
        if broker.tls:
            self.client.tls_set(str(broker.tls.ca), str(broker.tls.client_cert), str(broker.tls.client_key))
        self.client.reconnect_delay_set(1, 2)
        self.client.on_connect = lambda client, *_: [client.subscribe(topic, qos=1) for topic in self.topics]
        self.client.on_message = self._keep
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()

    def _keep(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Message(message.topic, message.payload, bool(message.retain), time.monotonic()))

    def on(self, topic: str) -> list[Message]:
        with self._lock:
            return [message for message in self.messages if message.topic == topic]

    def wait_for(self, condition: Callable[[], object], timeout_s: float = 10.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.05)
        raise AssertionError(
            f"not seen within {timeout_s} s: {what}; topics seen: {sorted({m.topic for m in self.messages})}"
        )

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def retained(broker: Broker, pattern: str, settle_s: float = 1.0) -> dict[str, bytes]:
    """The retained messages under ``pattern`` now, as a fresh subscriber receives them."""
    recorder = Recorder(broker, pattern)
    time.sleep(settle_s)
    recorder.close()
    return {message.topic: message.payload for message in recorder.messages if message.retain}
