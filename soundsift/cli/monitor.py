"""`soundsift monitor`: listen continuously and alert."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from soundsift.cli.common import EXIT_OK, UsageError, add_model_options, add_translation_options, settings_from_args
from soundsift.errors import ConfigurationError


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "monitor",
        help="listen continuously and alert when a sound happens",
        description="Score the last --window seconds every --hop seconds against --labels; an --alert label "
        "fires when its score reached --threshold in N of the last M hops (--confirm N/M), then stays quiet for "
        "--cooldown seconds. Windows quieter than --gate-db are not scored. Alerts are printed, stored in a "
        "SQLite log (--db) and optionally POSTed as JSON to --webhook. Live sources reconnect with backoff; "
        "when scoring cannot keep up, hops are skipped and counted.",
    )
    parser.add_argument("--labels", required=True, help="every label to score (comma-separated)")
    parser.add_argument("--alert", required=True, help="labels that raise alerts (a subset of --labels)")
    add_translation_options(parser)
    parser.add_argument(
        "--source",
        default="mic",
        help="mic (default; needs sounddevice), a file (replayed in real time), '-' for raw 16-bit mono PCM on "
        "stdin, or anything PyAV opens: rtsp://..., http://..., alsa:hw:0, pulse:default",
    )
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
    live.add_argument("--gate-db", type=float, default=-50.0, help="skip windows quieter than this dBFS (-50)")
    live.add_argument("--duration", type=float, help="stop after this many seconds of audio")
    sinks = parser.add_argument_group("where alerts go")
    sinks.add_argument("--db", type=Path, default=Path("soundsift-events.db"), help="SQLite event log")
    sinks.add_argument("--webhook", help="POST each alert as JSON to this URL (retried, never blocks listening)")
    sinks.add_argument("--webhook-timeout", type=float, default=5.0, help="seconds per webhook attempt (5)")
    add_model_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from soundsift.core.classifier import Classifier
    from soundsift.core.labels import label_names
    from soundsift.monitor.runner import Monitor, MonitorOptions

    try:
        needed, window = (int(part) for part in args.confirm.split("/"))
    except ValueError:
        raise UsageError(f"--confirm {args.confirm!r}: expected N/M, e.g. 2/3") from None
    options = MonitorOptions(
        labels=args.labels,
        alert=label_names(args.alert, min_labels=1),
        source=args.source,
        window_s=args.window,
        hop_s=args.hop,
        threshold=args.alert_threshold,
        confirm_n=needed,
        confirm_m=window,
        cooldown_s=args.cooldown,
        gate_db=args.gate_db,
        database=args.db,
        webhook=args.webhook,
        webhook_timeout_s=args.webhook_timeout,
        speed=args.speed,
        source_rate=args.source_rate,
        max_seconds=args.duration,
    )
    try:
        monitor = Monitor(Classifier(settings_from_args(args)), options)
    except ConfigurationError as error:
        raise UsageError(str(error)) from None
    print(f"listening to {args.source}; alerts for {', '.join(options.alert)} (Ctrl-C stops)", file=sys.stderr)
    try:
        stats = monitor.run()
    except KeyboardInterrupt:
        monitor.stop()
        stats = monitor.stats
    print(stats.render(), file=sys.stderr)
    if stats.real_time_factor > 1:
        print(
            "warning: scoring is slower than real time; windows were skipped (try --backend onnx --quantize int8, "
            "a longer --hop, or a GPU)",
            file=sys.stderr,
        )
    return EXIT_OK
