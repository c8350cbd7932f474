"""`soundsift detect`: when each sound happens in a long recording."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from soundsift.cli.common import (
    EXIT_OK,
    add_gate_option,
    add_model_options,
    add_progress_option,
    add_translation_options,
    parse_label_thresholds,
    settings_from_args,
)
from soundsift.detection.results import Detection
from soundsift.errors import ConfigurationError, UsageError


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "detect",
        help="find when each sound happens in a long recording",
        description="Slide a window over FILE, score every window against the labels, and report events "
        "(label, start, end, peak and mean score). The recording is streamed, so hour-long files use little "
        "memory. Event rules: an event starts when a label's score reaches --threshold and ends below "
        "--off-threshold; scores may be smoothed over --smooth windows; events closer than --merge-gap merge; "
        "events shorter than --min-duration are dropped; --background labels compete but make no events.",
    )
    parser.add_argument("file", metavar="FILE", help="audio or video file")
    parser.add_argument(
        "--labels", help="comma-separated labels ('|' joins synonyms); optional with --adapter (taught labels)"
    )
    parser.add_argument("--background", help='labels that compete but never make events, e.g. "silence, speech"')
    add_translation_options(parser)
    parser.add_argument("--template", action="append", dest="templates", metavar="TEMPLATE", help="prompt template")
    window = parser.add_argument_group("windows and events")
    window.add_argument("--window", type=float, default=5.0, help="window length in seconds (default 5)")
    window.add_argument("--hop", type=float, help="seconds between window starts (default: half the window)")
    # Own dest names: these are not the classify uncertainty threshold of Settings.
    window.add_argument(
        "--threshold",
        dest="event_threshold",
        metavar="SCORE",
        type=float,
        default=0.5,
        help="score that starts an event (default 0.5)",
    )
    window.add_argument("--off-threshold", type=float, help="score below which an event ends (default: --threshold)")
    window.add_argument(
        "--label-threshold",
        dest="label_thresholds",
        action="append",
        metavar="LABEL=SCORE",
        help="on-threshold for one label; repeatable",
    )
    window.add_argument("--smooth", type=int, default=1, help="moving average over N windows (default 1: none)")
    window.add_argument("--min-duration", type=float, default=0.0, help="drop shorter events, seconds")
    window.add_argument("--merge-gap", type=float, default=0.0, help="merge events of a label this close, seconds")
    add_gate_option(window)
    output = parser.add_argument_group("output")
    output.add_argument("--out", type=Path, help="events file: .csv (events) or .json (events and window scores)")
    output.add_argument("--labels-track", type=Path, help="Audacity label track (.txt)")
    output.add_argument("--plot", type=Path, help="timeline PNG: score curves with events shaded")
    add_progress_option(output)
    add_model_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from soundsift.core.classifier import Classifier
    from soundsift.detection import outputs as timeline
    from soundsift.jobs.batch import make_progress

    if args.out and args.out.suffix.lower() not in (".csv", ".json"):
        raise UsageError("--out must end in .csv or .json")
    thresholds = parse_label_thresholds(args.label_thresholds)
    if isinstance(thresholds, float):
        raise UsageError("--label-threshold takes LABEL=SCORE here; use --threshold for all labels")
    classifier = Classifier(settings_from_args(args))
    if not args.labels and classifier.adapter is None:
        raise UsageError("--labels (or --adapter) is required")
    bar = make_progress(0, args.progress)
    from soundsift.detection.windows import detect

    def progress(done: float, total: float | None) -> None:
        if bar is not None:
            bar.total = round(total or done, 1)
            bar.n = round(done, 1)
            bar.refresh()

    try:
        detection = detect(
            classifier,
            args.file,
            args.labels,
            window_s=args.window,
            hop_s=args.hop,
            threshold=args.event_threshold,
            off_threshold=args.off_threshold,
            label_thresholds=thresholds,
            smoothing_windows=args.smooth,
            min_duration_s=args.min_duration,
            merge_gap_s=args.merge_gap,
            background=args.background,
            templates=args.templates,
            min_dbfs=args.min_dbfs,
            progress=progress,
        )
    except ConfigurationError as error:  # a window or hop the recording cannot use: a flag to fix
        raise UsageError(str(error)) from None
    finally:
        if bar is not None:
            bar.close()
    if args.out:
        text = events_json(detection) if args.out.suffix.lower() == ".json" else timeline.events_csv(detection)
        args.out.write_text(text, encoding="utf-8")
    if args.labels_track:
        args.labels_track.write_text(timeline.audacity_labels(detection), encoding="utf-8")
    if args.plot:
        timeline.plot_timeline(detection, args.plot)
    gated = f" ({detection.gated_windows} gated as quiet)" if detection.gated_windows else ""
    print(
        f"{detection.source}: {detection.duration_s:.1f} s, {len(detection.windows)} windows{gated}, "
        f"{len(detection.events)} events"
    )
    for event in detection.events:
        print(f"  {_clock(event.start_s)}-{_clock(event.end_s)}  {event.label}  peak {event.peak_score:.2f}")
    return EXIT_OK


def events_json(detection: Detection) -> str:
    return json.dumps(detection.model_dump(), ensure_ascii=False, indent=2)


def _clock(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours:02d}:{minutes:02d}:{rest:05.2f}" if hours else f"{minutes:02d}:{rest:05.2f}"
