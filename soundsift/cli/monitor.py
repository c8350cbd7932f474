"""`soundsift monitor`: listen continuously to one stream (flags) or several (--config) and alert."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from soundsift.cli.common import (
    EXIT_OK,
    MIN_DBFS_HELP,
    add_model_options,
    add_translation_options,
    settings_from_args,
)
from soundsift.errors import EXIT_FAILED, ConfigurationError, UsageError

if TYPE_CHECKING:
    from soundsift.monitor.config import MonitorConfig


# What the single-stream options are called on the command line, for error messages.
FLAGS = {
    "labels": "--labels",
    "alert": "--alert",
    "source": "--source",
    "window_s": "--window",
    "hop_s": "--hop",
    "threshold": "--threshold",
    "confirm": "--confirm",
    "cooldown_s": "--cooldown",
    "hold_s": "--hold",
    "min_dbfs": "--min-dbfs",
    "name": "--name",
    "webhook": "--webhook",
    "url": "--mqtt",
    "ca_certs": "--mqtt-ca",
    "certfile": "--mqtt-cert",
    "keyfile": "--mqtt-key",
    "dir": "--evidence-dir",
    "before_s": "--evidence-before",
    "after_s": "--evidence-after",
    "health_port": "--health-port",
    "notify.targets.url": "--notify",
    "notify.targets.labels": "--notify-labels",
    "notify.targets.min_score": "--notify-min-score",
    "notify.targets.quiet_hours": "--notify-quiet-hours",
    "notify.targets.cooldown_s": "--notify-cooldown",
}


def build_config(data: Mapping[str, Any]) -> MonitorConfig:
    """A single-stream config from flag values; ConfigurationError names the flags at fault."""
    from pydantic import ValidationError

    from soundsift.monitor.config import MonitorConfig, config_error

    try:
        return MonitorConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigurationError(config_error(error, data, flags=FLAGS)) from None


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "monitor",
        help="listen continuously and alert when a sound happens",
        description="Score the last --window seconds every --hop seconds against --labels; an --alert label "
        "fires when its score reached --threshold in N of the last M hops (--confirm N/M), then stays quiet for "
        "--cooldown seconds. Windows quieter than --min-dbfs are not scored. Alerts are printed, stored in a "
        "SQLite log (--db) and optionally POSTed as JSON to --webhook, published to an MQTT broker (--mqtt, "
        "with Home Assistant discovery) and sent as notifications through Apprise (--notify). Evidence clips "
        "are never written around a window where a private label (speech, by default) was heard. --config FILE "
        "listens to several streams with one model (see docs/smart-home.md). Live sources reconnect with backoff "
        "(a file source that does not exist is an error at start); when scoring cannot keep up, hops are skipped "
        "and counted. Exit code 1 when an event never "
        "reached the MQTT broker (it stays pending in the log).",
    )
    parser.add_argument("--config", type=Path, help="YAML file of streams (replaces --labels, --source ...)")
    parser.add_argument("--labels", help="every label to score (comma-separated)")
    parser.add_argument("--alert", help="labels that raise alerts (a subset of --labels; default: all)")
    add_translation_options(parser)
    parser.add_argument(
        "--source",
        default="mic",
        help="mic (default; needs sounddevice), a file (replayed in real time), '-' for raw 16-bit mono PCM on "
        "stdin, or anything PyAV opens: rtsp://..., http://..., alsa:hw:0, pulse:default",
    )
    parser.add_argument("--name", default="default", help="the stream's name in MQTT topics and events (default)")
    parser.add_argument("--source-rate", type=int, default=16_000, help="sample rate of mic/stdin audio (16000)")
    parser.add_argument("--speed", type=float, default=1.0, help="replay speed for a file source (default 1.0)")
    live = parser.add_argument_group("scoring and alerts")
    live.add_argument("--window", type=float, default=2.0, help="seconds scored each time (default 2)")
    live.add_argument("--hop", type=float, default=1.0, help="seconds between scorings (default 1)")
    live.add_argument(
        "--threshold",
        dest="alert_threshold",
        metavar="SCORE",
        type=float,
        default=0.5,
        help="score that counts as heard (default 0.5)",
    )
    live.add_argument("--confirm", default="2/3", help="N/M: alert when heard in N of the last M hops (2/3)")
    live.add_argument("--cooldown", type=float, default=30.0, help="seconds before a label alerts again (30)")
    live.add_argument("--hold", type=float, default=5.0, help="seconds a label's MQTT state stays ON (5)")
    live.add_argument(
        "--min-dbfs",
        "--gate-db",
        dest="min_dbfs",
        type=float,
        default=-50.0,
        metavar="DBFS",
        help=f"{MIN_DBFS_HELP} (default -50; --gate-db is its old name)",
    )
    live.add_argument("--duration", type=float, help="stop after this many seconds of audio")
    sinks = parser.add_argument_group("where alerts go (with --config, these replace the file's shared settings)")
    sinks.add_argument("--db", type=Path, help="SQLite event log (default soundsift-events.db)")
    sinks.add_argument("--webhook", help="POST each alert as JSON to this URL (retried, never blocks listening)")
    sinks.add_argument("--webhook-timeout", type=float, default=5.0, help="seconds per webhook attempt (5)")
    sinks.add_argument(
        "--mqtt",
        metavar="URL",
        help="publish to this broker: mqtt://[user[:password]@]host[:port][/prefix] or mqtts://... "
        "(a password can come from SOUNDSIFT_MQTT_PASSWORD)",
    )
    sinks.add_argument("--mqtt-ca", type=Path, help="mqtts: CA certificates that signed the broker's")
    sinks.add_argument("--mqtt-cert", type=Path, help="mqtts: client certificate (PEM)")
    sinks.add_argument("--mqtt-key", type=Path, help="mqtts: the client certificate's key (PEM)")
    sinks.add_argument("--no-discovery", action="store_true", help="no Home Assistant discovery configs")
    sinks.add_argument("--evidence-dir", type=Path, help="write a clip of each event here (FLAC)")
    sinks.add_argument("--evidence-before", type=float, help="seconds of a clip before the event (5)")
    sinks.add_argument("--evidence-after", type=float, help="seconds of a clip after the event (5)")
    sinks.add_argument(
        "--notify",
        metavar="URL",
        action="append",
        help="send a notification of each event to this Apprise URL (ntfy://, tgram://, discord://, mailto://, "
        "json://, ...; repeatable; retried, never blocks listening)",
    )
    sinks.add_argument("--notify-labels", help="--notify only for these labels (default: every alert label)")
    sinks.add_argument("--notify-min-score", type=float, help="--notify only for events scored at least this (0)")
    sinks.add_argument(
        "--notify-quiet-hours", metavar="HH:MM-HH:MM", help="no --notify in this local-time window, e.g. 22:00-07:00"
    )
    sinks.add_argument(
        "--notify-cooldown", type=float, help="seconds before a --notify target hears of the same label again (300)"
    )
    sinks.add_argument("--notify-attach", action="store_true", help="attach the evidence clip to each --notify")
    sinks.add_argument("--health-port", type=int, help="answer GET / with the streams' state as JSON (0: any port)")
    sinks.add_argument("--health-host", default="127.0.0.1", help="address of the health port (127.0.0.1)")
    add_model_options(parser)
    parser.set_defaults(handler=run)


def shared_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The top-level settings given as flags (with --config they replace the file's)."""
    values: dict[str, Any] = {}
    if args.db is not None:
        values["database"] = args.db
    if args.mqtt:
        mqtt: dict[str, Any] = {"url": args.mqtt}
        if args.no_discovery:
            mqtt["discovery"] = False
        for key, value in (("ca_certs", args.mqtt_ca), ("certfile", args.mqtt_cert), ("keyfile", args.mqtt_key)):
            if value is not None:
                mqtt[key] = value
        values["mqtt"] = mqtt
    elif args.mqtt_ca or args.mqtt_cert or args.mqtt_key:
        raise UsageError("--mqtt-ca, --mqtt-cert and --mqtt-key need --mqtt mqtts://...")
    if args.evidence_dir is not None:
        values["evidence"] = {"dir": args.evidence_dir}
    if args.evidence_before is not None or args.evidence_after is not None:
        if args.evidence_dir is None and not args.config:
            raise UsageError("--evidence-before and --evidence-after need --evidence-dir")
        evidence = values.setdefault("evidence", {})
        for key, value in (("before_s", args.evidence_before), ("after_s", args.evidence_after)):
            if value is not None:
                evidence[key] = value
    rule = {
        key: value
        for key, value in (
            ("labels", args.notify_labels),
            ("min_score", args.notify_min_score),
            ("quiet_hours", args.notify_quiet_hours),
            ("cooldown_s", args.notify_cooldown),
            ("attach", args.notify_attach or None),
        )
        if value is not None
    }
    if args.notify:
        values["notify"] = {"targets": [{"url": url, **rule} for url in args.notify]}
    elif rule:
        raise UsageError(
            "--notify-labels, --notify-min-score, --notify-quiet-hours, --notify-cooldown and "
            "--notify-attach need --notify URL"
        )
    if args.health_port is not None:
        values["health_port"] = args.health_port
        values["health_host"] = args.health_host
    return values


def single_stream(args: argparse.Namespace) -> dict[str, Any]:
    if not args.labels and not args.adapter:
        raise UsageError("give --labels or --adapter (one stream), or --config FILE (several)")
    stream: dict[str, Any] = {
        "name": args.name,
        "labels": args.labels or None,
        "source": args.source,
        "source_rate": args.source_rate,
        "speed": args.speed,
        "window_s": args.window,
        "hop_s": args.hop,
        "threshold": args.alert_threshold,
        "confirm": args.confirm,
        "cooldown_s": args.cooldown,
        "hold_s": args.hold,
        "min_dbfs": args.min_dbfs,
        "max_seconds": args.duration,
        "webhook": args.webhook,
        "webhook_timeout_s": args.webhook_timeout,
    }
    if args.alert:
        stream["alert"] = args.alert
    if args.adapter:
        stream["adapter"] = args.adapter
    return {"streams": [stream]}


def run(args: argparse.Namespace) -> int:
    from soundsift.core.classifier import Classifier
    from soundsift.monitor.config import load_config
    from soundsift.monitor.evidence import EvidenceStore
    from soundsift.monitor.notify import check_targets
    from soundsift.monitor.runner import MonitorService

    settings = settings_from_args(args)
    try:
        if args.config:
            if args.labels or args.alert or args.webhook:
                raise UsageError("--labels, --alert and --webhook belong in the --config file's streams")
            config = load_config(args.config, shared_settings(args), adapter=bool(settings.adapter))
        else:
            config = build_config({**single_stream(args), **shared_settings(args)})
        if config.evidence:  # a folder that cannot be made fails now, not after the model has loaded
            EvidenceStore(config.evidence)
        if config.notify:  # and so does a notification URL Apprise does not know
            check_targets(config.notify)
    except ConfigurationError as error:
        raise UsageError(str(error)) from None
    classifier = Classifier(settings)
    try:
        service = MonitorService(classifier, config)
    except ConfigurationError as error:
        raise UsageError(str(error)) from None
    # systemd and Docker stop with SIGTERM: finish like Ctrl-C (states OFF, streams offline, clips written).
    previous = signal.signal(signal.SIGTERM, lambda *_: service.stop())
    for stream in service.streams:
        print(
            f"listening to {stream.config.name}: {stream.source_name}; alerts for {', '.join(stream.alert)}",
            file=sys.stderr,
        )
    if service.health_server:
        print(f"health on http://{service.health_server.host}:{service.health_server.port}/", file=sys.stderr)
    print("(Ctrl-C stops)", file=sys.stderr)
    try:
        results = service.run()
    except KeyboardInterrupt:
        service.stop()
        results = {stream.config.name: stream.stats for stream in service.streams}
    finally:
        signal.signal(signal.SIGTERM, previous)
    slow = False
    for name, stats in results.items():
        print(f"{name}: {stats.render()}" if len(results) > 1 else stats.render(), file=sys.stderr)
        slow = slow or stats.real_time_factor > 1
    if slow:
        print(
            "warning: scoring is slower than real time; windows were skipped (try --backend onnx --quantize int8, "
            "a longer --hop, or a GPU)",
            file=sys.stderr,
        )
    undelivered = sum(stats.mqtt_events_undelivered for stats in results.values())
    if undelivered:
        print(
            f"soundsift monitor: error: {undelivered} event(s) never reached the MQTT broker; they stay pending in "
            "the event log",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return EXIT_OK
