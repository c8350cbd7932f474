"""`soundsift models`: the CLAP checkpoints soundsift knows, their aliases and what each is for."""

from __future__ import annotations

import argparse
import json
from typing import Any

from soundsift.cli.common import EXIT_OK
from soundsift.core.gallery import GALLERY, ModelCard

BACKENDS = "torch, onnx"


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "models",
        help="list the CLAP checkpoints soundsift knows, with their aliases",
        description="The known CLAP checkpoints: alias (usable wherever a model is named, e.g. --model general), "
        "hub id, audio encoder, what each is good at, the published ESC-50 zero-shot figure with its source, "
        "whether it is in the local Hugging Face cache, and the backends that run it. Any other CLAP checkpoint "
        "in transformers' format (hub id or folder) loads too.",
    )
    parser.add_argument("--json", action="store_true", help="print JSON, one object per checkpoint")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    rows = [describe(card) for card in GALLERY]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return EXIT_OK
    for row in rows:
        print(f"{row['alias']:<17} {row['hub_id']}  ({row['cached']})")
        print(f"  {row['audio_encoder']}{', feature fusion' if row['fusion'] else ''}; backends {row['backends']}")
        print(f"  good for: {row['good_for']}")
        print(f"  ESC-50 zero-shot: {row['esc50_zero_shot'] or 'no published figure'}")
    return EXIT_OK


def describe(card: ModelCard) -> dict[str, Any]:
    return {
        "alias": card.alias,
        "hub_id": card.hub_id,
        "audio_encoder": card.audio_encoder,
        "fusion": card.fusion,
        "good_for": card.good_for,
        "esc50_zero_shot": card.esc50_zero_shot,
        "cached": cache_state(card.hub_id),
        "backends": BACKENDS,
    }


def cache_state(hub_id: str) -> str:
    """'cached' when the checkpoint's config is in the local Hugging Face cache, 'not cached'
    otherwise ('cache unknown' without huggingface_hub, which the torch extra brings)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return "cache unknown"
    return "cached" if isinstance(try_to_load_from_cache(hub_id, "config.json"), str) else "not cached"
