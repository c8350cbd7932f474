"""`soundsift eval`: accuracy, latency and memory on labelled audio."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from soundsift.cli.common import (
    DEFAULT_TEMPLATE,
    EXIT_OK,
    add_method_option,
    add_model_options,
    add_progress_option,
    settings_from_args,
)
from soundsift.errors import UsageError
from soundsift.optional import MATPLOTLIB


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "eval",
        help="measure accuracy, latency and memory on labelled audio",
        description="Evaluate a model and prompt template on labelled audio. Writes results.json, "
        "predictions.csv, confusion.csv, confusion.png and report.md into --out (plots need the eval extra). "
        "With several --model, each model runs in its own process (so its memory is its own) and writes its "
        "report into --out/N-MODEL; comparison.md sets them side by side.",
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
        kind.add_argument(
            "--shots",
            type=shot_counts,
            metavar="K,K,...",
            help="also fit adapters on K clips per class drawn from the other folds (e.g. 1,2,4,8,16) and "
            "report accuracy by K beside zero-shot",
        )
        kind.add_argument("--seeds", type=int, default=1, help="draws of the K support clips per fold (default 1)")
        add_method_option(kind, purpose="the --shots adapters")
        add_progress_option(kind)
        add_model_options(kind, several="repeat to compare models", ensembles=True)
        kind.set_defaults(handler=run, command="eval")


def shot_counts(text: str) -> list[int]:
    try:
        counts = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected whole numbers like 1,2,4,8,16") from None
    if not counts or counts[0] < 1:
        raise argparse.ArgumentTypeError("shot counts must be 1 or more")
    return counts


def few_shot(classifier: Any, items: Any, classes: list[str], args: argparse.Namespace) -> dict[str, Any]:
    from soundsift.jobs.batch import make_progress
    from soundsift.jobs.few_shot import embed_dataset, shots_table

    if args.seeds < 1:
        raise UsageError("--seeds must be 1 or more")
    print("embedding the clips for the few-shot protocol ...", file=sys.stderr)
    data = embed_dataset(
        classifier,
        [item.path for item in items],
        [item.label for item in items],
        [item.fold for item in items],
        classes,
    )
    runs = len(set(data.folds.tolist())) * args.seeds * len(args.shots)
    progress = make_progress(runs, args.progress)
    table = shots_table(
        classifier,
        data,
        classes,
        shots=args.shots,
        seeds=args.seeds,
        method=args.method,
        templates=args.templates,
        progress=progress,
    )
    if progress is not None:
        progress.close()
    return table


def run(args: argparse.Namespace) -> int:
    from soundsift.jobs import evaluation

    models = args.models or [None]
    if len(models) > 1 and args.shots:
        raise UsageError("--shots measures one model; give one --model (or run eval once per model)")
    settings = [_model_settings(args, model) for model in models]
    MATPLOTLIB.require("soundsift eval's report plots")  # before minutes of embedding, not after
    if args.dataset == "esc50":
        items = evaluation.esc50_items(args.data, args.folds)
        classes = evaluation.esc50_class_order(args.data)
        name = "ESC-50" + (f" folds {' '.join(map(str, args.folds))}" if args.folds else "")
    elif args.dataset == "folder":
        items, classes, name = evaluation.folder_items(args.root), None, f"folder {args.root}"
    else:
        items, classes, name = evaluation.csv_items(args.table), None, f"csv {args.table}"
    if len(settings) == 1:
        _evaluate_one(settings[0], items, classes, name, args)
        return EXIT_OK
    reports = []
    for index, one in enumerate(settings, start=1):
        print(f"[{index}/{len(settings)}] {one.model}", file=sys.stderr)
        report, predictions = evaluation.evaluate_in_child(
            one, items, dataset=name, classes=classes, templates=args.templates
        )
        folder = args.out / evaluation.folder_name(index, report.model)
        evaluation.write_report(report, predictions, folder)
        reports.append(report)
    table = evaluation.comparison_markdown(reports)
    (args.out / "comparison.md").write_text(table)
    print(table, end="")
    print(f"written to {args.out}/ (comparison.md, and one folder per model)", file=sys.stderr)
    return EXIT_OK


def _model_settings(args: argparse.Namespace, model: str | None) -> Any:
    """The settings of one --model: the other flags, validated the same way for each."""
    return settings_from_args(argparse.Namespace(**{**vars(args), "model": model}))


def _evaluate_one(settings: Any, items: Any, classes: list[str] | None, name: str, args: argparse.Namespace) -> None:
    from soundsift.core.ensemble import Ensemble, load_classifier
    from soundsift.jobs import evaluation
    from soundsift.jobs.batch import make_progress

    classifier = load_classifier(settings)
    if args.shots and isinstance(classifier, Ensemble):
        raise UsageError("--shots teaches one model; an ensemble (A+B) is measured zero-shot")
    progress = make_progress(len(items), args.progress)
    report, predictions = evaluation.evaluate(
        classifier, items, dataset=name, classes=classes, templates=args.templates, progress=progress
    )
    if progress is not None:
        progress.close()
    if args.shots:
        report.shots = few_shot(classifier, items, report.classes, args)
    evaluation.write_report(report, predictions, args.out)
    print(evaluation.markdown_table(report))
    print(f"written to {args.out}/", file=sys.stderr)
