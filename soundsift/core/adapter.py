"""Taught labels: an `Adapter` learns sounds from a handful of the user's clips.

``Adapter.fit(classifier, "examples/")`` embeds the clips (one sub-folder per label, or a CSV of
``path,label``; ``_none`` holds "none of these" recordings), picks a method by cross-validation
(see soundsift.core.fitting), and calibrates a softmax scale and a threshold per label. The result
is one portable file (``Adapter.save`` / ``Adapter.load``; the container is
soundsift.core.adapter_file): safetensors arrays plus JSON metadata, no pickle. Where the clips
come from is soundsift.core.examples. It records the model and an *embedding fingerprint* (the
model's embeddings of fixed probe sounds and a probe text, soundsift.core.fingerprint), so a
classifier whose embeddings differ refuses it.

Taught labels join a request's zero-shot labels (`Adapter.prepared_labels`): they come first,
scored by the adapter's class vectors (and Tip-Adapter cache), then ranked together.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from soundsift._version import __version__
from soundsift.core import adapter_file
from soundsift.core.audio import AudioInput
from soundsift.core.examples import ExamplesInput, content_hash, describe_clip, read_examples, read_negatives
from soundsift.core.fingerprint import AGREEMENT, agreement, same_model
from soundsift.core.fitting import ExampleCache, Examples, Head, Method, calibrate, describe, fit, select
from soundsift.core.label_text import LabelEncoder
from soundsift.core.labels import LabelClass
from soundsift.core.pipeline import Pipeline
from soundsift.core.scoring import PreparedLabels
from soundsift.errors import AdapterError, AdapterMismatchError, ExamplesError, LabelError, SoundsiftError

# Ceilings on what an adapter file may hold, far above what teaching fits (scales up to 300,
# options up to 5.5), so that a crafted file cannot make a score overflow.
MAX_LOGIT_SCALE = 1_000.0
MAX_OPTION = 1_000.0


class TeachingModel(Protocol):
    """What fitting needs from a classifier (soundsift.core.classifier.Classifier is one)."""

    @property
    def model_id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    @property
    def pipeline(self) -> Pipeline: ...

    @property
    def label_encoder(self) -> LabelEncoder: ...

    def fingerprint(self) -> np.ndarray: ...


@dataclass(frozen=True)
class Skipped:
    source: str
    error: str
    message: str


@dataclass(frozen=True)
class Adapter:
    """Taught labels for one model. Build with `Adapter.fit`, share with `save` / `load`."""

    labels: tuple[str, ...]
    method: Method
    options: dict[str, float]
    weights: np.ndarray
    text: np.ndarray
    thresholds: np.ndarray
    logit_scale: float
    support: np.ndarray
    support_owner: np.ndarray
    support_hashes: tuple[str, ...]
    negatives: np.ndarray
    negative_hashes: tuple[str, ...]
    fingerprint: np.ndarray
    model: str
    prompts: tuple[tuple[str, ...], ...]
    cross_validated: bool
    cross_validation: dict[str, float] = field(default_factory=dict)
    skipped: tuple[Skipped, ...] = ()
    soundsift_version: str = __version__
    created: str = ""
    name: str = ""

    # ---- fitting --------------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        classifier: TeachingModel,
        examples: ExamplesInput,
        *,
        negatives: str | os.PathLike[str] | Sequence[AudioInput] | None = None,
        method: Method | Literal["auto"] = "auto",
        templates: Sequence[str] | None = None,
        reuse: Adapter | None = None,
        seed: int = 0,
        name: str = "",
    ) -> Adapter:
        """Teach labels from example clips.

        ``method`` is ``prototype``, ``tip``, ``probe`` or ``auto`` (cross-validated choice).
        ``reuse``: an earlier adapter of the same model whose clip embeddings are taken for clips
        with the same content (re-teaching with one more clip embeds only that clip). Clips that
        cannot be decoded are skipped and listed in ``skipped``; a label left with no usable clip
        raises ExamplesError."""
        if method not in ("auto", "prototype", "tip", "probe"):
            raise ExamplesError(f"method {method!r} is not one of auto, prototype, tip, probe")
        found = read_examples(examples)
        extra_negatives = read_negatives(negatives) if negatives is not None else []
        fingerprint = classifier.fingerprint()
        cached = reuse.embedding_cache() if reuse is not None and reuse.agrees_with(fingerprint) else {}
        clips = [(label, clip) for label, group in found.by_label.items() for clip in group]
        every_clip = [clip for _, clip in clips] + found.negatives + extra_negatives
        outcomes, digests = _embed(classifier, every_clip, cached)
        return cls.from_outcomes(
            classifier,
            [label for label, _ in clips],
            outcomes,
            sources=[describe_clip(clip) for clip in every_clip],
            digests=digests,
            method=method,
            templates=templates,
            seed=seed,
            name=name,
        )

    @classmethod
    def from_outcomes(
        cls,
        classifier: TeachingModel,
        clip_labels: Sequence[str],
        outcomes: Sequence[np.ndarray | SoundsiftError],
        *,
        sources: Sequence[str],
        digests: Sequence[str] | None = None,
        method: Method | Literal["auto"] = "auto",
        templates: Sequence[str] | None = None,
        seed: int = 0,
        name: str = "",
    ) -> Adapter:
        """Fit on each clip's embedding or error: ``outcomes`` holds the labelled clips (their labels
        in ``clip_labels``) followed by the negatives. Failed clips are skipped and listed; a label
        left with no usable clip raises ExamplesError. (The HTTP service embeds through its engine
        and comes in here.)"""
        labels = tuple(dict.fromkeys(clip_labels))
        digests = list(digests) if digests is not None else [""] * len(outcomes)
        skipped = [
            Skipped(outcome.source or source, outcome.code, str(outcome))
            for outcome, source in zip(outcomes, sources)
            if isinstance(outcome, SoundsiftError)
        ]
        index = {label: position for position, label in enumerate(labels)}
        kept = [
            (index[label], outcome, digest)
            for label, outcome, digest in zip(clip_labels, outcomes, digests)
            if isinstance(outcome, np.ndarray)
        ]
        kept_negatives = [
            (outcome, digest)
            for outcome, digest in zip(outcomes[len(clip_labels) :], digests[len(clip_labels) :])
            if isinstance(outcome, np.ndarray)
        ]
        _check_every_label_has_clips(labels, [owner for owner, _, _ in kept], skipped)
        width = classifier.dim
        return cls.from_embeddings(
            classifier,
            labels,
            _stack([vector for _, vector, _ in kept], width),
            np.array([owner for owner, _, _ in kept], dtype=np.int64),
            negatives=_stack([vector for vector, _ in kept_negatives], width),
            method=method,
            templates=templates,
            seed=seed,
            name=name,
            support_hashes=tuple(digest for _, _, digest in kept),
            negative_hashes=tuple(digest for _, digest in kept_negatives),
            skipped=tuple(skipped),
        )

    @classmethod
    def from_embeddings(
        cls,
        classifier: TeachingModel,
        labels: Sequence[str],
        support: np.ndarray,
        owner: np.ndarray,
        *,
        negatives: np.ndarray | None = None,
        method: Method | Literal["auto"] = "auto",
        templates: Sequence[str] | None = None,
        seed: int = 0,
        name: str = "",
        support_hashes: tuple[str, ...] | None = None,
        negative_hashes: tuple[str, ...] | None = None,
        skipped: tuple[Skipped, ...] = (),
    ) -> Adapter:
        """Fit on clip embeddings already computed: (N, D) unit ``support`` whose ``owner[i]`` indexes
        ``labels``, and (M, D) ``negatives`` (the evaluation protocol uses this to embed once)."""
        prepared = classifier.label_encoder.zero_shot_labels(
            list(labels), templates=templates, multi_label=True, min_labels=1
        )
        width = prepared.embeddings.shape[1]
        negative_vectors = negatives if negatives is not None else np.zeros((0, width), dtype=np.float32)
        data = Examples(support, owner, prepared.embeddings, negative_vectors)
        scale = classifier.pipeline.logit_scale
        selection = select(data, method, logit_scale=scale, seed=seed)
        head = fit(data, selection.method, selection.options, logit_scale=scale)
        calibration = calibrate(data, selection, logit_scale=scale, seed=seed)
        return cls(
            labels=tuple(labels),
            method=selection.method,
            options=selection.options,
            weights=head.weights,
            text=prepared.embeddings.astype(np.float32),
            thresholds=calibration.thresholds,
            logit_scale=calibration.logit_scale,
            support=support.astype(np.float32),
            support_owner=owner.astype(np.int64),
            support_hashes=support_hashes if support_hashes is not None else ("",) * len(support),
            negatives=negative_vectors.astype(np.float32),
            negative_hashes=negative_hashes if negative_hashes is not None else ("",) * len(negative_vectors),
            fingerprint=classifier.fingerprint().astype(np.float32),
            model=classifier.model_id,
            prompts=tuple(tuple(group) for group in prepared.prompts),
            cross_validated=selection.cross_validated,
            cross_validation=selection.accuracy,
            skipped=skipped,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            name=name,
        )

    # ---- use --------------------------------------------------------------------------------------

    @cached_property
    def head(self) -> Head:
        """The taught labels' scoring head (built once per adapter: scoring and search reuse it)."""
        cache = None
        if self.method == "tip":
            cache = ExampleCache(
                self.support, self.support_owner, len(self.labels), self.options["alpha"], self.options["beta"]
            )
        return Head(self.weights, cache)

    @property
    def examples(self) -> dict[str, int]:
        counts = np.bincount(self.support_owner, minlength=len(self.labels))
        return {label: int(count) for label, count in zip(self.labels, counts)}

    @property
    def summary(self) -> str:
        how = describe(self.method, self.options)
        chosen = "chosen by cross-validation" if self.cross_validated else "too few clips to cross-validate"
        return f"{len(self.labels)} labels, {len(self.support)} clips, {len(self.negatives)} negatives; {how}, {chosen}"

    def prepared_labels(self, extras: PreparedLabels | None, *, multi_label: bool) -> PreparedLabels:
        """The taught labels first, then the request's zero-shot labels (which must not repeat them)."""
        repeated = set(self.labels) & set(extras.names if extras else [])
        if repeated:
            raise LabelError(f"labels {', '.join(sorted(repeated))} are taught by the adapter; do not give them again")
        taught = [LabelClass(label, (label,)) for label in self.labels]
        untranslated: list[list[str] | None] = [None] * len(self.labels)
        width = self.weights.shape[1]
        head = self.head
        return PreparedLabels(
            classes=taught + (extras.classes if extras else []),
            embeddings=np.vstack([self.weights, extras.embeddings if extras else np.zeros((0, width))]).astype(
                np.float32
            ),
            templates=extras.templates if extras else (),
            multi_label=multi_label,
            prompts=[list(group) for group in self.prompts] + (extras.prompts if extras else []),
            translated_as=untranslated + (extras.translated_as if extras else []),
            warnings=extras.warnings if extras else [],
            exclusion_embeddings=extras.exclusion_embeddings if extras else np.zeros((0, width), np.float32),
            exclusion_owner=(extras.exclusion_owner + len(self.labels)) if extras else np.zeros(0, dtype=int),
            taught=len(self.labels),
            cache=head.cache,
            accept_thresholds=self.thresholds,
            logit_scale=self.logit_scale,
            adapter=self.name or "adapter",
        )

    def agrees_with(self, fingerprint: np.ndarray) -> bool:
        return same_model(self.fingerprint, fingerprint)

    def check_model(self, model_id: str, fingerprint: np.ndarray) -> None:
        """Refuse use with a model whose embeddings differ from the one the adapter was taught on."""
        if self.agrees_with(fingerprint):
            return
        raise AdapterMismatchError(
            f"adapter {self.name or ''} was taught on {self.model} but this classifier runs {model_id}, whose "
            f"embeddings differ (probe agreement {agreement(self.fingerprint, fingerprint):.3f} < {AGREEMENT}); "
            "teach it again with this model"
        )

    def embedding_cache(self) -> dict[str, np.ndarray]:
        """Clip embeddings by content hash, for re-teaching without re-embedding."""
        pairs = zip(self.support_hashes + self.negative_hashes, list(self.support) + list(self.negatives))
        return {digest: vector for digest, vector in pairs if digest}

    def renamed(self, name: str) -> Adapter:
        return replace(self, name=name)

    # ---- the file -----------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> Path:
        target = Path(path)
        target.write_bytes(self.to_bytes())
        return target

    def to_bytes(self) -> bytes:
        return adapter_file.encode(self._tensors(), self._metadata())

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, name: str = "") -> Adapter:
        """Read an adapter file; AdapterError when it is not a readable, consistent adapter."""
        source = Path(path)
        try:
            data = source.read_bytes()
        except OSError as error:
            raise AdapterError(f"{source}: cannot read the adapter file ({error.strerror or error})") from None
        return cls.from_bytes(data, name=name or source.stem, source=str(source))

    @classmethod
    def from_bytes(cls, data: bytes, *, name: str = "", source: str = "adapter") -> Adapter:
        from safetensors import SafetensorError

        try:
            tensors, metadata = adapter_file.decode(data)
        except (SafetensorError, ValueError, OSError) as error:
            raise AdapterError(f"{source}: not a soundsift adapter file ({error})") from None
        try:
            return cls._from_parts(tensors, metadata, name)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError) as error:
            raise AdapterError(
                f"{source}: the adapter file is inconsistent ({type(error).__name__}: {error})"
            ) from None

    def _tensors(self) -> dict[str, np.ndarray]:
        return {
            "weights": np.ascontiguousarray(self.weights, dtype=np.float32),
            "text": np.ascontiguousarray(self.text, dtype=np.float32),
            "thresholds": np.ascontiguousarray(self.thresholds, dtype=np.float32),
            "support": np.ascontiguousarray(self.support, dtype=np.float32),
            "support_owner": np.ascontiguousarray(self.support_owner, dtype=np.int64),
            "negatives": np.ascontiguousarray(self.negatives, dtype=np.float32),
            "fingerprint": np.ascontiguousarray(self.fingerprint, dtype=np.float32),
        }

    def _metadata(self) -> dict[str, Any]:
        return {
            "format": adapter_file.FORMAT,
            "format_version": adapter_file.FORMAT_VERSION,
            "labels": list(self.labels),
            "examples": self.examples,
            "method": self.method,
            "options": self.options,
            "logit_scale": self.logit_scale,
            "thresholds": {label: float(value) for label, value in zip(self.labels, self.thresholds)},
            "cross_validated": self.cross_validated,
            "cross_validation": self.cross_validation,
            "model": self.model,
            "soundsift_version": self.soundsift_version,
            "created": self.created,
            "prompts": [list(group) for group in self.prompts],
            "support_hashes": list(self.support_hashes),
            "negative_hashes": list(self.negative_hashes),
            "skipped": [vars(item) for item in self.skipped],
        }

    @classmethod
    def _from_parts(cls, tensors: dict[str, np.ndarray], metadata: Any, name: str) -> Adapter:
        if not isinstance(metadata, dict) or metadata.get("format") != adapter_file.FORMAT:
            raise ValueError("no soundsift adapter metadata")
        if metadata.get("format_version") != adapter_file.FORMAT_VERSION:
            raise ValueError(f"format version {metadata.get('format_version')} is not {adapter_file.FORMAT_VERSION}")
        labels = tuple(str(label) for label in metadata["labels"])
        adapter = cls(
            labels=labels,
            method=metadata["method"],
            options={str(key): float(value) for key, value in metadata["options"].items()},
            weights=tensors["weights"],
            text=tensors["text"],
            thresholds=tensors["thresholds"],
            logit_scale=float(metadata["logit_scale"]),
            support=tensors["support"],
            support_owner=tensors["support_owner"],
            support_hashes=tuple(str(item) for item in metadata["support_hashes"]),
            negatives=tensors["negatives"],
            negative_hashes=tuple(str(item) for item in metadata["negative_hashes"]),
            fingerprint=tensors["fingerprint"],
            model=str(metadata["model"]),
            prompts=tuple(tuple(str(p) for p in group) for group in metadata["prompts"]),
            cross_validated=bool(metadata["cross_validated"]),
            cross_validation={str(key): float(value) for key, value in metadata["cross_validation"].items()},
            skipped=tuple(Skipped(**item) for item in metadata["skipped"]),
            soundsift_version=str(metadata["soundsift_version"]),
            created=str(metadata["created"]),
            name=name,
        )
        adapter._check_consistent()
        return adapter

    def _check_consistent(self) -> None:
        count, width = len(self.labels), self.fingerprint.shape[-1]
        if not count or len(set(self.labels)) != count:
            raise ValueError("labels are missing or repeated")
        if self.method not in ("prototype", "tip", "probe"):
            raise ValueError(f"unknown method {self.method!r}")
        if self.method == "tip" and not {"alpha", "beta"} <= set(self.options):
            raise ValueError("tip needs alpha and beta")
        expected = {
            "weights": (self.weights, (count, width)),
            "text": (self.text, (count, width)),
            "thresholds": (self.thresholds, (count,)),
            "support": (self.support, (len(self.support_hashes), width)),
            "support_owner": (self.support_owner, (len(self.support_hashes),)),
            "negatives": (self.negatives, (len(self.negative_hashes), width)),
        }
        for key, (array, shape) in expected.items():
            if array.shape != shape:
                raise ValueError(f"{key} has shape {array.shape}, expected {shape}")
        if len(self.prompts) != count:
            raise ValueError("the prompts do not match the labels")
        if not np.issubdtype(self.support_owner.dtype, np.integer):
            raise ValueError(f"support_owner holds {self.support_owner.dtype}, not label indices")
        if len(self.support_owner) and (self.support_owner.min() < 0 or self.support_owner.max() >= count):
            raise ValueError("an example belongs to no label")
        floats = (self.weights, self.text, self.thresholds, self.support, self.negatives, self.fingerprint)
        if not all(np.issubdtype(array.dtype, np.floating) and np.isfinite(array).all() for array in floats):
            raise ValueError("non-finite or non-float values")
        # Bounded, so that no score computed from the file can overflow to inf or NaN.
        if not (isinstance(self.logit_scale, (int, float)) and 0 < self.logit_scale <= MAX_LOGIT_SCALE):
            raise ValueError(f"logit_scale must be a number in (0, {MAX_LOGIT_SCALE:g}]")
        for key, value in self.options.items():
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) <= MAX_OPTION):
                raise ValueError(f"option {key!r} must be a number of at most {MAX_OPTION:g} in size")


def _embed(
    classifier: TeachingModel, clips: list[AudioInput], cached: dict[str, np.ndarray]
) -> tuple[list[np.ndarray | SoundsiftError], list[str]]:
    """Each clip's embedding (from ``cached`` when its content hash is there) or error, and its hash."""
    digests = [content_hash(clip) for clip in clips]
    missing = [index for index, digest in enumerate(digests) if not digest or digest not in cached]
    fresh = dict(zip(missing, classifier.pipeline.embed_all([clips[index] for index in missing])))
    return [fresh[index] if index in fresh else cached[digest] for index, digest in enumerate(digests)], digests


def _check_every_label_has_clips(labels: tuple[str, ...], owners: list[int], skipped: list[Skipped]) -> None:
    usable = set(owners)
    empty = [label for index, label in enumerate(labels) if index not in usable]
    if empty:
        reasons = "; ".join(f"{item.source}: {item.message}" for item in skipped[:5])
        raise ExamplesError(f"no usable clip for label(s) {', '.join(empty)} ({reasons})")


def _stack(vectors: list[np.ndarray], width: int) -> np.ndarray:
    return np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, width), dtype=np.float32)
