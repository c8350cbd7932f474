"""What `soundsift monitor` runs: one or more streams, each with its labels, alert rules and sinks,
and what the streams share (the MQTT broker, evidence clips, the event log, the health port).

Everything is validated when built: unknown keys are refused, and each problem is reported with the
stream and the field it concerns (`config_error`). The single-stream flags of the CLI build the same
objects (a config with one stream), so both paths share these rules and defaults.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from soundsift.core.audio import GATE_RANGE_DBFS
from soundsift.core.labels import label_names
from soundsift.errors import ConfigurationError, LabelError
from soundsift.monitor.sources import names_a_local_file
from soundsift.optional import YAML

# Stream names become MQTT topic levels and Home Assistant ids, which allow only these characters.
STREAM_NAME = r"^[A-Za-z0-9_-]{1,64}$"
MQTT_PASSWORD_VARIABLE = "SOUNDSIFT_MQTT_PASSWORD"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StreamConfig(_Strict):
    """One audio source and how it is judged: labels, thresholds, N-of-M, cooldown, and its sinks."""

    name: str = Field("default", pattern=STREAM_NAME, description="Topic level and Home Assistant device id.")
    source: str = Field("mic", min_length=1, description="mic, a file, '-' (PCM on stdin), or a URL PyAV opens.")
    source_rate: int = Field(16_000, ge=8_000, le=192_000, description="Sample rate of mic and stdin audio.")
    speed: float = Field(1.0, gt=0, le=1000, description="Replay speed of a file source.")
    labels: str | list[str] | dict[str, list[str]] | None = Field(
        None, description="Every zero-shot label scored (the label forms of --labels); optional with an adapter."
    )
    alert: list[str] | None = Field(None, description="Labels that raise events (default: every label).")
    adapter: Path | None = Field(None, description="An adapter file (`soundsift teach`): its taught labels come first.")
    window_s: float = Field(2.0, gt=0, le=60)
    hop_s: float = Field(1.0, gt=0, le=60)
    threshold: float = Field(0.5, ge=0, le=1, description="Score that counts as heard.")
    thresholds: dict[str, float] = Field(default_factory=dict, description="Per-label overrides of threshold.")
    confirm: str = Field("2/3", description="N/M: an event when heard in N of the last M hops.")
    cooldown_s: float = Field(30.0, ge=0, description="Seconds before a label raises another event.")
    hold_s: float = Field(5.0, ge=0, description="Seconds a label's state stays ON after it was last confirmed.")
    min_dbfs: float = Field(
        -50.0,
        ge=GATE_RANGE_DBFS[0],
        le=GATE_RANGE_DBFS[1],
        validation_alias=AliasChoices("min_dbfs", "gate_db"),  # gate_db: its name before 0.2
        description="Silence gate: windows quieter than this RMS level (dBFS) are not sent to the model and "
        "count as not heard.",
    )
    max_seconds: float | None = Field(None, gt=0, description="Stop after this much audio.")
    reconnect_max_s: float = Field(30.0, gt=0, description="Longest wait between attempts to reopen a live source.")
    webhook: str | None = Field(None, description="POST each event as JSON to this http(s) URL.")
    webhook_timeout_s: float = Field(5.0, gt=0)
    webhook_retries: int = Field(3, ge=0, le=20)
    database: Path | None = Field(None, description="SQLite event log (default: the monitor's).")
    mqtt: bool = Field(True, description="Publish to the monitor's MQTT broker (when it has one).")
    evidence: bool = Field(True, description="Write evidence clips (when the monitor has an evidence folder).")

    @field_validator("source")
    @classmethod
    def _existing_file(cls, source: str) -> str:
        """A file source that is not there is a mistake to report now: reconnecting is for network
        streams and devices, which can come back."""
        if names_a_local_file(source) and not Path(source).is_file():
            problem = "is a folder, not an audio file" if Path(source).is_dir() else "does not exist"
            raise ValueError(f"the file {source!r} {problem} (a network stream needs its scheme, e.g. rtsp://)")
        return source

    @field_validator("labels")
    @classmethod
    def _usable_labels(cls, labels: str | list[str] | dict[str, list[str]] | None) -> Any:
        if labels is None:
            return labels
        try:
            label_names(labels, min_labels=1)
        except LabelError as error:
            raise ValueError(str(error)) from None
        return labels

    @field_validator("alert", mode="before")
    @classmethod
    def _alert_list(cls, alert: object) -> object:
        return label_names(alert, min_labels=1) if isinstance(alert, str) else alert

    @field_validator("confirm")
    @classmethod
    def _n_of_m(cls, confirm: str) -> str:
        needed, _, window = confirm.partition("/")
        if not (needed.strip().isdigit() and window.strip().isdigit()):
            raise ValueError(f"expected N/M such as 2/3, got {confirm!r}")
        if not 1 <= int(needed) <= int(window) <= 100:
            raise ValueError(f"{confirm!r}: need 1 <= N <= M <= 100")
        return f"{int(needed)}/{int(window)}"

    @field_validator("webhook")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is not None and (urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname):
            raise ValueError(f"expected an http:// or https:// URL, got {url!r}")
        return url

    @field_validator("adapter")
    @classmethod
    def _readable_adapter(cls, adapter: Path | None) -> Path | None:
        if adapter is not None and not adapter.is_file():
            raise ValueError(f"{adapter} is not a file")
        return adapter

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> StreamConfig:
        if self.hop_s > self.window_s:
            raise ValueError(f"hop_s ({self.hop_s}) must be at most window_s ({self.window_s})")
        # With an adapter (the stream's, or the model's: context "adapter"), its taught labels are known
        # only once it is loaded, and the monitor checks the alert labels then.
        adapter = self.adapter is not None or bool((info.context or {}).get("adapter"))
        if self.labels is not None and not adapter and len(label_names(self.labels)) < 2:
            raise ValueError("labels: give at least 2 labels (or an adapter)")
        names = set(label_names(self.labels)) if self.labels is not None else set()
        unknown = [label for label in self.alert or () if label not in names]
        unknown += [label for label in self.thresholds if label not in names]
        if unknown and not adapter and self.labels is not None:
            raise ValueError(f"alert or thresholds name labels not in labels: {', '.join(sorted(set(unknown)))}")
        if any(not 0 <= value <= 1 for value in self.thresholds.values()):
            raise ValueError("thresholds must be between 0 and 1")
        return self

    @property
    def alert_labels(self) -> list[str]:
        """The alert labels as configured (with an adapter, the monitor adds its taught labels)."""
        return self.alert if self.alert else label_names(self.labels) if self.labels is not None else []

    @property
    def confirm_n(self) -> int:
        return int(self.confirm.split("/")[0])

    @property
    def confirm_m(self) -> int:
        return int(self.confirm.split("/")[1])

    def threshold_of(self, label: str) -> float:
        return self.thresholds.get(label, self.threshold)


@dataclass(frozen=True)
class BrokerEndpoint:
    """Where an MQTT URL points: mqtt[s]://[user[:password]@]host[:port][/prefix]."""

    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None
    prefix: str


class MqttConfig(_Strict):
    """The broker every stream publishes to (each stream on its own connection, with its own last will)."""

    url: str = Field(description="mqtt://[user:pass@]host[:port][/prefix] or mqtts://...")
    ca_certs: Path | None = Field(None, description="mqtts: CA bundle that signed the broker's certificate.")
    certfile: Path | None = Field(None, description="mqtts: client certificate (PEM).")
    keyfile: Path | None = Field(None, description="mqtts: the client certificate's key (PEM).")
    discovery: bool = Field(True, description="Publish Home Assistant discovery configs.")
    discovery_prefix: str = Field("homeassistant", pattern=r"^[A-Za-z0-9_/-]+$")
    scores_interval_s: float = Field(5.0, ge=0, description="Publish the last scores this often (0: never).")
    keepalive_s: int = Field(30, ge=5, le=3600)
    reconnect_max_s: int = Field(30, ge=1, le=3600, description="Longest wait between reconnection attempts.")
    max_queued: int = Field(10_000, ge=10, description="Messages kept while the broker is unreachable.")
    drain_s: float = Field(10.0, ge=0, description="At exit, how long to wait for unacknowledged messages.")

    @field_validator("url")
    @classmethod
    def _parsable(cls, url: str) -> str:
        parse_broker_url(url)
        return url

    @field_validator("ca_certs", "certfile", "keyfile")
    @classmethod
    def _readable(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_file():
            raise ValueError(f"{path} is not a file")
        return path

    @model_validator(mode="after")
    def _tls_files_need_mqtts(self) -> MqttConfig:
        if not self.endpoint().tls and (self.ca_certs or self.certfile or self.keyfile):
            raise ValueError("CA and client certificates need an mqtts:// URL")
        if self.keyfile and not self.certfile:
            raise ValueError("keyfile needs certfile")
        return self

    def endpoint(self) -> BrokerEndpoint:
        return parse_broker_url(self.url)


def parse_broker_url(url: str) -> BrokerEndpoint:
    """The parts of an MQTT URL; ValueError naming what is wrong. A user without a password in the URL
    takes it from SOUNDSIFT_MQTT_PASSWORD, so that it need not appear in a command line."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"expected mqtt:// or mqtts://, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"{redact_url(url)}: no broker host")
    try:
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    except ValueError:
        raise ValueError(f"{redact_url(url)}: the port must be a number from 1 to 65535") from None
    prefix = parts.path.strip("/") or "soundsift"
    if any(not level or set(level) & {"+", "#"} for level in prefix.split("/")):
        raise ValueError(f"{redact_url(url)}: the topic prefix {prefix!r} has an empty level or a wildcard")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if username and password is None:
        password = os.environ.get(MQTT_PASSWORD_VARIABLE)
    return BrokerEndpoint(parts.hostname, port, parts.scheme == "mqtts", username, password, prefix)


def redact_url(url: str) -> str:
    """The URL without its password, for logs, events and the health page (camera and broker URLs
    often carry credentials)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username}:***@{netloc}").geturl()


class EvidenceConfig(_Strict):
    """Evidence clips: the audio around each event, kept for a while within a size budget."""

    dir: Path = Field(description="Folder of the clips (one subfolder per stream).")
    before_s: float = Field(5.0, ge=0, le=60, description="Seconds kept before the event starts.")
    after_s: float = Field(5.0, ge=0, le=60, description="Seconds recorded after the event is confirmed.")
    format: Literal["flac", "opus"] = "flac"
    max_age_days: float | None = Field(30.0, gt=0, description="Clips older than this are deleted.")
    max_total_mb: float | None = Field(1000.0, gt=0, description="Oldest clips are deleted beyond this total.")


QUIET_HOURS = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")
TARGET_NAME = r"^[A-Za-z0-9_.-]{1,64}$"


class NotifyTarget(_Strict):
    """One place notifications go (an Apprise URL) and the rule of which events it is told about."""

    url: str = Field(min_length=1, description="An Apprise URL: ntfy://, tgram://, discord://, mailto://, json:// ...")
    name: str | None = Field(
        None,
        pattern=TARGET_NAME,
        description="The target's name in logs, the event log and health (default: its scheme and a hash of the "
        "URL, which often holds a token).",
    )
    labels: list[str] | None = Field(None, description="Only these labels' events (default: every alert label).")
    streams: list[str] | None = Field(None, description="Only these streams' events (default: every stream).")
    min_score: float = Field(0.0, ge=0, le=1, description="Only events scored at least this.")
    quiet_hours: str | None = Field(
        None, description="HH:MM-HH:MM in local time (may cross midnight): no notification then."
    )
    cooldown_s: float = Field(
        300.0, ge=0, description="Seconds before this target is told about the same label of the same stream again."
    )
    attach: bool = Field(False, description="Attach the event's evidence clip (waits until it is written).")

    @field_validator("url")
    @classmethod
    def _has_scheme(cls, url: str) -> str:
        if not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", url):
            raise ValueError(f"expected an Apprise URL such as ntfy://host/topic, got {redact_url(url)!r}")
        return url

    @field_validator("labels", "streams", mode="before")
    @classmethod
    def _list(cls, names: object) -> object:
        return label_names(names, min_labels=1) if isinstance(names, str) else names

    @field_validator("quiet_hours")
    @classmethod
    def _window(cls, window: str | None) -> str | None:
        if window is None:
            return window
        window = window.replace(" ", "")
        match = QUIET_HOURS.match(window)
        if not match:
            raise ValueError(f"expected HH:MM-HH:MM (24-hour local time, e.g. 22:00-07:00), got {window!r}")
        if match[1] + match[2] == match[3] + match[4]:
            raise ValueError(f"{window!r}: the quiet hours start and end at the same minute")
        return window

    @property
    def target_name(self) -> str:
        scheme = self.url.partition("://")[0].lower()
        return self.name or f"{scheme}-{hashlib.sha256(self.url.encode('utf-8')).hexdigest()[:8]}"


class NotifyConfig(_Strict):
    """Notifications through Apprise: the targets, and how deliveries are retried."""

    targets: list[NotifyTarget] = Field(min_length=1, max_length=64)
    retries: int = Field(5, ge=0, le=50, description="Attempts after the first, per notification and target.")
    retry_s: float = Field(2.0, gt=0, le=3600, description="Wait before the first retry; it doubles each time.")
    retry_max_s: float = Field(120.0, gt=0, le=86_400, description="Longest wait between attempts.")
    drain_s: float = Field(10.0, ge=0, description="At exit, how long queued notifications may take.")
    clip_wait_s: float = Field(
        30.0, ge=0, description="With attach, how long past the clip's end to wait for it to be written."
    )

    @field_validator("targets")
    @classmethod
    def _unique_names(cls, targets: list[NotifyTarget]) -> list[NotifyTarget]:
        names = [target.target_name for target in targets]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"two targets share the name {twice[0]!r}; give each a distinct name")
        return targets


class PrivacyConfig(_Strict):
    """Labels whose sound must never end up in an evidence clip (see soundsift.monitor.privacy)."""

    private_labels: list[str] = Field(
        default_factory=list,
        description="More words and phrases that make a label private (e.g. labels in your language).",
    )
    default_private_labels: bool = Field(
        True, description="Also the defaults: speech, talking, conversation and their glossary translations."
    )

    @field_validator("private_labels", mode="before")
    @classmethod
    def _list(cls, terms: object) -> object:
        return label_names(terms) if isinstance(terms, str) else terms

    @field_validator("private_labels")
    @classmethod
    def _non_empty_terms(cls, terms: list[str]) -> list[str]:
        if any(not term.strip() for term in terms):
            raise ValueError("a private label is empty")
        return terms


class MonitorConfig(_Strict):
    """Every stream of one `soundsift monitor` process (one model serves them all) and the shared parts."""

    streams: list[StreamConfig] = Field(min_length=1, max_length=64)
    database: Path = Field(Path("soundsift-events.db"), description="The SQLite event log.")
    webhook_drain_s: float = Field(10.0, ge=0, description="At exit, how long queued webhook calls may take.")
    mqtt: MqttConfig | None = None
    evidence: EvidenceConfig | None = None
    health_host: str = Field("127.0.0.1", min_length=1)
    health_port: int | None = Field(None, ge=0, le=65535, description="Serve the streams' state here (0: any port).")
    notify: NotifyConfig | None = None
    privacy: PrivacyConfig = Field(default_factory=lambda: PrivacyConfig.model_validate({}))

    @field_validator("streams")
    @classmethod
    def _unique_names(cls, streams: list[StreamConfig]) -> list[StreamConfig]:
        seen: set[str] = set()
        for stream in streams:
            if stream.name in seen:
                raise ValueError(f"two streams are named {stream.name!r}; names must be unique")
            seen.add(stream.name)
        if sum(stream.source == "-" for stream in streams) > 1:
            raise ValueError("only one stream can read stdin ('-')")
        return streams

    @model_validator(mode="after")
    def _targets_name_streams(self) -> MonitorConfig:
        names = {stream.name for stream in self.streams}
        for target in self.notify.targets if self.notify else ():
            unknown = sorted(set(target.streams or ()) - names)
            if unknown:
                raise ValueError(f"notify target {target.target_name}: no stream named {', '.join(unknown)}")
        return self


def load_config(path: Path, overrides: Mapping[str, Any] | None = None, *, adapter: bool = False) -> MonitorConfig:
    """Read a YAML monitor config; ``overrides`` replace its top-level keys (the CLI's --mqtt, --db ...),
    and within the mqtt and evidence sections only the keys they give. ``adapter``: the model has an
    adapter, whose taught labels every stream scores.
    Raises ConfigurationError naming the file, the stream and the field."""
    yaml = YAML.require("a --config file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigurationError(f"cannot read the config: {error.strerror}", source=str(path)) from None
    except yaml.YAMLError as error:
        raise ConfigurationError(f"not valid YAML: {error}", source=str(path)) from None
    if not isinstance(data, dict):
        raise ConfigurationError("expected a mapping with a 'streams' list at the top", source=str(path))
    for key, value in (overrides or {}).items():  # a flag's part of a section keeps the file's other keys
        both = isinstance(value, dict) and isinstance(data.get(key), dict)
        data = {**data, key: {**data[key], **value} if both else value}
    try:
        return MonitorConfig.model_validate(data, context={"adapter": adapter})
    except ValidationError as error:
        raise ConfigurationError(config_error(error, data), source=str(path)) from None


def config_error(error: ValidationError, data: Mapping[str, Any], *, flags: Mapping[str, str] | None = None) -> str:
    """One line per problem, naming the stream (by name, as the user wrote it) and the field:
    'stream "kitchen" (streams[1]): threshold: Input should be less than or equal to 1'.
    With ``flags`` (field name -> flag), single-stream problems are told as flags instead."""
    streams = data.get("streams")
    lines = []
    for issue in error.errors():
        loc: Sequence[str | int] = issue["loc"]
        message = issue["msg"].removeprefix("Value error, ")
        if flags is not None:
            fields = [str(part) for part in loc if isinstance(part, str) and part != "streams"]
            dotted = ".".join(fields)
            where = flags[dotted] if dotted in flags else ", ".join(flags.get(field, field) for field in fields[-1:])
            lines.append(f"{where}: {message}" if where else message)
            continue
        if len(loc) >= 2 and loc[0] == "streams" and isinstance(loc[1], int):
            entry = streams[loc[1]] if isinstance(streams, list) and loc[1] < len(streams) else None
            name = entry.get("name") if isinstance(entry, dict) else None
            stream = f'stream "{name}" (streams[{loc[1]}])' if name else f"streams[{loc[1]}]"
            field = ".".join(str(part) for part in loc[2:]) or "the entry"
            lines.append(f"{stream}: {field}: {message}")
        else:
            lines.append(f"{'.'.join(str(part) for part in loc) or 'the config'}: {message}")
    return "\n  ".join(["invalid monitor config:", *lines]) if flags is None else "; ".join(lines)


def object_id(text: str) -> str:
    """A safe, stable id for a label (or any name) in MQTT topics and Home Assistant: an ASCII slug
    for recognition plus a short hash of the exact text, so that labels in any script get distinct ids
    that stay the same from run to run ('smoke alarm' -> 'smoke_alarm_2b7f3c1a'; '烟雾报警' ->
    'label_5e0d9a44')."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "_", ascii_text.lower()).strip("_")[:32].strip("_") or "label"
    return f"{slug}_{hashlib.sha256(text.encode('utf-8')).hexdigest()[:8]}"
