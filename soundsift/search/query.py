"""Queries: text (parsed and translated exactly like classification labels) or an example sound,
exclusions that veto windows, file filters, and merging adjacent windows of a file into one hit.

A text query is a label set: ``"door slamming, glass breaking -music"`` is two descriptions, the
second with an excluded sound. Each description is searched on its own and the candidates pooled
(a window's score is its best description); a window is vetoed, exactly as a label is in
classification (`soundsift.core.scoring.vetoed_labels`), when an excluded sound is more similar to
it than the description it matched.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from soundsift.core.adapter import Adapter
from soundsift.core.audio import AudioInput, DecodedAudio
from soundsift.core.classifier import Classifier
from soundsift.core.fitting import Head
from soundsift.core.labels import split_exclusions
from soundsift.core.scoring import PreparedLabels, vetoed_labels
from soundsift.search.embedding import WindowLayout, embed_windows, iter_windows
from soundsift.search.errors import QueryError
from soundsift.search.stores import Candidate

# Windows fetched per hit wanted: merging and vetoes drop some, so the store is asked for more.
FETCH_FACTOR = 5
MIN_FETCH = 50
MAX_TOP = 1000
# A window joins a neighbouring hit while its score is at most this far below the hit's best.
MERGE_DROP = 0.05
# The label separators of soundsift.core.labels (ASCII, full-width and ideographic commas).
_SEPARATORS = re.compile(r"[,，、]")


@dataclass(frozen=True)
class QueryVectors:
    """What a query asks the store: one unit vector per description, plus excluded sounds.

    ``taught`` maps a description's row to a label of ``head`` (a taught adapter's): that row
    retrieves with the label's class vector, and its candidates are scored by the adapter (its
    Tip-Adapter cache included) — taught sounds re-rank the hits."""

    vectors: np.ndarray
    prepared: PreparedLabels | None = None
    exclusions: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    taught: dict[int, int] = field(default_factory=dict)
    head: Head | None = None

    def score(self, vector: np.ndarray) -> float:
        """A stored window's score: its best similarity to any description (taught ones by the adapter)."""
        scores = self.vectors @ vector
        if self.head is not None and self.taught:
            adapted = self.head.similarities(vector[None, :])[0]
            for row, label in self.taught.items():
                scores[row] = adapted[label]
        return float(scores.max())


def text_query(
    classifier: Classifier, text: str, *, exclude: Sequence[str] = (), adapter: Adapter | None = None
) -> QueryVectors:
    """Descriptions to vectors as zero-shot labels are made (templates, glossary translation and
    '-word' / '(not word)' exclusions); ``exclude`` adds excluded sounds to all. A description that
    names a label the ``adapter`` taught searches with what the adapter learnt for it."""
    if not text.strip():
        raise QueryError("the text query is empty")
    positive, excluded = _split_query(text)
    excluded += [word.strip().lstrip("-") for word in exclude if word.strip().lstrip("-")]
    extra = "".join(f" -{word}" for word in excluded)
    labels = [part + extra for part in positive]
    prepared = classifier.label_encoder.zero_shot_labels(labels, multi_label=True)
    vectors = prepared.embeddings.astype(np.float32)
    if adapter is None:
        return QueryVectors(vectors, prepared=prepared)
    taught = {row: adapter.labels.index(name) for row, name in enumerate(prepared.names) if name in adapter.labels}
    for row, label in taught.items():
        direction = adapter.weights[label]
        vectors[row] = direction / max(float(np.linalg.norm(direction)), 1e-12)
    return QueryVectors(vectors, prepared=prepared, taught=taught, head=adapter.head)


def _split_query(text: str) -> tuple[list[str], list[str]]:
    """The descriptions that name a sound to look for, as written, and the sounds that descriptions
    made only of exclusions ('-music', '(not speech)') exclude from every hit. QueryError when
    nothing positive is left: an exclusion alone would search for its own literal text."""
    positive: list[str] = []
    excluded: list[str] = []
    for description in _descriptions(text):
        head, exclusions = split_exclusions(f" {description}")  # the space: a leading '-word' excludes too
        if head.strip("-").strip():
            positive.append(description)
        else:
            excluded.extend(exclusions)
    if not positive:
        raise QueryError(
            f"the query {text[:80]!r} names no sound to look for: '-word' and '(not word)' only exclude sounds"
        )
    return positive, excluded


def _descriptions(text: str) -> list[str]:
    """The comma-separated descriptions of a query, each as written (with its exclusions)."""
    parts = [part.strip() for part in _SEPARATORS.split(text) if part.strip()]
    if not parts:
        raise QueryError("the text query is empty")
    return parts


def example_query(
    classifier: Classifier,
    audio: AudioInput,
    layout: WindowLayout,
    *,
    start_s: float | None = None,
    end_s: float | None = None,
    exclude: Sequence[str] = (),
    source: str | None = None,
) -> QueryVectors:
    """An example sound (or its span ``start_s``..``end_s``) to one vector: windowed like the index,
    the windows' embeddings averaged. ``exclude`` names sounds that veto windows, as for text."""
    clip = classifier.pipeline.load(audio, source=source)
    samples = clip.samples
    if start_s is not None or end_s is not None:
        first = round((start_s or 0.0) * clip.sample_rate)
        last = len(samples) if end_s is None else round(end_s * clip.sample_rate)
        if not 0 <= first < last or first >= len(samples):
            raise QueryError(f"the span {start_s}-{end_s} s is not inside the example ({clip.duration_s:.2f} s)")
        samples = samples[first:last]
    piece = DecodedAudio(samples, clip.sample_rate, clip.source, False)
    _, _, vectors = embed_windows(classifier, iter_windows(classifier, _as_array(piece), layout, source=clip.source))
    mean = vectors.mean(axis=0)
    vector = (mean / (np.linalg.norm(mean) + 1e-12)).astype(np.float32)
    exclusions = np.zeros((0, len(vector)), dtype=np.float32)
    if exclude:
        exclusions = classifier.label_encoder.zero_shot_labels(list(exclude), multi_label=True).embeddings.astype(
            np.float32
        )
    return QueryVectors(vector[None, :], exclusions=exclusions)


def _as_array(clip: DecodedAudio) -> AudioInput:
    return (clip.samples, clip.sample_rate)


def parse_span(spec: str) -> tuple[str, float | None, float | None]:
    """``FILE``, ``FILE@12.5-17`` or ``FILE@1:02-1:07`` to (file, start, end)."""
    if "@" not in spec:
        return spec, None, None
    path, _, span = spec.rpartition("@")
    if "-" not in span:
        raise QueryError(f"{spec!r}: write the example's span as FILE@START-END (seconds or M:SS)")
    start, _, end = span.partition("-")
    return path, _seconds(start, spec) if start else None, _seconds(end, spec) if end else None


def _seconds(text: str, spec: str) -> float:
    try:
        value = 0.0
        for part in text.strip().split(":"):
            value = value * 60 + float(part)
    except ValueError:
        raise QueryError(f"{spec!r}: {text!r} is not a time (seconds or M:SS)") from None
    if not np.isfinite(value) or value < 0:
        raise QueryError(f"{spec!r}: {text!r} is not a time")
    return value


def fetch_size(top: int) -> int:
    if not 1 <= top <= MAX_TOP:
        raise QueryError(f"top must be between 1 and {MAX_TOP}, not {top}")
    return max(MIN_FETCH, FETCH_FACTOR * top)


def pool_candidates(
    query: QueryVectors, found: Sequence[Iterable[Candidate]]
) -> tuple[dict[int, tuple[Candidate, float]], int]:
    """Candidates of every description pooled by window, each with its best score, minus vetoed
    windows; returns them with the number vetoed."""
    pooled: dict[int, tuple[Candidate, float]] = {}
    for candidates in found:
        for candidate in candidates:
            if candidate.id not in pooled:
                pooled[candidate.id] = (candidate, query.score(candidate.vector))
    vetoed = [window for window, (candidate, score) in pooled.items() if _vetoed(query, candidate, score)]
    for window in vetoed:
        del pooled[window]
    return pooled, len(vetoed)


def _vetoed(query: QueryVectors, candidate: Candidate, score: float) -> bool:
    if query.prepared is not None and len(query.prepared.exclusion_owner):
        similarities = query.prepared.embeddings @ candidate.vector
        best = int(np.argmax(similarities))
        return bool(vetoed_labels(query.prepared, similarities, candidate.vector)[best])
    if len(query.exclusions):
        return bool(np.max(query.exclusions @ candidate.vector) > score)
    return False


@dataclass
class Span:
    file_id: int
    start_s: float
    end_s: float
    score: float
    best_start_s: float
    best_end_s: float
    windows: int


def merge_adjacent(
    scored: Iterable[tuple[Candidate, float]], *, gap_s: float = 0.0, drop: float = MERGE_DROP
) -> list[Span]:
    """Windows of one file that overlap or touch (within ``gap_s``) become one span, scored by its
    best window; spans best first.

    Greedy from the best window down: a window joins the span it touches when its score is within
    ``drop`` of the span's best, so a span is one event, not a whole file of middling windows; a
    weaker window touching a span is its shoulder and is not reported again on its own."""
    spans: list[Span] = []
    by_file: dict[int, list[Span]] = {}
    for candidate, score in sorted(scored, key=lambda item: -item[1]):
        touching = [
            span
            for span in by_file.get(candidate.file_id, [])
            if candidate.start_s <= span.end_s + gap_s and candidate.end_s >= span.start_s - gap_s
        ]
        if not touching:
            span = Span(
                candidate.file_id, candidate.start_s, candidate.end_s, score, candidate.start_s, candidate.end_s, 1
            )
            spans.append(span)
            by_file.setdefault(candidate.file_id, []).append(span)
            continue
        span = touching[0]  # the best span it touches (spans are made best first)
        if score >= span.score - drop:
            span.start_s, span.end_s = min(span.start_s, candidate.start_s), max(span.end_s, candidate.end_s)
            span.windows += 1
    return spans
