"""Labels as the text encoder sees them: parsed, translated to English, put into prompt templates
and embedded, with an LRU cache of text embeddings (labels repeat across requests)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from functools import cached_property
from itertools import pairwise
from pathlib import Path

import numpy as np

from soundsift.core.labels import LabelLimits, LabelsInput, build_prompts, parse_labels
from soundsift.core.pipeline import Embedder, embeddings_or_raise
from soundsift.core.scoring import PreparedLabels
from soundsift.core.settings import ModelSettings, validate_templates
from soundsift.errors import LabelError
from soundsift.i18n.glossary import Glossary


class LabelEncoder:
    """Turns label sets into `PreparedLabels` through an `Embedder`. Thread-safe."""

    def __init__(self, settings: ModelSettings, embedder: Embedder, dim: int) -> None:
        self.settings, self.embedder, self.dim = settings, embedder, dim
        self.limits = LabelLimits(
            max_labels=settings.max_labels,
            max_label_chars=settings.max_label_chars,
            max_synonyms=settings.max_synonyms,
            max_total_chars=settings.max_label_text_chars,
        )
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()

    def zero_shot_labels(
        self,
        labels: LabelsInput | None,
        *,
        templates: Sequence[str] | None = None,
        multi_label: bool = False,
        min_labels: int | None = None,
    ) -> PreparedLabels:
        """Labels parsed, translated, prompted and embedded (at least two, one when ``multi_label``)."""
        chosen = self.templates(templates)
        least = (1 if multi_label else 2) if min_labels is None else min_labels
        classes = parse_labels(labels or [], limits=self.limits, min_labels=least)
        warnings: list[str] = []
        phrase_groups, translated_as = [], []
        for label in classes:
            phrases, english = self._english_phrases(label.phrases, warnings)
            phrase_groups.append(phrases)
            translated_as.append(english)
        prompts = [[p for phrase in phrases for p in build_prompts(phrase, chosen)] for phrases in phrase_groups]
        owners, exclusion_prompts = [], []
        for index, label in enumerate(classes):
            for excluded in label.exclusions:
                phrases, _ = self._english_phrases((excluded,), warnings)
                owners.append(index)
                exclusion_prompts.append([p for phrase in phrases for p in build_prompts(phrase, chosen)])
        groups = prompts + exclusion_prompts
        embeddings = self._mean_embeddings(groups) if groups else np.zeros((0, self.dim), dtype=np.float32)
        return PreparedLabels(
            classes=classes,
            embeddings=embeddings[: len(classes)],
            templates=chosen,
            multi_label=multi_label,
            prompts=prompts,
            translated_as=translated_as,
            warnings=warnings,
            exclusion_embeddings=embeddings[len(classes) :],
            exclusion_owner=np.array(owners, dtype=int),
        )

    def templates(self, templates: Sequence[str] | None) -> tuple[str, ...]:
        """The request's prompt templates (validated), or the settings' own."""
        if not templates:
            return tuple(self.settings.templates)
        if len(templates) > self.settings.max_templates:
            raise LabelError(f"{len(templates)} templates given; the limit is {self.settings.max_templates}")
        return tuple(validate_templates(list(templates), max_chars=self.settings.max_template_chars))

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """(N, D) unit embeddings of the texts exactly as given, from an LRU cache of
        ``text_cache_size`` entries (each text is length-bounded by the label and template limits,
        so the cache's memory is bounded too). A text the model fails on raises its error."""
        texts = list(texts)
        with self._cache_lock:
            known = {text: self._cache[text] for text in texts if text in self._cache}
            for text in known:
                self._cache.move_to_end(text)
        missing = [text for text in dict.fromkeys(texts) if text not in known]
        if missing:
            known.update(zip(missing, embeddings_or_raise(self.embedder.embed_text(missing))))
            with self._cache_lock:
                for text in missing:
                    self._cache[text] = known[text]
                while len(self._cache) > self.settings.text_cache_size:
                    self._cache.popitem(last=False)
        return np.stack([known[text] for text in texts]) if texts else np.zeros((0, self.dim), dtype=np.float32)

    @property
    def cached_texts(self) -> int:
        return len(self._cache)

    @cached_property
    def glossary(self) -> Glossary:
        translator = None
        if self.settings.translator:
            from soundsift.i18n.machine import MachineTranslator

            translator = MachineTranslator(self.settings.translator)
        return Glossary.load([Path(path) for path in self.settings.glossary], translator=translator)

    def _mean_embeddings(self, prompts: list[list[str]]) -> np.ndarray:
        """(G, D): per group, the normalised mean of its prompts' embeddings (one text-encoder call)."""
        flat = self.embed_text([p for group in prompts for p in group])
        bounds = np.cumsum([0] + [len(group) for group in prompts])
        means = np.stack([flat[start:end].mean(axis=0) for start, end in pairwise(bounds)])
        return means / np.linalg.norm(means, axis=1, keepdims=True)

    def _english_phrases(self, phrases: Sequence[str], warnings: list[str]) -> tuple[list[str], list[str] | None]:
        """Phrases for the text encoder, and the English used when translation changed anything."""
        if not self.settings.translate:
            return list(phrases), None
        english: dict[str, None] = {}  # ordered, de-duplicated in linear time
        changed = False
        for phrase in phrases:
            translation = self.glossary.translate(phrase)
            english.update(dict.fromkeys(translation.phrases))
            changed = changed or translation.translated
            if translation.method == "untranslated":
                warnings.append(
                    f"label {phrase!r} ({translation.language} script) is not in the glossary; the model sees it "
                    "as written and may score it poorly. Add it with --glossary FILE or write it in English."
                )
            elif translation.method == "fuzzy":
                warnings.append(
                    f"label {phrase!r} was matched by similarity ({translation.score:.2f}) to "
                    f"{', '.join(translation.phrases)}"
                )
        return list(english), (list(english) if changed else None)
