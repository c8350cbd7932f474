"""`soundsift batch`: whole folders into a JSONL/CSV/Parquet file, resumable."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from soundsift.cli.common import (
    EXIT_OK,
    add_label_options,
    add_model_options,
    add_progress_option,
    parse_label_thresholds,
    report_label_warnings,
    resolve_labels,
    settings_from_args,
)
from soundsift.errors import EXIT_FAILED, UsageError


def register(commands: argparse._SubParsersAction) -> None:
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
    execution = parser.add_argument_group("execution")
    execution.add_argument("--workers", type=int, default=2, help="decoding threads (local engine, default 2)")
    execution.add_argument("--engine", choices=["local", "ray"], default="local", help="local (default) or ray")
    execution.add_argument("--ray-address", help="join an existing Ray cluster (default: start a local instance)")
    execution.add_argument("--ray-actors", type=int, help="model actors (default: one per GPU, else one per CPU)")
    add_progress_option(execution)
    add_model_options(parser, ensembles=True)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from soundsift.core.files import discover_inputs
    from soundsift.jobs.batch import BatchSummary, make_progress
    from soundsift.jobs.outputs import open_output

    settings = settings_from_args(args)
    label_thresholds = parse_label_thresholds(args.label_thresholds)
    paths = discover_inputs(args.inputs)
    if not paths:
        raise UsageError("no audio files found in " + ", ".join(args.inputs))
    from soundsift.core.ensemble import ensemble_members, load_classifier

    if args.engine == "ray" and len(ensemble_members(settings.model)) > 1:
        raise UsageError("--engine ray runs one model; an ensemble (--model A+B) runs on the local engine")
    classifier = load_classifier(settings)
    labels = resolve_labels(args, optional=classifier.adapter is not None)
    prepared = classifier.prepare_labels(labels, multi_label=args.multi_label)
    report_label_warnings(prepared.warnings)
    writer = open_output(args.out, prepared.names)
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
                labels=labels,
                templates=args.templates,
                multi_label=args.multi_label,
                threshold=args.threshold,
                label_thresholds=label_thresholds,
                address=args.ray_address,
                actors=args.ray_actors,
                progress=progress,
            )
        else:
            from soundsift.core.scoring import ScoringOptions
            from soundsift.jobs.batch import LocalBatchRunner

            options = ScoringOptions(threshold=args.threshold, label_thresholds=label_thresholds)
            runner = LocalBatchRunner(classifier, prepared, workers=args.workers, options=options)
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
