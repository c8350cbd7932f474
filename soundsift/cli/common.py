"""What the subcommands share: exit codes, option groups, settings from flags, labels from flags."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from soundsift.core.scoring import SCORING_HELP
from soundsift.core.settings import DEFAULT_MODEL, DEFAULT_TEMPLATE, ModelSettings, validation_message
from soundsift.errors import UsageError
from soundsift.i18n.presets import preset_labels, preset_names
from soundsift.serving.settings import ServerSettings

EXIT_OK = 0


def default_of(settings: type[BaseModel], field: str) -> str:
    """A settings field's default as a flag's help shows it ("600", "0.35"), read from the field so
    that the help and the settings cannot disagree."""
    value = settings.model_fields[field].default
    return f"{value:g}" if isinstance(value, float) else str(value)


def add_model_options(parser: argparse.ArgumentParser, *, several: str | None = None, ensembles: bool = False) -> None:
    """The model flags; with ``several`` (what repeating it does), --model may be repeated (into
    ``models``); with ``ensembles``, models joined by '+' answer together."""
    group = parser.add_argument_group("model")
    text = f"hub id, gallery alias or local folder of a CLAP checkpoint (default {DEFAULT_MODEL}; SOUNDSIFT_MODEL)"
    if ensembles:
        text += "; models joined by '+' (fused+general) answer as an ensemble, their probabilities averaged"
    if several:
        group.add_argument("--model", action="append", dest="models", metavar="MODEL", help=f"{text}; {several}")
    else:
        group.add_argument("--model", help=text)
    group.add_argument("--device", help="auto (default), cpu, cuda or cuda:N (SOUNDSIFT_DEVICE)")
    group.add_argument(
        "--backend",
        choices=["torch", "onnx"],
        help=f"inference backend (default {default_of(ModelSettings, 'backend')}); onnx takes an exported folder "
        "or exports --model on first use",
    )
    group.add_argument("--fp16", action="store_true", default=None, help="float16 inference (CUDA only)")
    group.add_argument(
        "--batch-size", type=int, help=f"clips per model call (default {default_of(ModelSettings, 'batch_size')})"
    )
    group.add_argument(
        "--quantize",
        choices=["none", "int8", "int8-static"],
        help="onnx backend, on first-use export: int8 (dynamic) or int8-static (calibrated on --calibrate)",
    )
    group.add_argument(
        "--calibrate",
        metavar="FOLDER",
        help="--quantize int8-static: audio to calibrate on (default: the bundled example clips)",
    )
    group.add_argument("--threads", type=int, help="onnx backend: intra-op threads (default: physical cores)")
    group.add_argument(
        "--clips-per-call",
        type=int,
        help="onnx backend: clips per audio-encoder run (default: 1 on a CPU, the whole batch on a GPU)",
    )
    group.add_argument(
        "--adapter",
        metavar="FILE",
        help="an adapter from `soundsift teach`: its taught labels join the labels (which become optional); "
        "SOUNDSIFT_ADAPTER",
    )


def add_method_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *, purpose: str) -> None:
    parser.add_argument(
        "--method",
        choices=["auto", "prototype", "tip", "probe"],
        default="auto",
        help=f"how {purpose} learn from clips: auto (default) cross-validates all on the examples; prototype and "
        "tip are training-free, probe is a linear probe anchored at the zero-shot text embeddings",
    )


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
        help=f'{SCORING_HELP["templates"]} (default "{DEFAULT_TEMPLATE}"); repeat to average several',
    )
    group.add_argument(
        "--threshold",
        type=float,
        help=f"{SCORING_HELP['threshold']} (default {default_of(ModelSettings, 'threshold')})",
    )
    group.add_argument(
        "--min-margin",
        type=float,
        help=f"{SCORING_HELP['min_margin']} (default {default_of(ModelSettings, 'min_margin')})",
    )
    group.add_argument("--multi-label", action="store_true", help=SCORING_HELP["multi_label"])
    group.add_argument(
        "--label-threshold",
        dest="label_thresholds",
        action="append",
        metavar="[LABEL=]SIMILARITY",
        help="multi-label cosine-similarity threshold: a number for all labels "
        f"(default {default_of(ModelSettings, 'label_threshold')}), "
        "or LABEL=NUMBER for one label; repeatable",
    )
    add_max_duration_option(group)


def add_max_duration_option(group: argparse._ActionsContainer) -> None:
    """--max-duration, the ModelSettings limit that both the label flags and serve's limits offer."""
    group.add_argument(
        "--max-duration",
        dest="max_duration_s",
        type=float,
        help=f"longest audio accepted, seconds (default {default_of(ModelSettings, 'max_duration_s')})",
    )


MIN_DBFS_HELP = (
    "silence gate: windows quieter than this RMS level in dBFS (-120 to 0, e.g. -60) are not sent to the "
    "model and count as quiet"
)


def add_gate_option(group: argparse._ActionsContainer, *, default: float | None = None) -> None:
    shown = "off" if default is None else f"{default:g}"
    group.add_argument(
        "--min-dbfs", type=float, default=default, metavar="DBFS", help=f"{MIN_DBFS_HELP} (default {shown})"
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


def resolve_labels(args: argparse.Namespace, *, optional: bool = False) -> str | None:
    """--labels as given, or the named --preset (e.g. smart_home, smart_home_zh); None when neither
    is given and labels are ``optional`` (an adapter brings its own)."""
    if args.preset and args.labels:
        raise UsageError("give --labels or --preset, not both")
    if args.preset:
        try:
            return preset_labels(args.preset)
        except KeyError as error:
            raise UsageError(str(error.args[0])) from None
    if not args.labels:
        if optional:
            return None
        raise UsageError("--labels (or --preset, or --adapter) is required")
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
