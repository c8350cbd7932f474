"""A real mosquitto on a free loopback port, and a recording MQTT client.

mosquitto comes from the Debian package (`make system-packages` installs it). Without the binary the
tests that need it are skipped with the reason, or fail where SOUNDSIFT_REQUIRE_SHARED=1 (CI), so a
missing broker never passes silently. Every wait is bounded, by a hang guard: each waits for a state
(the broker saying it runs, a subscription acknowledged, a message seen), never for a guessed time.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

HANG_GUARD_S = 60.0  # only a hung broker or client takes this long; no test waits for it otherwise


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
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.config = folder / "mosquitto.conf"
        self.log = folder / "mosquitto.log"
        self._listen_on(free_port())
        self.process: subprocess.Popen[bytes] | None = None
        self._has_run = False

    def _listen_on(self, port: int) -> None:
        self.port = port
        folder, tls = self.folder, self.tls
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            # As root, mosquitto switches to its own user, which cannot read pytest's private folders.
            + ("user root\n" if os.geteuid() == 0 else "")
            + f"persistence_location {folder}/\nlog_dest file {self.log}\nmax_queued_messages 100000\n"
            + (
                f"cafile {tls.ca}\ncertfile {tls.server_cert}\nkeyfile {tls.server_key}\nrequire_certificate true\n"
                if tls
                else ""
            )
        )

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = HANG_GUARD_S) -> None:
        """Start mosquitto and return once it says it runs (its own log line, written after its
        listener is open: a port that merely accepts connections might be another process's).

        The free port is picked before mosquitto binds it, so another process on this machine can
        take it meanwhile; a first start is then tried again on another port (a restart keeps its
        port: its clients reconnect there)."""
        for attempt in range(1, 4):
            said_from = self.log.stat().st_size if self.log.exists() else 0
            self.process = subprocess.Popen([self.binary, "-c", str(self.config)], stderr=subprocess.PIPE)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                said = self.log.read_bytes()[said_from:].decode(errors="replace") if self.log.exists() else ""
                if self.process.poll() is not None:
                    if "Address already in use" in said and not self._has_run and attempt < 3:
                        self._listen_on(free_port())
                        break
                    stderr = self.process.stderr.read().decode() if self.process.stderr else ""
                    self.process = None
                    raise RuntimeError(f"mosquitto exited: {stderr}{said}")
                if " running" in said:
                    self._has_run = True
                    return
                time.sleep(0.02)
            else:
                self.stop()
                raise TimeoutError(f"mosquitto did not say it runs on {self.port} within {timeout_s} s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: mosquitto saves its persistence file
            try:
                self.process.wait(timeout=HANG_GUARD_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process and self.process.stderr:
            self.process.stderr.close()
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
        """Returns once the broker has acknowledged the subscriptions, so nothing published after
        this is missed (a message published before the SUBACK would go to no one)."""
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self.topics = [topics] if isinstance(topics, str) else topics
        self.subscribed = threading.Event()
        persistent = client_id is not None
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or "", clean_session=not persistent
        )
        if broker.tls:
            self.client.tls_set(str(broker.tls.ca), str(broker.tls.client_cert), str(broker.tls.client_key))
        self.client.reconnect_delay_set(1, 2)
        self.client.on_connect = lambda client, *_: client.subscribe([(topic, 1) for topic in self.topics])
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._keep
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        if not self.subscribed.wait(HANG_GUARD_S):
            self.close()
            raise AssertionError(f"the broker never acknowledged the subscription to {self.topics}")

    def _keep(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Message(message.topic, message.payload, bool(message.retain), time.monotonic()))

    def on(self, topic: str) -> list[Message]:
        with self._lock:
            return [message for message in self.messages if message.topic == topic]

    def wait_for(self, condition: Callable[[], object], timeout_s: float = HANG_GUARD_S, what: str = "") -> None:
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


def retained(broker: Broker, pattern: str) -> dict[str, bytes]:
    """The retained messages under ``pattern`` now, as a fresh subscriber receives them.

    All of them have arrived once a marker that the subscriber publishes after its SUBACK has come
    back: mosquitto queues a subscription's retained messages while it handles the SUBSCRIBE, before
    it reads the next packet (the marker) from the same client, and delivers them in that order."""
    marker = f"soundsift-test/marker/{uuid.uuid4().hex}"
    recorder = Recorder(broker, [pattern, marker])
    try:
        recorder.client.publish(marker, b"end", qos=1)
        recorder.wait_for(lambda: recorder.on(marker), what="the marker after the retained messages")
    finally:
        recorder.close()
    return {message.topic: message.payload for message in recorder.messages if message.retain}
