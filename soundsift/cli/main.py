"""The `soundsift` command line. A thin layer over soundsift.Classifier.

Exit codes: 0 success, 1 a file (or the model) failed, 2 usage error (bad flags or labels).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from soundsift.core.results import Classification, FailedInput
from soundsift.core.settings import DEFAULT_MODEL, DEFAULT_TEMPLATE, ModelSettings, validation_message
from soundsift.errors import ConfigurationError, LabelError, ModelLoadError
from soundsift.i18n.presets import preset_names
from soundsift.serving.settings import ServerSettings

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad flags or labels: exit code 2."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="soundsift: %(message)s")
    try:
        return args.handler(args)
    except (UsageError, LabelError) as error:
        print(f"soundsift {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (ModelLoadError, ConfigurationError) as error:
        print(f"soundsift {args.command}: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("soundsift: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="soundsift",
        description="Zero-shot audio classification with CLAP: give a sound and labels in plain words.",
        epilog="Options that are settings (model, device, backend, templates, thresholds, limits, server options) "
        "also read SOUNDSIFT_<NAME> environment variables, e.g. SOUNDSIFT_MODEL; flags win over them.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_classify_command(commands)
    add_batch_command(commands)
    add_eval_command(commands)
    add_detect_command(commands)
    add_monitor_command(commands)
    add_serve_command(commands)
    add_export_command(commands)
    return parser


def add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model", help=f"hub id or local folder of a CLAP checkpoint (default {DEFAULT_MODEL}; SOUNDSIFT_MODEL)"
    )
    group.add_argument("--device", help="auto (default), cpu, cuda or cuda:N (SOUNDSIFT_DEVICE)")
    group.add_argument(
        "--backend",
        choices=["torch", "onnx"],
        help="inference backend (default torch); onnx takes an exported folder or exports --model on first use",
    )
    group.add_argument("--fp16", action="store_true", default=None, help="float16 inference (CUDA only)")
    group.add_argument("--batch-size", type=int, help="clips per model call (default 8)")
    group.add_argument(
        "--quantize", choices=["none", "int8"], help="onnx backend: int8 dynamic quantization on first-use export"
    )
    group.add_argument("--threads", type=int, help="onnx backend: intra-op threads (default: physical cores)")


def add_label_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("labels and scoring")
    group.add_argument(
        "--labels",
        help='comma-separated labels; "|" separates synonyms of one label, "(not X)" or " -X" excludes a sound, '
        'e.g. "dog barking | dog bark, siren, cat meowing (not hissing)"; Chinese labels are translated',
    )
    group.add_argument("--preset", help=f"a named label set instead of --labels: {', '.join(preset_names())}")
    add_translation_options(group)
    group.add_argument(
        "--template",
        action="append",
        dest="templates",
        metavar="TEMPLATE",
        help=f'prompt template with {{}} for the label (default "{DEFAULT_TEMPLATE}"); repeat to average several',
    )
    group.add_argument("--threshold", type=float, help="confidence below this is reported as uncertain (default 0.35)")
    group.add_argument(
        "--min-margin", type=float, help="top-1 minus top-2 score below this is uncertain (default 0.05)"
    )
    group.add_argument(
        "--multi-label",
        action="store_true",
        help="judge every label on its own (several sounds may be present, or none)",
    )
    group.add_argument(
        "--label-threshold",
        dest="label_thresholds",
        action="append",
        metavar="[LABEL=]SIMILARITY",
        help="multi-label cosine-similarity threshold: a number for all labels (default 0.3), "
        "or LABEL=NUMBER for one label; repeatable",
    )
    group.add_argument(
        "--max-duration", dest="max_duration_s", type=float, help="longest audio accepted, seconds (default 600)"
    )


def add_progress_option(group: argparse._ActionsContainer) -> None:
    group.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: only on a terminal)",
    )


def add_translation_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--no-translate",
        dest="translate",
        action="store_false",
        default=None,
        help="send labels to the model as written (for multilingual checkpoints)",
    )
    group.add_argument(
        "--translator",
        metavar="MODEL",
        help="machine-translation model for labels the glossary lacks, e.g. Helsinki-NLP/opus-mt-zh-en",
    )
    group.add_argument(
        "--glossary",
        action="append",
        metavar="FILE",
        help="extra glossary TSV (english phrasings TAB chinese variants, '|'-separated); repeatable",
    )


def add_classify_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "classify",
        help="classify audio files against labels",
        description="Classify each FILE against the labels and print the scores. Formats: WAV, FLAC, "
        "OGG/Vorbis, Opus, MP3, M4A/AAC, WebM and the audio track of common video files.",
    )
    parser.add_argument(
        "files", nargs="+", metavar="FILE", help="audio or video files; a folder stands for the audio files in it"
    )
    add_label_options(parser)
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print a JSON array of results")
    output.add_argument(
        "--csv", action="store_true", help="print CSV, one row per file (the columns of batch's .csv output)"
    )
    add_model_options(parser)
    parser.set_defaults(handler=run_classify)


def add_batch_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "batch",
        help="classify whole folders into a JSONL/CSV/Parquet file (resumable)",
        description="Classify every audio file in INPUT (files, folders searched recursively, or glob "
        "patterns) and append one row per file to --out. Rerunning with the same --out skips files already "
        "done; an interrupted run keeps every finished row. A file that fails becomes an error row. "
        "Exit code 1 when any file failed.",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="files, folders or glob patterns")
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        help="results file: .jsonl, .csv or .parquet (Parquet needs pyarrow; progress is kept in "
        "OUT.progress.jsonl so it resumes too)",
    )
    add_label_options(parser)
    run = parser.add_argument_group("execution")
    run.add_argument("--workers", type=int, default=2, help="decoding threads (local engine, default 2)")
    run.add_argument("--engine", choices=["local", "ray"], default="local", help="local (default) or ray")
    run.add_argument("--ray-address", help="join an existing Ray cluster (default: start a local instance)")
    run.add_argument("--ray-actors", type=int, help="model actors (default: one per GPU, else one per CPU)")
    add_progress_option(run)
    add_model_options(parser)
    parser.set_defaults(handler=run_batch)


def run_batch(args: argparse.Namespace) -> int:
    from soundsift.core.files import discover_inputs
    from soundsift.jobs.batch import BatchSummary, make_progress
    from soundsift.jobs.outputs import OutputError, open_output

    settings = settings_from_args(args)
    label_thresholds = parse_label_thresholds(args.label_thresholds)
    paths = discover_inputs(args.inputs)
    if not paths:
        raise UsageError("no audio files found in " + ", ".join(args.inputs))
    from soundsift.core.classifier import Classifier

    classifier = Classifier(settings)
    prepared = classifier.prepare_labels(resolve_labels(args), multi_label=args.multi_label)
    report_label_warnings(prepared.warnings)
    try:
        writer = open_output(args.out, prepared.names)
    except OutputError as error:
        raise UsageError(str(error)) from None
    done = writer.done_paths()
    todo = [path for path in paths if path not in done]
    summary = BatchSummary(skipped=len(paths) - len(todo))
    progress = make_progress(len(todo), args.progress)
    started = time.perf_counter()
    try:
        if args.engine == "ray":
            from soundsift.jobs.ray_engine import run_on_ray

            run_on_ray(
                settings,
                todo,
                writer,
                summary,
                labels=args.labels,
                templates=args.templates,
                multi_label=args.multi_label,
                threshold=args.threshold,
                label_thresholds=label_thresholds,
                address=args.ray_address,
                actors=args.ray_actors,
                progress=progress,
            )
        else:
            from soundsift.jobs.batch import LocalBatchRunner

            runner = LocalBatchRunner(
                classifier, prepared, workers=args.workers, threshold=args.threshold, label_thresholds=label_thresholds
            )
            runner.run(todo, writer, summary, progress)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        summary.wall_s = time.perf_counter() - started
        if progress is not None:
            progress.close()
        writer.close()
        print(summary.render(), file=sys.stderr)
    if summary.interrupted:
        return 130
    return EXIT_FAILED if summary.failed else EXIT_OK


def add_eval_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "eval",
        help="measure accuracy, latency and memory on labelled audio",
        description="Evaluate a model and prompt template on labelled audio. Writes results.json, "
        "predictions.csv, confusion.csv, confusion.png (with matplotlib) and report.md into --out.",
    )
    kinds = parser.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    esc50 = kinds.add_parser("esc50", help="the official ESC-50 layout (meta/esc50.csv + audio/)")
    esc50.add_argument("--data", required=True, type=Path, help="the ESC-50 folder")
    esc50.add_argument("--folds", type=int, nargs="+", help="folds to evaluate (default: all present)")
    folder = kinds.add_parser("folder", help="a DIR/<class name>/*.wav tree")
    folder.add_argument("root", type=Path, metavar="DIR")
    table = kinds.add_parser("csv", help="a CSV with path,label[,fold] columns (paths relative to the CSV)")
    table.add_argument("table", type=Path, metavar="FILE")
    for kind in (esc50, folder, table):
        kind.add_argument("--out", type=Path, default=Path("eval-results"), help="report folder (default eval-results)")
        kind.add_argument(
            "--template",
            action="append",
            dest="templates",
            metavar="TEMPLATE",
            help=f'prompt template (default "{DEFAULT_TEMPLATE}", class names with _ as spaces); repeatable',
        )
        add_progress_option(kind)
        add_model_options(kind)
        kind.set_defaults(handler=run_eval, command="eval")


def run_eval(args: argparse.Namespace) -> int:
    from soundsift.jobs import evaluation
    from soundsift.jobs.batch import make_progress

    settings = settings_from_args(args)
    try:
        if args.dataset == "esc50":
            items = evaluation.esc50_items(args.data, args.folds)
            classes = evaluation.esc50_class_order(args.data)
            name = "ESC-50" + (f" folds {' '.join(map(str, args.folds))}" if args.folds else "")
        elif args.dataset == "folder":
            items, classes, name = evaluation.folder_items(args.root), None, f"folder {args.root}"
        else:
            items, classes, name = evaluation.csv_items(args.table), None, f"csv {args.table}"
    except evaluation.DatasetError as error:
        raise UsageError(str(error)) from None
    from soundsift.core.classifier import Classifier

    classifier = Classifier(settings)
    progress = make_progress(len(items), args.progress)
    report, predictions = evaluation.evaluate(classifier, items, dataset=name, classes=classes, progress=progress)
    if progress is not None:
        progress.close()
    evaluation.write_report(report, predictions, args.out)
    print(evaluation.markdown_table(report))
    print(f"written to {args.out}/", file=sys.stderr)
    return EXIT_OK


def add_detect_command(commands: argparse._SubParsersAction) -> None:
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
    parser.add_argument("--labels", required=True, help="comma-separated labels ('|' joins synonyms)")
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
    output = parser.add_argument_group("output")
    output.add_argument("--out", type=Path, help="events file: .csv (events) or .json (events and window scores)")
    output.add_argument("--labels-track", type=Path, help="Audacity label track (.txt)")
    output.add_argument("--plot", type=Path, help="timeline PNG: score curves with events shaded")
    add_progress_option(output)
    add_model_options(parser)
    parser.set_defaults(handler=run_detect)


def run_detect(args: argparse.Namespace) -> int:
    from soundsift.core.classifier import Classifier
    from soundsift.detection import outputs as timeline
    from soundsift.errors import SoundsiftError
    from soundsift.jobs.batch import make_progress

    if args.out and args.out.suffix.lower() not in (".csv", ".json"):
        raise UsageError("--out must end in .csv or .json")
    thresholds = parse_label_thresholds(args.label_thresholds)
    if isinstance(thresholds, float):
        raise UsageError("--label-threshold takes LABEL=SCORE here; use --threshold for all labels")
    classifier = Classifier(settings_from_args(args))
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
            progress=progress,
        )
    except ConfigurationError as error:
        raise UsageError(str(error)) from None
    except SoundsiftError as error:
        if isinstance(error, LabelError):
            raise
        print(f"soundsift detect: error: {error}", file=sys.stderr)
        return EXIT_FAILED
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
    print(
        f"{detection.source}: {detection.duration_s:.1f} s, {len(detection.windows)} windows, "
        f"{len(detection.events)} events"
    )
    for event in detection.events:
        print(f"  {_clock(event.start_s)}-{_clock(event.end_s)}  {event.label}  peak {event.peak_score:.2f}")
    return EXIT_OK


def events_json(detection) -> str:
    return json.dumps(detection.model_dump(), ensure_ascii=False, indent=2)


def _clock(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours:02d}:{minutes:02d}:{rest:05.2f}" if hours else f"{minutes:02d}:{rest:05.2f}"


def add_monitor_command(commands: argparse._SubParsersAction) -> None:
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
    parser.set_defaults(handler=run_monitor)


def run_monitor(args: argparse.Namespace) -> int:
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


def add_serve_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "serve",
        help="start the web page and HTTP API",
        description="Start one process serving the web page (/) and the HTTP API (/api/*, docs at /docs). "
        "The model is loaded once and warmed up before 'Running on local URL' is printed. "
        "Set SOUNDSIFT_API_KEY (8+ characters) to require it on every route that can run the model: "
        "'Authorization: Bearer <key>' for the API, a login at /login for the page.",
    )
    server = parser.add_argument_group("server")
    server.add_argument("--host", help="address to listen on (default 127.0.0.1; 0.0.0.0 exposes it to the network)")
    server.add_argument("--port", type=int, help="TCP port (default 7860)")
    server.add_argument(
        "--gpus", help="'all', 'none' or GPU indices like '0,1': one model replica per GPU (overrides --device)"
    )
    server.add_argument(
        "--cors-origin",
        dest="cors_origins",
        action="append",
        metavar="ORIGIN",
        help="allow cross-origin requests from ORIGIN ('*' for any); repeatable",
    )
    add_translation_options(parser.add_argument_group("labels"))
    limits = parser.add_argument_group("limits")
    limits.add_argument("--max-upload-mb", dest="max_upload_mb", type=float, help="largest request body (default 50)")
    limits.add_argument(
        "--max-duration", dest="max_duration_s", type=float, help="longest audio accepted, seconds (default 600)"
    )
    limits.add_argument("--max-labels", type=int, help="most labels per request (default 100)")
    limits.add_argument("--max-label-chars", type=int, help="longest label in characters (default 200)")
    limits.add_argument("--max-batch-files", type=int, help="most files per batch request (default 32)")
    limits.add_argument("--micro-batch-size", type=int, help="most clips grouped into one model call (default 16)")
    limits.add_argument(
        "--micro-batch-wait-ms", type=float, help="longest wait for more clips to batch, ms (default 10)"
    )
    limits.add_argument(
        "--max-queue", type=int, help="clips admitted at once (decoding or waiting for the model) before 503 (64)"
    )
    limits.add_argument("--decode-workers", type=int, help="uploads decoded at once (default 2)")
    limits.add_argument(
        "--max-decoded-mb", type=float, help="most decoded PCM per input, MB at its own rate and channels (512)"
    )
    limits.add_argument(
        "--max-detect-duration",
        dest="max_detect_duration_s",
        type=float,
        help="/api/detect: longest recording, seconds (3600)",
    )
    limits.add_argument("--max-detect-windows", type=int, help="/api/detect: most windows per request (2000)")
    limits.add_argument(
        "--graceful-timeout",
        dest="graceful_timeout_s",
        type=float,
        help="on SIGTERM, seconds running requests may finish; queued work then gets 503 (default 30)",
    )
    server.add_argument(
        "--no-ui", dest="ui", action="store_false", default=None, help="serve the HTTP API only, not the web page"
    )
    add_model_options(parser)
    parser.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    model, server = settings_from_args(args), server_settings_from_args(args)
    from soundsift.serving.app import serve

    return serve(model, server)


def add_export_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "export",
        help="export a CLAP checkpoint to ONNX for the onnx backend",
        description="Write audio.onnx and text.onnx (each encoder with its projection; fused checkpoints "
        "included), tokenizer.json and manifest.json (source model, opset, quantization, checksums) into "
        "--out. Needs torch and transformers; serving the result needs only onnxruntime.",
    )
    parser.add_argument("--model", required=True, help="hub id or local folder of a CLAP checkpoint")
    parser.add_argument("--out", required=True, type=Path, help="folder to write")
    parser.add_argument("--quantize", choices=["none", "int8"], default="none", help="int8 dynamic quantization")
    parser.add_argument(
        "--quantize-encoders",
        default="audio,text",
        help="comma-separated encoders that --quantize applies to (default audio,text)",
    )
    parser.add_argument(
        "--fp16", action="store_true", help="store the encoders that are not int8 in float16 (for GPUs)"
    )
    parser.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    encoders = tuple(part.strip() for part in args.quantize_encoders.split(",") if part.strip())
    if not set(encoders) <= {"audio", "text"}:
        raise UsageError("--quantize-encoders takes audio, text or audio,text")
    from soundsift.backends.onnx.export import export

    started = time.perf_counter()
    folder = export(args.model, args.out, quantize=args.quantize, quantize_encoders=encoders, fp16=args.fp16)
    sizes = ", ".join(f"{p.name} {p.stat().st_size / 1e6:.1f} MB" for p in sorted(folder.glob("*.onnx")))
    print(f"exported {args.model} to {folder} in {time.perf_counter() - started:.1f} s ({sizes})")
    return EXIT_OK


def settings_from_args(args: argparse.Namespace) -> ModelSettings:
    """Flags override SOUNDSIFT_* environment variables, which override defaults.

    Every flag that sets a settings field has that field's name as its argparse dest."""
    return _settings(ModelSettings, args)


def server_settings_from_args(args: argparse.Namespace) -> ServerSettings:
    return _settings(ServerSettings, args)


def _settings(kind: type[ModelSettings] | type[ServerSettings], args: argparse.Namespace) -> Any:
    overrides = {name: getattr(args, name) for name in kind.model_fields if getattr(args, name, None) is not None}
    try:
        return kind(**overrides)
    except ValidationError as error:
        raise UsageError(validation_message(error)) from None


def resolve_labels(args: argparse.Namespace) -> str:
    """--labels as given, or the named --preset (e.g. smart_home, smart_home_zh)."""
    from soundsift.i18n.presets import preset_labels

    if args.preset and args.labels:
        raise UsageError("give --labels or --preset, not both")
    if args.preset:
        try:
            return preset_labels(args.preset)
        except KeyError as error:
            raise UsageError(str(error.args[0])) from None
    if not args.labels:
        raise UsageError("--labels (or --preset) is required")
    return args.labels


def report_label_warnings(warnings: Sequence[str]) -> None:
    for warning in warnings:
        print(f"soundsift: warning: {warning}", file=sys.stderr)


def parse_label_thresholds(values: list[str] | None) -> float | dict[str, float] | None:
    if not values:
        return None
    overall: float | None = None
    per_label: dict[str, float] = {}
    for value in values:
        name, _, number = value.rpartition("=")
        try:
            parsed = float(number)
        except ValueError:
            raise UsageError(f"--label-threshold {value!r}: expected a number or LABEL=NUMBER") from None
        if name.strip():
            per_label[name.strip()] = parsed
        else:
            overall = parsed
    if per_label and overall is not None:
        raise UsageError("--label-threshold: give either one number or LABEL=NUMBER pairs, not both")
    return per_label or overall


def run_classify(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    label_thresholds = parse_label_thresholds(args.label_thresholds)
    from soundsift.core.classifier import Classifier

    files = expand_folders(args.files)
    classifier = Classifier(settings)
    prepared = classifier.prepare_labels(resolve_labels(args), multi_label=args.multi_label)
    report_label_warnings(prepared.warnings)
    results = classifier.classify_batch(files, prepared, label_thresholds=label_thresholds, errors="return")
    if args.json:
        print(json.dumps([result.model_dump() for result in results], ensure_ascii=False, indent=2))
    elif args.csv:
        print(results_to_csv(results, prepared.names), end="")
    else:
        print(results_to_table(results))
    return EXIT_FAILED if any(isinstance(result, FailedInput) for result in results) else EXIT_OK


def expand_folders(files: Sequence[str]) -> list[str]:
    """Files as given (a missing one becomes an error row); a folder stands for the audio inside it."""
    from soundsift.core.files import discover_inputs

    expanded: list[str] = []
    for name in files:
        if Path(name).is_dir():
            found = discover_inputs([name])
            if not found:
                raise UsageError(f"{name} is a folder with no audio files in it")
            expanded.extend(found)
        else:
            expanded.append(name)
    return expanded


def results_to_table(results: Sequence[Classification | FailedInput]) -> str:
    blocks = [_table_block(result) for result in results]
    return "\n\n".join(blocks)


def _table_block(result: Classification | FailedInput) -> str:
    if isinstance(result, FailedInput):
        return f"{result.source}\n  error ({result.error}): {result.message}"
    verdict = f"→ {result.top_label}" if result.top_label else "→ none of these labels"
    if result.uncertain:
        verdict += "  (uncertain)"
    flags = "  [silent]" if result.silent else ""
    width = max(len(score.label) for score in result.scores)
    lines = [f"{result.source}  {result.duration_s:.1f} s{flags}", f"  {verdict}"]
    for score in result.scores:
        bar = "█" * round(score.score * 20)
        mark = " ✓" if score.detected else ""
        lines.append(f"  {score.label:<{width}}  {score.score:6.3f}  sim {score.similarity:+.3f}  {bar}{mark}")
    return "\n".join(lines)


def results_to_csv(results: Sequence[Classification | FailedInput], labels: Sequence[str]) -> str:
    """The same CSV schema as ``soundsift batch --out results.csv``."""
    from soundsift.jobs.outputs import csv_cells, csv_header, result_row

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(csv_header(labels))
    writer.writerows(csv_cells(result_row(result, result.source), labels) for result in results)
    return buffer.getvalue()


if __name__ == "__main__":
    sys.exit(main())
