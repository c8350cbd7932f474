"""`soundsift teach`: learn labels from a few example clips and write an adapter file."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from soundsift.cli.common import EXIT_OK, add_method_option, add_model_options, settings_from_args
from soundsift.errors import UsageError

if TYPE_CHECKING:
    from soundsift.core.adapter import Adapter


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "teach",
        help="learn labels from a few example clips (writes an adapter file)",
        description="Learn labels from examples: EXAMPLES is a folder with one sub-folder per label (the "
        "folder name is the label, in any language; a folder named _none holds recordings of none of them) "
        "or a CSV of path,label rows. Only the model's embeddings are used: fitting takes seconds on a CPU. "
        "Use the adapter with --adapter on classify, batch, detect, eval, monitor and serve.",
    )
    parser.add_argument("examples", metavar="EXAMPLES", help="folder of label folders, or a path,label CSV")
    parser.add_argument("--out", type=Path, required=True, metavar="NAME.adapter", help="the adapter file to write")
    parser.add_argument("--negatives", metavar="DIR", help="recordings of none of the labels (background, other)")
    add_method_option(parser, purpose="the taught labels")
    parser.add_argument("--seed", type=int, default=0, help="seed of the cross-validation folds (default 0)")
    parser.add_argument(
        "--template",
        action="append",
        dest="templates",
        metavar="TEMPLATE",
        help="prompt template for the labels' zero-shot start (default: the model's); repeatable",
    )
    parser.add_argument(
        "--fresh", action="store_true", help="embed every clip again, even those an existing --out already holds"
    )
    add_model_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from soundsift.core.adapter import Adapter
    from soundsift.core.classifier import Classifier
    from soundsift.errors import AdapterError

    if args.out.suffix != ".adapter":
        raise UsageError("--out must end in .adapter")
    settings = settings_from_args(args)
    if settings.adapter:
        raise UsageError("--adapter is for using an adapter; teach writes one with --out")
    classifier = Classifier(settings)
    previous = None
    if args.out.exists() and not args.fresh:
        try:
            previous = Adapter.load(args.out)
        except AdapterError as error:
            print(f"soundsift teach: not reusing {args.out}: {error}", file=sys.stderr)
    started = time.perf_counter()
    adapter = Adapter.fit(
        classifier,
        args.examples,
        negatives=args.negatives,
        method=args.method,
        templates=args.templates,
        reuse=previous,
        seed=args.seed,
        name=args.out.stem,
    )
    elapsed = time.perf_counter() - started
    adapter.save(args.out)
    print(report(adapter, elapsed, reused=previous is not None))
    print(f"wrote {args.out}")
    return EXIT_OK


def report(adapter: Adapter, elapsed_s: float, *, reused: bool) -> str:
    lines = [f"taught {adapter.summary} in {elapsed_s:.1f} s"]
    if reused:
        lines.append("unchanged clips kept their embeddings from the previous adapter")
    width = max(len(label) for label in adapter.labels)
    lines.append(f"{'label':<{width}}  clips  threshold")
    for label, threshold in zip(adapter.labels, adapter.thresholds):
        lines.append(f"{label:<{width}}  {adapter.examples[label]:>5}  {threshold:9.3f}")
    if adapter.cross_validation:
        ranked = sorted(adapter.cross_validation.items(), key=lambda item: -item[1])
        lines.append("cross-validated accuracy: " + ", ".join(f"{name} {score:.0%}" for name, score in ranked[:4]))
    for skipped in adapter.skipped:
        lines.append(f"skipped {skipped.source}: {skipped.message}")
    return "\n".join(lines)
