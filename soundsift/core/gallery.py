"""The CLAP checkpoints soundsift knows, with short aliases usable wherever a model is named
(``--model general``, ``SOUNDSIFT_MODEL=music``, ``Classifier(model="unfused")``). Any other CLAP
checkpoint in transformers' format (a hub id or a folder) loads as well; the gallery only names
the common ones and says what each is for.

The ESC-50 figures are zero-shot top-1 accuracy as published, with their source; none was measured
here (no weights can be downloaded on this project's machines)."""

from __future__ import annotations

from dataclasses import dataclass

EMBEDDINGS_BENCHMARK = "embeddings-benchmark results, task ESC50_Zeroshot (transformers' port)"


@dataclass(frozen=True)
class ModelCard:
    alias: str
    hub_id: str
    audio_encoder: str
    fusion: bool
    good_for: str
    esc50_zero_shot: str
    """Published ESC-50 zero-shot top-1, with its source; '' when none is published."""


GALLERY = (
    ModelCard(
        "fused",
        "laion/clap-htsat-fused",
        "HTSAT-tiny (96-wide patches, hidden 768, depths 2-2-6-2)",
        True,
        "general sounds; long recordings (feature fusion over 10 s windows); the default",
        f"74.0 % ({EMBEDDINGS_BENCHMARK}); about 90 % with LAION's laion_clap",
    ),
    ModelCard(
        "unfused",
        "laion/clap-htsat-unfused",
        "HTSAT-tiny (96-wide patches, hidden 768, depths 2-2-6-2)",
        False,
        "general sounds, clips up to 10 s",
        f"81.7 % ({EMBEDDINGS_BENCHMARK})",
    ),
    ModelCard(
        "general",
        "laion/larger_clap_general",
        "HTSAT-base (128-wide patches, hidden 1024, depths 2-2-12-2)",
        False,
        "general sounds, music and speech: the most accurate on everyday sounds",
        f"90.5 % ({EMBEDDINGS_BENCHMARK})",
    ),
    ModelCard(
        "music-and-speech",
        "laion/larger_clap_music_and_speech",
        "HTSAT-base (128-wide patches, hidden 1024, depths 2-2-12-2)",
        False,
        "music and speech",
        "",
    ),
    ModelCard(
        "music",
        "laion/larger_clap_music",
        "HTSAT-base (128-wide patches, hidden 1024, depths 2-2-12-2)",
        False,
        "music",
        "",
    ),
)
BY_ALIAS = {card.alias: card for card in GALLERY}


def resolve_model(name: str) -> str:
    """The hub id an alias names; any other name (a hub id, a folder) unchanged."""
    card = BY_ALIAS.get(name.strip().lower())
    return card.hub_id if card is not None else name
