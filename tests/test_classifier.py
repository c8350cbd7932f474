"""Classifier behaviour against direct computation with the model's own transformers classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import ClapFeatureExtractor, ClapModel, ClapProcessor

from soundsift import Classifier, FailedInput, LabelError
from soundsift.core.audio import load_audio
from soundsift.core.features import int16_roundtrip
from soundsift.core.pipeline import embeddings_or_raise
from soundsift.errors import AudioTooLongError, ModelLoadError


def embed_decoded(classifier, clips):
    """Decoded clips embedded in one model call."""
    pipeline = classifier.pipeline
    return embeddings_or_raise(pipeline.embedder.embed_audio([pipeline.featurize(clip) for clip in clips]))


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    model = ClapModel.from_pretrained(tiny_model_dir).eval()
    processor = ClapProcessor.from_pretrained(tiny_model_dir)
    return model, processor


def reference_text(reference, texts):
    model, processor = reference
    tokens = processor.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        output = model.get_text_features(**tokens)
    return torch.nn.functional.normalize(getattr(output, "pooler_output", output), dim=-1).numpy()


def reference_audio(reference, waveform_48k):
    """transformers' own extractor; is_longer pinned False (it would pick one at random)."""
    model, processor = reference
    extractor: ClapFeatureExtractor = processor.feature_extractor
    features = extractor([waveform_48k], sampling_rate=48_000, return_tensors="pt")["input_features"]
    with torch.no_grad():
        output = model.get_audio_features(input_features=features, is_longer=torch.tensor([[False]]))
    return torch.nn.functional.normalize(getattr(output, "pooler_output", output), dim=-1).numpy()[0]


def test_scores_match_direct_computation_with_synonyms_and_templates(classifier, reference, esc50_clips):
    templates = ["This is a sound of {}.", "a recording of {}"]
    labels = {"dog": ["dog barking", "dog bark"], "rain": ["rain"], "siren": ["siren", "ambulance siren"]}
    result = classifier.classify(esc50_clips[0], labels, templates=templates, threshold=0.0, min_margin=0.0)

    audio = reference_audio(reference, int16_roundtrip(load_audio(esc50_clips[0], 48_000).samples))
    class_vectors = []
    for phrases in labels.values():
        prompts = [t.replace("{}", p) for p in phrases for t in templates]
        mean = reference_text(reference, prompts).mean(axis=0)
        class_vectors.append(mean / np.linalg.norm(mean))
    similarities = np.stack(class_vectors) @ audio
    logits = reference[0].logit_scale_a.exp().item() * similarities
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()

    by_label = {s.label: s for s in result.scores}
    for name, similarity, score in zip(labels, similarities, expected):
        assert by_label[name].similarity == pytest.approx(similarity, abs=1e-5)
        assert by_label[name].score == pytest.approx(score, abs=1e-5)
    assert [s.score for s in result.scores] == sorted((s.score for s in result.scores), reverse=True)
    assert result.top_label == list(labels)[int(np.argmax(expected))]
    assert result.confidence == pytest.approx(expected.max(), abs=1e-5)
    ordered = np.sort(expected)[::-1]
    assert result.margin == pytest.approx(ordered[0] - ordered[1], abs=1e-5)
    assert result.duration_s == pytest.approx(5.0) and not result.silent
    assert result.model == classifier.model_id


def test_synonym_class_embedding_is_the_normalised_mean(classifier):
    prepared = classifier.prepare_labels("dog barking | dog bark, cat")
    prompts = classifier.embed_text(["This is a sound of dog barking.", "This is a sound of dog bark."])
    mean = prompts.mean(axis=0)
    np.testing.assert_allclose(prepared.embeddings[0], mean / np.linalg.norm(mean), atol=1e-6)
    assert np.linalg.norm(prepared.embeddings, axis=1) == pytest.approx([1.0, 1.0])


def test_same_clip_gets_the_same_embedding_alone_and_in_any_batch(classifier, esc50_clips):
    clip = load_audio(esc50_clips[0], 48_000)
    long_clip = load_audio((np.concatenate([load_audio(p, 48_000).samples for p in esc50_clips[:5]]), 48_000), 48_000)
    others = [load_audio(p, 48_000) for p in esc50_clips[1:4]]
    alone = embed_decoded(classifier, [clip])[0]
    with_short = embed_decoded(classifier, [*others, clip])[-1]
    with_long = embed_decoded(classifier, [long_clip, clip, *others])[1]
    again = embed_decoded(classifier, [clip])[0]
    np.testing.assert_allclose(with_short, alone, atol=1e-5)
    np.testing.assert_allclose(with_long, alone, atol=1e-5)
    np.testing.assert_array_equal(again, alone)


def test_long_clip_is_deterministic_and_uses_fusion(classifier, esc50_clips):
    samples = np.concatenate([load_audio(p, 48_000).samples for p in esc50_clips[:5]])
    _, is_longer = classifier.pipeline.featurizer([samples])
    assert is_longer.tolist() == [[True]]
    first = classifier.embed_audio((samples, 48_000))
    second = classifier.embed_audio((samples, 48_000))
    np.testing.assert_array_equal(first, second)


def test_embeddings_are_unit_vectors(classifier, esc50_clips):
    audio = classifier.embed_audio(esc50_clips[:3])
    text = classifier.embed_text(["dog", "rain"])
    assert audio.shape == (3, 16) and text.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(audio, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)
    assert classifier.embed_audio(esc50_clips[0]).shape == (1, 16)


def test_text_embeddings_are_cached(tiny_model_dir, esc50_clips):
    fresh = Classifier(model=str(tiny_model_dir), device="cpu")
    calls: list[list[str]] = []
    real = fresh.backend.embed_text

    def counting(texts):
        calls.append(list(texts))
        return real(texts)

    fresh.backend.embed_text = counting
    fresh.classify(esc50_clips[0], "dog, cat, rain")
    fresh.classify(esc50_clips[1], "rain, cat, dog")
    fresh.classify(esc50_clips[1], "rain, cat, dog | hound")
    assert calls == [
        ["This is a sound of dog.", "This is a sound of cat.", "This is a sound of rain."],
        ["This is a sound of hound."],
    ]


def test_batch_matches_single_calls_and_keeps_bad_files_in_place(classifier, esc50_clips, tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF nonsense")
    inputs = [esc50_clips[0], bad, esc50_clips[1], esc50_clips[2], esc50_clips[3], esc50_clips[4]]
    results = classifier.classify_batch(inputs, "dog, rain, siren", errors="return")
    assert isinstance(results[1], FailedInput) and results[1].error == "audio_decode_error"
    assert "broken.wav" in results[1].message
    for path, result in zip(inputs, results):
        if path == bad:
            continue
        single = classifier.classify(path, "dog, rain, siren")
        assert result.source == str(path)
        assert [s.label for s in result.scores] == [s.label for s in single.scores]
        np.testing.assert_allclose([s.score for s in result.scores], [s.score for s in single.scores], atol=1e-5)
    with pytest.raises(Exception, match="broken.wav"):
        classifier.classify_batch(inputs, "dog, rain, siren")


def test_uncertainty_threshold_and_margin(classifier, esc50_clips):
    sure = classifier.classify(esc50_clips[0], "dog, rain", threshold=0.0, min_margin=0.0)
    assert not sure.uncertain
    assert classifier.classify(esc50_clips[0], "dog, rain", threshold=0.999).uncertain
    assert classifier.classify(esc50_clips[0], "dog, rain", threshold=0.0, min_margin=sure.margin + 1e-3).uncertain


def test_silent_audio_is_classified_but_flagged(classifier):
    result = classifier.classify((np.zeros(48_000, dtype=np.float32), 48_000), "dog, rain", threshold=0.0)
    assert result.silent and result.uncertain and len(result.scores) == 2


def test_multi_label_detection_uses_per_label_similarity_thresholds(classifier, esc50_clips):
    base = classifier.classify(esc50_clips[0], "dog, rain, siren", multi_label=True, label_thresholds=-1.0)
    assert base.detected_labels == [s.label for s in base.scores]
    similarity = {s.label: s.similarity for s in base.scores}
    cut = sorted(similarity.values())[1]
    partial = classifier.classify(esc50_clips[0], "dog, rain, siren", multi_label=True, label_thresholds=cut)
    assert set(partial.detected_labels) == {k for k, v in similarity.items() if v >= cut}
    lowest = min(similarity, key=similarity.get)
    only_lowest = {name: (-1.0 if name == lowest else 1.0) for name in similarity}
    one = classifier.classify(esc50_clips[0], "dog, rain, siren", multi_label=True, label_thresholds=only_lowest)
    assert one.detected_labels == [lowest] and one.top_label == lowest
    none = classifier.classify(esc50_clips[0], "dog, rain, siren", multi_label=True, label_thresholds=1.0)
    assert none.top_label is None and none.detected_labels == [] and none.uncertain
    assert len(classifier.classify(esc50_clips[0], "smoke alarm", multi_label=True).scores) == 1
    with pytest.raises(LabelError, match="unknown labels: cat"):
        classifier.classify(esc50_clips[0], "dog, rain", multi_label=True, label_thresholds={"cat": 0.2})


def test_label_and_template_errors(classifier, esc50_clips):
    with pytest.raises(LabelError, match="at least 2"):
        classifier.classify(esc50_clips[0], "dog")
    with pytest.raises(LabelError, match="placeholder"):
        classifier.classify(esc50_clips[0], "dog, cat", templates=["no placeholder"])


def test_duration_limit_comes_from_settings(tiny_model_dir, esc50_clips):
    strict = Classifier(model=str(tiny_model_dir), device="cpu", max_duration_s=2.0)
    with pytest.raises(AudioTooLongError):
        strict.classify(esc50_clips[0], "dog, cat")


def test_environment_variables_configure_the_classifier(tiny_model_dir, monkeypatch):
    monkeypatch.setenv("SOUNDSIFT_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("SOUNDSIFT_MAX_LABELS", "3")
    monkeypatch.setenv("SOUNDSIFT_TEMPLATES", '["the sound of {}"]')
    configured = Classifier(device="cpu")
    assert configured.model_id == str(tiny_model_dir)
    assert configured.prepare_labels("a, b").templates == ("the sound of {}",)
    with pytest.raises(LabelError, match="limit is 3"):
        configured.prepare_labels("a, b, c, d")


def test_unfused_checkpoint(tiny_unfused_model_dir, esc50_clips):
    unfused = Classifier(model=str(tiny_unfused_model_dir), device="cpu")
    assert not unfused.backend.mel_settings.fusion
    long_audio = (np.concatenate([load_audio(p, 48_000).samples for p in esc50_clips[:3]]), 48_000)
    first = unfused.classify(long_audio, "dog, rain")
    assert first == unfused.classify(long_audio, "dog, rain")
    assert first.duration_s == pytest.approx(15.0)


def test_missing_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        Classifier(model=str(tmp_path / "no-model"), device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="config.json"):
        Classifier(model=str(tmp_path / "empty"), device="cpu")


def test_batch_accepts_a_generator_and_works_through_it_batch_by_batch(classifier, esc50_clips, monkeypatch):
    events = []
    real_load, real_embed = classifier.pipeline.load, classifier.pipeline.embedder.embed_audio

    def load(audio, **kwargs):
        events.append("decode")
        return real_load(audio, **kwargs)

    def embed(items):
        events.append(f"embed {len(items)}")
        return real_embed(items)

    monkeypatch.setattr(classifier.pipeline, "load", load)
    monkeypatch.setattr(classifier.pipeline.embedder, "embed_audio", embed)
    lazy = classifier.classify_batch((path for path in esc50_clips[:6]), "dog, rain")
    assert classifier.settings.batch_size == 4
    assert events == ["decode"] * 4 + ["embed 4"] + ["decode"] * 2 + ["embed 2"]
    monkeypatch.undo()
    assert lazy == classifier.classify_batch(list(esc50_clips[:6]), "dog, rain")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"device": "cuda"}, "no CUDA GPU is available"),
        ({"device": "cuda:3"}, "no CUDA GPU is available"),
        ({"device": "cpu", "fp16": True}, "fp16 needs a CUDA device"),
    ],
)
def test_gpu_settings_on_a_machine_without_one_are_clear_errors(tiny_model_dir, overrides, message):
    from soundsift.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=message):
        Classifier(model=str(tiny_model_dir), **overrides)


def test_server_gpu_replicas_need_gpus():
    from soundsift.core.settings import ModelSettings
    from soundsift.errors import ConfigurationError
    from soundsift.serving.service import replica_devices
    from soundsift.serving.settings import ServerSettings

    assert replica_devices(ModelSettings(), ServerSettings(gpus="none")) == ["cpu"]
    assert replica_devices(ModelSettings(device="cpu"), ServerSettings()) == ["cpu"]
    assert replica_devices(ModelSettings(), ServerSettings(gpus="0,1")) == ["cuda:0", "cuda:1"]
    with pytest.raises(ConfigurationError, match="no CUDA GPU"):
        replica_devices(ModelSettings(), ServerSettings(gpus="all"))
    with pytest.raises(ConfigurationError, match="gpus"):
        ServerSettings.build(gpus="some")


def test_a_model_failure_is_a_processing_error_in_classify_and_detect_too(classifier, esc50_clips, monkeypatch):
    """classify() and detect() go through the same isolating embedder as batch: the model raising
    inside is the input's ProcessingError, never the raw exception."""
    from soundsift import detect
    from soundsift.errors import ProcessingError

    def broken(features, is_longer):
        raise RuntimeError("simulated allocator failure")

    monkeypatch.setattr(classifier.backend, "embed_audio", broken)
    with pytest.raises(ProcessingError):
        classifier.classify(esc50_clips[0], "dog, rain")
    with pytest.raises(ProcessingError):
        detect(classifier, esc50_clips[0], "dog, rain")
    batch = classifier.classify_batch(esc50_clips[:2], "dog, rain", errors="return")
    assert [item.error for item in batch] == ["processing_failed", "processing_failed"]


def test_cpu_replicas_share_the_cores_and_oversubscription_is_refused():
    from soundsift.core.settings import ModelSettings
    from soundsift.errors import ConfigurationError
    from soundsift.serving.service import Replica, replica_layout
    from soundsift.serving.settings import ServerSettings

    onnx = ModelSettings(backend="onnx", device="cpu")
    assert replica_layout(onnx, ServerSettings(), cores=4) == [Replica("cpu", 4)]
    assert replica_layout(onnx, ServerSettings(replicas=2), cores=4) == [Replica("cpu", 2)] * 2
    assert (
        replica_layout(onnx.with_overrides(threads=1), ServerSettings(replicas=2), cores=2) == [Replica("cpu", 1)] * 2
    )
    with pytest.raises(
        ConfigurationError, match=r"2 CPU replicas x 2 threads = 4 intra-op threads on 2 physical cores"
    ):
        replica_layout(onnx.with_overrides(threads=2), ServerSettings(replicas=2), cores=2)
    with pytest.raises(ConfigurationError, match="3 CPU replicas x 1 threads"):
        replica_layout(onnx, ServerSettings(replicas=3), cores=2)
    forced = ServerSettings(replicas=2, oversubscribe=True)
    assert replica_layout(onnx.with_overrides(threads=2), forced, cores=2) == [Replica("cpu", 2)] * 2
    with pytest.raises(ConfigurationError, match="one process-wide thread pool"):
        replica_layout(ModelSettings(device="cpu"), ServerSettings(replicas=2), cores=2)
    assert replica_layout(ModelSettings(), ServerSettings(gpus="0,1", replicas=2), cores=2) == [
        Replica("cuda:0", None),
        Replica("cuda:0", None),
        Replica("cuda:1", None),
        Replica("cuda:1", None),
    ]
    with pytest.raises(ConfigurationError, match="replicas"):
        ServerSettings.build(replicas=0)
