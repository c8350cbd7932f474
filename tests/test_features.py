"""The numpy feature extractor against transformers' ClapFeatureExtractor."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import ClapFeatureExtractor

from soundsift.backends.mel import MelSettings
from soundsift.core.features import MelFeaturizer, bilinear_resize_rows
from tests.data.shared import CLAP_CONFIG, shared_path


@pytest.fixture(scope="module")
def real_config() -> dict:
    """The real checkpoint's feature extractor settings."""
    return json.loads((shared_path(CLAP_CONFIG) / "preprocessor_config.json").read_text())


@pytest.fixture(scope="module")
def reference(real_config: dict) -> ClapFeatureExtractor:
    return ClapFeatureExtractor(**real_config)


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(seconds * 48_000)) * 0.1).astype(np.float32)


# 10.004 s is longer than the window but within one hop of it: a fused model treats it as a
# full window. Unfused models crop such clips at random in transformers (see the centre-crop test).
@pytest.mark.parametrize(
    ("fusion", "seconds"),
    [(True, 0.3), (True, 3.0), (True, 10.0), (True, 10.004), (False, 0.3), (False, 3.0), (False, 10.0)],
)
def test_short_clips_match_transformers(reference, fusion, seconds, real_config):
    waveform = noise(seconds)
    ours, is_longer = MelFeaturizer(MelSettings.from_extractor_config(real_config, fusion=fusion))([waveform])
    theirs = reference(
        [waveform], sampling_rate=48_000, truncation="fusion" if fusion else "rand_trunc", return_tensors="np"
    )["input_features"]
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    assert not is_longer.any()


@pytest.mark.parametrize("padding", ["repeat", "repeatpad", "pad"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_padding_mode_matches_transformers(reference, padding, dtype, real_config):
    waveform = noise(0.7, seed=3).astype(dtype)
    settings = MelSettings.from_extractor_config({**real_config, "padding": padding}, fusion=True)
    ours, _ = MelFeaturizer(settings)([waveform])
    theirs = reference([waveform], sampling_rate=48_000, truncation="fusion", padding=padding, return_tensors="np")[
        "input_features"
    ]
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_long_fused_clip_uses_fixed_crops_and_transformers_global_view(reference, real_config):
    waveform = noise(25.0)
    featurizer = MelFeaturizer(MelSettings.from_extractor_config(real_config, fusion=True))
    ours, is_longer = featurizer([waveform])
    mel = reference._np_extract_fbank_features(waveform.astype(np.float64), reference.mel_filters)
    chunk = 1001
    last = mel.shape[0] - chunk
    shrunk = torch.nn.functional.interpolate(
        torch.tensor(mel[None, None]), size=[chunk, 64], mode="bilinear", align_corners=False
    )[0, 0].numpy()
    np.testing.assert_allclose(ours[0, 0], shrunk, atol=1e-4)
    np.testing.assert_allclose(ours[0, 1], mel[:chunk], atol=1e-4)
    np.testing.assert_allclose(ours[0, 2], mel[last // 2 : last // 2 + chunk], atol=1e-4)
    np.testing.assert_allclose(ours[0, 3], mel[last:], atol=1e-4)
    assert is_longer.tolist() == [[True]]


def test_long_unfused_clip_is_centre_cropped(reference, real_config):
    waveform = noise(14.0)
    ours, is_longer = MelFeaturizer(MelSettings.from_extractor_config(real_config, fusion=False))([waveform])
    start = (len(waveform) - 480_000) // 2
    theirs = reference._np_extract_fbank_features(
        waveform[start : start + 480_000].astype(np.float64), reference.mel_filters_slaney
    )
    np.testing.assert_allclose(ours[0, 0], theirs, atol=1e-4)
    assert is_longer.tolist() == [[True]]


def test_features_never_change_between_calls(real_config):
    featurizer = MelFeaturizer(MelSettings.from_extractor_config(real_config, fusion=True))
    clips = [noise(3.0), noise(31.0, seed=1)]
    first, _ = featurizer(clips)
    second, _ = featurizer(list(reversed(clips)))
    np.testing.assert_array_equal(first, second[::-1])


def test_bilinear_resize_matches_torch():
    matrix = np.random.default_rng(2).standard_normal((2345, 64)).astype(np.float32)
    expected = torch.nn.functional.interpolate(
        torch.tensor(matrix[None, None]), size=[1001, 64], mode="bilinear", align_corners=False
    )[0, 0].numpy()
    np.testing.assert_allclose(bilinear_resize_rows(matrix, 1001), expected, atol=1e-4)


def test_samples_go_through_16_bit_integers_as_laion_clap_feeds_them():
    from soundsift.core.features import int16_roundtrip

    samples = np.array([1.44, -2.0, 0.5, 1e-6, -1e-6, 0.25], dtype=np.float32)
    # laion_clap's float32_to_int16 / int16_to_float32 (training/data.py), written out
    reference = (np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16)
    np.testing.assert_array_equal(int16_roundtrip(samples), (reference / 32767.0).astype(np.float32))
    assert int16_roundtrip(samples)[:2].tolist() == [1.0, -1.0] and int16_roundtrip(samples)[3:5].tolist() == [0, 0]


def test_the_pipeline_clips_peaks_and_silences_what_is_below_the_int16_floor(tiny_model_dir):
    from soundsift import Classifier
    from soundsift.core.features import int16_roundtrip

    reference = Classifier(model=str(tiny_model_dir), device="cpu").pipeline
    plain = Classifier(model=str(tiny_model_dir), device="cpu", reference_int16=False).pipeline
    rate = reference.sample_rate
    time = np.arange(rate) / rate
    loud = (1.44 * np.sin(2 * np.pi * 440 * time)).astype(np.float32)  # peaks above 1, as resampled clips do
    quiet = (3e-5 * np.sin(2 * np.pi * 440 * time)).astype(np.float32)  # below one int16 step
    np.testing.assert_array_equal(
        reference.features_of(loud).features, plain.features_of(int16_roundtrip(loud)).features
    )
    np.testing.assert_array_equal(
        reference.features_of(quiet).features, plain.features_of(np.zeros_like(quiet)).features
    )
    assert not np.array_equal(plain.features_of(loud).features, reference.features_of(loud).features)
