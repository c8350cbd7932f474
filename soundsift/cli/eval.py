"""`soundsift eval`: accuracy, latency and memory on labelled audio."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from soundsift.cli.common import (
    DEFAULT_TEMPLATE,
    EXIT_OK,
    UsageError,
    add_model_options,
    add_progress_option,
    settings_from_args,
)


def register(commands: argparse._SubParsersAction) -> None:
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
        kind.set_defaults(handler=run, command="eval")


def run(args: argparse.Namespace) -> int:
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
