"""The MQTT sink of one stream, with Home Assistant discovery.

Topics, under ``<prefix>/<stream>/`` (the prefix comes from the broker URL, default "soundsift"):

- ``availability``: ``online`` / ``offline``, retained; ``offline`` is also the connection's last will,
  so a killed monitor or a lost connection shows as offline, and a stream whose source dropped is
  reported offline until it is reopened;
- ``event``: each confirmed event as JSON (QoS 1, not retained);
- ``<label id>/state``: ``ON`` / ``OFF`` for each alert label (QoS 1, retained);
- ``scores``: the last window's scores as JSON, at most every ``scores_interval_s`` (QoS 0).

Home Assistant discovery: one retained ``binary_sensor`` config per alert label under
``<discovery prefix>/binary_sensor/<node id>/<label id>/config`` (device class ``sound``, one device
per stream). On each connection the sink also subscribes to its own node's configs: a retained config
for a label this stream no longer has is removed (empty retained payload), so a label taken out of
the config disappears from Home Assistant. When Home Assistant announces itself (``online`` on
``<discovery prefix>/status``) the configs and states are published again.

Each stream has its own connection, because a last will belongs to a connection. paho reconnects
with backoff (1 s doubling up to ``reconnect_max_s``) from its own thread; QoS 1 messages published
while the broker is away wait in paho's queue (at most ``max_queued``; beyond it they are counted as
dropped and logged) and are sent when it is back. Events carry their SQLite id: the event log
records whether each reached the broker.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from soundsift._version import __version__
from soundsift.monitor.config import MqttConfig, object_id, redact_url
from soundsift.optional import PAHO_MQTT

logger = logging.getLogger("soundsift.monitor")

ON, OFF = "ON", "OFF"
ONLINE, OFFLINE = "online", "offline"


def node_id(prefix: str, stream: str) -> str:
    """Home Assistant's node id for a stream: the topic prefix and the stream name, in the characters
    discovery topics allow (two monitors with different prefixes never share a device)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"{prefix}_{stream}")


def discovery_config(
    *, label: str, stream: str, base: str, node: str, model: str, qos: int = 1
) -> tuple[str, dict[str, Any]]:
    """The binary sensor that Home Assistant builds for one label of one stream: (object id, config)."""
    label_id = object_id(label)
    return label_id, {
        "name": label,
        "unique_id": f"{node}_{label_id}",
        "state_topic": f"{base}/{label_id}/state",
        "payload_on": ON,
        "payload_off": OFF,
        "device_class": "sound",
        "availability_topic": f"{base}/availability",
        "payload_available": ONLINE,
        "payload_not_available": OFFLINE,
        "qos": qos,
        "device": {
            "identifiers": [node],
            "name": f"soundsift {stream}",
            "manufacturer": "soundsift",
            "model": model,
            "sw_version": __version__,
        },
        "origin": {"name": "soundsift", "sw_version": __version__},
    }


class MqttSink:
    """Publishes one stream's availability, events, states and scores, and its discovery configs."""

    def __init__(
        self,
        config: MqttConfig,
        stream: str,
        labels: Sequence[str],
        *,
        model: str,
        on_event_delivered: Callable[[int], None] = lambda _: None,
    ) -> None:
        mqtt = PAHO_MQTT.require("the MQTT sink")
        self.config, self.stream, self.on_event_delivered = config, stream, on_event_delivered
        endpoint = config.endpoint()
        self.base = f"{endpoint.prefix}/{stream}"
        self.node = node_id(endpoint.prefix, stream)
        self.availability_topic = f"{self.base}/availability"
        self._discovery_root = f"{config.discovery_prefix}/binary_sensor/{self.node}"
        self._configs = dict(
            discovery_config(label=label, stream=stream, base=self.base, node=self.node, model=model)
            for label in labels
        )
        self.label_ids = {label: object_id(label) for label in labels}
        self._states: dict[str, str] = dict.fromkeys(self.label_ids.values(), OFF)
        self._online = False
        self._lock = threading.Lock()
        self._pending: list[tuple[Any, int | None]] = []  # (MQTTMessageInfo, event id) not yet acknowledged
        self._last_scores = -float("inf")
        self.published = self.dropped = self.undelivered = self.undelivered_events = self.connections = 0
        self.connected = threading.Event()

        client_id = f"soundsift-{self.node}-{os.getpid()}-{os.urandom(3).hex()}"
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        self.client.will_set(self.availability_topic, OFFLINE, qos=1, retain=True)
        if endpoint.username:
            self.client.username_pw_set(endpoint.username, endpoint.password)
        if endpoint.tls:
            self.client.tls_set(
                ca_certs=str(config.ca_certs) if config.ca_certs else None,
                certfile=str(config.certfile) if config.certfile else None,
                keyfile=str(config.keyfile) if config.keyfile else None,
            )
        self.client.reconnect_delay_set(1, config.reconnect_max_s)
        self.client.max_queued_messages_set(config.max_queued)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        problem = broker_problem(config)
        if problem:
            logger.warning(
                "stream %s: the MQTT broker %s cannot be reached: %s; events are kept in the log and sent once it "
                "answers (retrying every %g s at the most)",
                stream,
                redact_url(config.url),
                problem,
                config.reconnect_max_s,
            )
        self.client.connect_async(endpoint.host, endpoint.port, keepalive=config.keepalive_s)
        self.client.loop_start()

    # ---- what the stream reports ------------------------------------------------------------------

    def set_online(self, online: bool) -> None:
        """The stream's source is being read (online) or is down (offline)."""
        self._online = online
        self._publish(self.availability_topic, ONLINE if online else OFFLINE, qos=1, retain=True)

    def event(self, event: Mapping[str, Any]) -> None:
        self._publish(f"{self.base}/event", json.dumps(event, ensure_ascii=False), qos=1, event_id=event.get("id"))

    def state(self, label: str, on: bool) -> None:
        label_id = self.label_ids[label]
        self._states[label_id] = ON if on else OFF
        self._publish(f"{self.base}/{label_id}/state", self._states[label_id], qos=1, retain=True)

    def scores(self, now_s: float, scores: Mapping[str, float]) -> None:
        interval = self.config.scores_interval_s
        if not interval or now_s - self._last_scores < interval:
            return
        self._last_scores = now_s
        body = {"stream_time_s": round(now_s, 2), "scores": {label: round(value, 4) for label, value in scores.items()}}
        self._publish(f"{self.base}/scores", json.dumps(body, ensure_ascii=False), qos=0)

    def close(self) -> None:
        """Mark the stream offline, give unacknowledged messages ``drain_s`` seconds, then disconnect.
        What is still unacknowledged then is counted in ``undelivered`` and logged."""
        self.set_online(False)
        deadline = time.monotonic() + self.config.drain_s
        while self._unacknowledged() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.undelivered = self._unacknowledged()
        with self._lock:
            self.undelivered_events = sum(event_id is not None for _, event_id in self._pending)
        if self.undelivered:
            logger.warning(
                "stream %s: %d MQTT message(s) not acknowledged by the broker before exit (events stay in the log)",
                self.stream,
                self.undelivered,
            )
        self.client.disconnect()
        self.client.loop_stop()

    # ---- paho callbacks (its network thread) ----------------------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            logger.warning("stream %s: the MQTT broker refused the connection: %s", self.stream, reason_code)
            return
        self.connections += 1
        logger.info("stream %s: connected to the MQTT broker", self.stream)
        if self.config.discovery:
            client.subscribe(f"{self._discovery_root}/+/config", qos=1)
            client.subscribe(f"{self.config.discovery_prefix}/status", qos=1)
        self._announce()
        self.connected.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self.connected.clear()
        if reason_code.is_failure:
            logger.warning("stream %s: lost the MQTT broker (%s); reconnecting", self.stream, reason_code)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        if message.topic == f"{self.config.discovery_prefix}/status":
            if message.payload == b"online":  # Home Assistant (re)started: tell it again
                self._announce()
            return
        label_id = message.topic.removeprefix(f"{self._discovery_root}/").removesuffix("/config")
        if message.payload and label_id not in self._configs:
            self._remove_stale(label_id, message.payload)

    def _announce(self) -> None:
        """Discovery configs, then availability and every state (all retained)."""
        if self.config.discovery:
            for label_id, config in self._configs.items():
                self._publish(f"{self._discovery_root}/{label_id}/config", json.dumps(config), qos=1, retain=True)
        self._publish(self.availability_topic, ONLINE if self._online else OFFLINE, qos=1, retain=True)
        for label_id, state in list(self._states.items()):
            self._publish(f"{self.base}/{label_id}/state", state, qos=1, retain=True)

    def _remove_stale(self, label_id: str, payload: bytes) -> None:
        logger.info("stream %s: removing the discovery config of a label it no longer has (%s)", self.stream, label_id)
        self._publish(f"{self._discovery_root}/{label_id}/config", b"", qos=1, retain=True)
        try:
            state_topic = json.loads(payload).get("state_topic")
        except (ValueError, AttributeError):
            state_topic = None
        if isinstance(state_topic, str) and state_topic.startswith(f"{self.base}/"):
            self._publish(state_topic, b"", qos=1, retain=True)  # clear its retained state too

    # ---- publishing ---------------------------------------------------------------------------------

    def _publish(
        self, topic: str, payload: str | bytes, *, qos: int, retain: bool = False, event_id: int | None = None
    ) -> None:
        mqtt = PAHO_MQTT.require("the MQTT sink")
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            self.dropped += 1
            logger.warning(
                "stream %s: MQTT queue full (%d messages while the broker is away); %s dropped",
                self.stream,
                self.config.max_queued,
                topic,
            )
            return
        self.published += 1
        if qos:
            with self._lock:
                self._pending.append((info, event_id))
            self._unacknowledged()

    def _unacknowledged(self) -> int:
        """Forget acknowledged messages (reporting delivered events); the number still waiting."""
        with self._lock:
            done: list[tuple[Any, int | None]] = []
            waiting: list[tuple[Any, int | None]] = []
            for item in self._pending:
                (done if _acknowledged(item[0]) else waiting).append(item)
            self._pending = waiting
        for _, event_id in done:
            if event_id is not None:
                self.on_event_delivered(event_id)
        return len(self._pending)


def broker_problem(config: MqttConfig, *, timeout_s: float = 3.0) -> str | None:
    """Why the broker cannot be reached right now (DNS, refused, no answer, TLS), or None: one TCP
    (and TLS) handshake at start, so a wrong address is said at once instead of at exit."""
    endpoint = config.endpoint()
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout_s) as connection:
            if endpoint.tls:
                context = ssl.create_default_context(cafile=str(config.ca_certs) if config.ca_certs else None)
                if config.certfile:
                    context.load_cert_chain(str(config.certfile), str(config.keyfile) if config.keyfile else None)
                with context.wrap_socket(connection, server_hostname=endpoint.host):
                    pass
    except socket.gaierror as error:
        return f"the name {endpoint.host!r} does not resolve ({error.strerror})"
    except ConnectionRefusedError:
        return f"connection refused at {endpoint.host}:{endpoint.port} (is the broker running, on that port?)"
    except TimeoutError:
        return f"no answer from {endpoint.host}:{endpoint.port} within {timeout_s:g} s"
    except ssl.SSLError as error:
        return f"the TLS handshake failed ({error.reason or error})"
    except OSError as error:
        return error.strerror or str(error)
    return None


def _acknowledged(info: Any) -> bool:
    """Whether the broker acknowledged a QoS 1 message. Not ``info.is_published()``: that raises for a
    message first published while the broker was away (its rc stays MQTT_ERR_NO_CONN), although paho
    keeps such a message and sends it on reconnect, where the acknowledgement sets this same flag."""
    with info._condition:
        return bool(info._published)
