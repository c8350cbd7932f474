"""`soundsift classify`: classify audio files against labels."""

from __future__ import annotations

import argparse
import csv
import io
import json
import unicodedata
from collections.abc import Sequence
from pathlib import Path

from soundsift.cli.common import (
    EXIT_OK,
    add_label_options,
    add_model_options,
    parse_label_thresholds,
    report_label_warnings,
    resolve_labels,
    settings_from_args,
)
from soundsift.core.results import Classification, FailedInput
from soundsift.errors import EXIT_FAILED, UsageError


def register(commands: argparse._SubParsersAction) -> None:
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
    add_model_options(parser, ensembles=True)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    label_thresholds = parse_label_thresholds(args.label_thresholds)
    from soundsift.core.ensemble import Ensemble, load_classifier

    files = expand_folders(args.files)
    classifier = load_classifier(settings)
    labels = resolve_labels(args, optional=classifier.adapter is not None)
    # The same two calls either way; the label set an ensemble prepares holds one per model.
    if isinstance(classifier, Ensemble):
        ensemble_labels = classifier.prepare_labels(labels, multi_label=args.multi_label)
        names = ensemble_labels.names
        report_label_warnings(ensemble_labels.warnings)
        results = classifier.classify_batch(files, ensemble_labels, label_thresholds=label_thresholds, errors="return")
    else:
        prepared = classifier.prepare_labels(labels, multi_label=args.multi_label)
        names = prepared.names
        report_label_warnings(prepared.warnings)
        results = classifier.classify_batch(files, prepared, label_thresholds=label_thresholds, errors="return")
    if args.json:
        print(json.dumps([result.model_dump() for result in results], ensure_ascii=False, indent=2))
    elif args.csv:
        print(results_to_csv(results, names), end="")
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
    if result.none_of_these:
        verdict += "  (unlike every taught example: none of these?)"
    elif result.uncertain:
        verdict += "  (uncertain)"
    flags = "  [silent]" if result.silent else ""
    width = max(display_width(score.label) for score in result.scores)
    lines = [f"{result.source}  {result.duration_s:.1f} s{flags}", f"  {verdict}"]
    if result.members is not None:
        answers = ", ".join(f"{member.model} → {member.top_label or 'none'}" for member in result.members)
        lines.append(f"  models: {answers} (agreement {result.agreement:.0%})")
    for score in result.scores:
        bar = "█" * round(score.score * 20)
        mark = (" ✓" if score.detected else "") + ("  (taught)" if score.taught else "")
        padding = " " * (width - display_width(score.label))
        lines.append(f"  {score.label}{padding}  {score.score:6.3f}  sim {score.similarity:+.3f}  {bar}{mark}")
    return "\n".join(lines)


def display_width(text: str) -> int:
    """Terminal columns: wide and full-width characters (Chinese, Japanese, Korean) take two,
    combining marks none, so columns line up after labels in any script."""
    return sum(
        0 if unicodedata.combining(character) else 2 if unicodedata.east_asian_width(character) in "WF" else 1
        for character in text
    )


def results_to_csv(results: Sequence[Classification | FailedInput], labels: Sequence[str]) -> str:
    """The same CSV schema as ``soundsift batch --out results.csv``."""
    from soundsift.jobs.outputs import csv_cells, csv_header, result_row

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(csv_header(labels))
    writer.writerows(csv_cells(result_row(result, result.source), labels) for result in results)
    return buffer.getvalue()
