"""soundsift.Classifier: the one library API that the CLI, HTTP server and web page call.

A facade over the pipeline (soundsift.core.pipeline: decode -> features -> embed -> score) and the
label encoder (soundsift.core.label_text); it owns neither step, only their wiring for one model.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from functools import cached_property
from typing import Any, Literal, cast

import numpy as np

from soundsift.backends import Backend, load_backend
from soundsift.core.adapter import Adapter
from soundsift.core.audio import AudioInput, is_array_input
from soundsift.core.calibration import AudioCalibration
from soundsift.core.fingerprint import PROBE_TEXT, probe_signals
from soundsift.core.label_text import LabelEncoder
from soundsift.core.labels import LabelsInput, check_taught_labels
from soundsift.core.pipeline import Embedder, LocalEmbedder, Pipeline, ScoredInput, embeddings_or_raise
from soundsift.core.results import Classification, FailedInput
from soundsift.core.scoring import LabelThresholds, PreparedLabels, ScoringOptions, check_label_thresholds
from soundsift.core.settings import ModelSettings
from soundsift.errors import LabelError


class Classifier:
    """Zero-shot audio classifier on a CLAP checkpoint.

    Every keyword is a field of `soundsift.core.settings.ModelSettings`; anything not given comes from
    ``SOUNDSIFT_*`` environment variables, then the defaults. Unknown names and bad values raise
    ConfigurationError::

        clf = Classifier()                                   # laion/clap-htsat-fused, auto device
        clf = Classifier(model="/models/clap", device="cpu")
        result = clf.classify("dog.wav", "dog barking, siren, rain")
        clf = Classifier(adapter="doorbell.adapter")         # taught labels join every request

    ``adapter`` (an `Adapter` or the path of an adapter file; also the ``adapter`` setting) is
    checked against this model's embeddings and refused when they differ. ``loaded_backend`` is an
    already loaded model (default: the one the settings name, loaded here); ``embedder`` replaces
    the direct model call (the server passes its `soundsift.core.engine.ModelEngine`, so every model
    call of its classifier goes through one queue).
    """

    def __init__(
        self,
        settings: ModelSettings | None = None,
        *,
        adapter: Adapter | str | os.PathLike[str] | None = None,
        loaded_backend: Backend | None = None,
        embedder: Embedder | None = None,
        **overrides: Any,
    ) -> None:
        self.settings: ModelSettings = (
            settings.with_overrides(**overrides) if settings is not None else ModelSettings.build(**overrides)
        )
        self.backend: Backend = loaded_backend or load_settings_backend(self.settings)
        chosen_embedder = embedder or LocalEmbedder(self.backend, self.settings.batch_size)
        self.pipeline = Pipeline(self.settings, self.backend, chosen_embedder)
        self.label_encoder = LabelEncoder(self.settings, chosen_embedder, self.backend.embedding_dim)
        if adapter is None and self.settings.adapter:
            adapter = self.settings.adapter
        if isinstance(adapter, (str, os.PathLike)):
            adapter = Adapter.load(adapter)
        self.adapter: Adapter | None = self.checked_adapter(adapter) if adapter is not None else None

    @property
    def model_id(self) -> str:
        return self.backend.model_id

    @property
    def sample_rate(self) -> int:
        return self.pipeline.sample_rate

    @property
    def dim(self) -> int:
        """The size of the embeddings (512 for the LAION checkpoints)."""
        return self.backend.embedding_dim

    def fingerprint(self) -> np.ndarray:
        """(4, D): this model's embeddings of three fixed probe sounds and a probe text
        (soundsift.core.fingerprint). Adapters and search indexes record it, and refuse a model whose
        fingerprint differs."""
        return self._fingerprint

    @cached_property
    def _fingerprint(self) -> np.ndarray:
        probes = [(signal, self.sample_rate) for signal in probe_signals(self.sample_rate)]
        sounds = embeddings_or_raise(self.pipeline.embed_all(probes))
        return np.vstack([sounds, self.label_encoder.embed_text([PROBE_TEXT])]).astype(np.float32)

    def checked_adapter(self, adapter: Adapter) -> Adapter:
        """The adapter, if its labels pass the rules every label set passes (LabelError otherwise,
        whoever wrote the file) and it was taught on a model with this model's embeddings (else
        AdapterMismatchError)."""
        check_taught_labels(
            adapter.labels,
            adapter.prompts,
            limits=self.label_encoder.limits,
            max_prompts=self.settings.max_synonyms * self.settings.max_templates,
            max_prompt_chars=self.settings.max_label_chars + self.settings.max_template_chars,
        )
        adapter.check_model(self.model_id, self.fingerprint())
        return adapter

    # ---- classification -----------------------------------------------------------------------

    def classify(
        self,
        audio: AudioInput,
        labels: LabelsInput | PreparedLabels | None = None,
        *,
        adapter: Adapter | None = None,
        templates: Sequence[str] | None = None,
        multi_label: bool = False,
        threshold: float | None = None,
        min_margin: float | None = None,
        label_thresholds: LabelThresholds = None,
        source: str | None = None,
    ) -> Classification:
        """Classify one input. Raises a SoundsiftError subclass on bad audio or labels, and
        ProcessingError when the model fails on it.

        ``labels`` are zero-shot labels; with an ``adapter`` (or the classifier's own) its taught
        labels are scored too, and ``labels`` may be left out."""
        options = ScoringOptions(_templates(templates), multi_label, threshold, min_margin, label_thresholds)
        prepared = self._ensure_prepared(labels, options, adapter)
        decision = self.pipeline.decision(options)
        item = self.pipeline.decode_input(audio, source=source)
        (outcome,) = self.pipeline.embed_inputs([item])
        scored = self.pipeline.scored(item, outcome, prepared, decision)
        if scored.error is not None:
            raise scored.error
        return cast(Classification, scored.result)

    def classify_batch(
        self,
        audios: Iterable[AudioInput],
        labels: LabelsInput | PreparedLabels | None = None,
        *,
        adapter: Adapter | None = None,
        templates: Sequence[str] | None = None,
        multi_label: bool = False,
        threshold: float | None = None,
        min_margin: float | None = None,
        label_thresholds: LabelThresholds = None,
        errors: Literal["raise", "return"] = "raise",
    ) -> list[Classification | FailedInput]:
        """Classify many inputs with one label set; audio is embedded ``batch_size`` at a time.

        ``errors="raise"`` stops at the first bad input; ``errors="return"`` puts a FailedInput in
        its place and carries on. Results are in input order.
        """
        if errors not in ("raise", "return"):
            raise ValueError("errors must be 'raise' or 'return'")
        results: list[Classification | FailedInput] = []
        for item in self.iter_results(
            audios,
            labels,
            adapter=adapter,
            templates=templates,
            multi_label=multi_label,
            threshold=threshold,
            min_margin=min_margin,
            label_thresholds=label_thresholds,
        ):
            if item.error is not None and errors == "raise":
                raise item.error
            results.append(item.result)
        return results

    def iter_results(
        self,
        audios: Iterable[AudioInput],
        labels: LabelsInput | PreparedLabels | None = None,
        *,
        adapter: Adapter | None = None,
        templates: Sequence[str] | None = None,
        multi_label: bool = False,
        threshold: float | None = None,
        min_margin: float | None = None,
        label_thresholds: LabelThresholds = None,
        batch_size: int | None = None,
        decode_workers: int = 0,
    ) -> Iterator[ScoredInput]:
        """Classification as a lazy stream in input order (`Pipeline.run`): inputs are decoded one
        batch at a time (with ``decode_workers`` threads decoding ahead when above 0), so memory does
        not grow with the number of inputs. A bad input becomes a FailedInput in its place; a clip
        that fails inside the model fails alone, never its batch."""
        options = ScoringOptions(_templates(templates), multi_label, threshold, min_margin, label_thresholds)
        prepared = self._ensure_prepared(labels, options, adapter)
        decision = self.pipeline.decision(options)
        return self.pipeline.run(audios, prepared, decision, batch_size=batch_size, decode_workers=decode_workers)

    # ---- labels and embeddings ----------------------------------------------------------------

    def prepare_labels(
        self,
        labels: LabelsInput | None = None,
        *,
        templates: Sequence[str] | None = None,
        multi_label: bool = False,
        adapter: Adapter | None = None,
    ) -> PreparedLabels:
        """Parse labels and compute class embeddings once, for reuse over many clips.

        With an ``adapter`` (or the classifier's own) its taught labels come first and ``labels``
        add zero-shot ones (optional)."""
        chosen_adapter = self.checked_adapter(adapter) if adapter is not None else self.adapter
        encoder = self.label_encoder
        if chosen_adapter is None:
            if not labels:
                raise LabelError("labels are needed (or an adapter with taught labels)")
            return encoder.zero_shot_labels(labels, templates=templates, multi_label=multi_label)
        extras = (
            encoder.zero_shot_labels(labels, templates=templates, multi_label=multi_label, min_labels=0)
            if labels
            else None
        )
        return chosen_adapter.prepared_labels(extras, multi_label=multi_label)

    def embed_audio(self, audios: AudioInput | Sequence[AudioInput]) -> np.ndarray:
        """(N, D) L2-normalised audio embeddings; one input gives a (1, D) array. The first bad
        input's error is raised."""
        items = [cast(AudioInput, audios)] if _is_single_audio(audios) else list(cast(Sequence[AudioInput], audios))
        return embeddings_or_raise(self.pipeline.embed_all(items))

    def embed_text(self, texts: str | Sequence[str]) -> np.ndarray:
        """(N, D) L2-normalised text embeddings of the texts exactly as given (no template)."""
        return self.label_encoder.embed_text([texts] if isinstance(texts, str) else list(texts))

    def _ensure_prepared(
        self, labels: LabelsInput | PreparedLabels | None, options: ScoringOptions, adapter: Adapter | None
    ) -> PreparedLabels:
        """The request's labels prepared with its options (or as already prepared), its per-label
        thresholds checked against them."""
        prepared = (
            labels
            if isinstance(labels, PreparedLabels)
            else self.prepare_labels(
                labels, templates=options.templates, multi_label=options.multi_label, adapter=adapter
            )
        )
        check_label_thresholds(prepared, options.label_thresholds)
        return prepared


def load_settings_backend(settings: ModelSettings, *, device: str | None = None) -> Backend:
    """The backend the settings name, on ``device`` (default: the settings' own)."""
    return load_backend(
        settings.backend,
        settings.model,
        device=device or settings.device,
        fp16=settings.fp16,
        quantize=settings.quantize,
        quantize_encoders=tuple(settings.quantize_encoders),
        threads=settings.threads,
        clips_per_call=settings.clips_per_call,
        calibration=AudioCalibration(settings.calibrate)
        if settings.backend == "onnx" and settings.quantize == "int8-static"
        else None,
    )


def _templates(templates: Sequence[str] | None) -> tuple[str, ...] | None:
    return tuple(templates) if templates else None


def _is_single_audio(audios: object) -> bool:
    return (
        isinstance(audios, (str, bytes, bytearray, np.ndarray))
        or is_array_input(audios)
        or hasattr(audios, "read")
        or hasattr(audios, "__fspath__")
    )
