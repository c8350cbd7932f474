"""Teaching labels from a few clips (soundsift.Adapter) with the tiny random CLAP: synthetic sounds
that zero-shot cannot name are told apart after teaching; the adapter file round-trips exactly and
is refused when it does not fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from soundsift import Adapter, Classifier
from soundsift.errors import AdapterError, AdapterMismatchError, ExamplesError, LabelError
from tests.data.audio import write_soundfile

pytestmark = pytest.mark.slow  # each fit embeds real clips with the model

RATE = 48_000
SOUNDS = ("hum", "hiss", "clicks")


def synthetic(kind: str, variant: int, seconds: float = 1.5) -> np.ndarray:
    """Three families of sound a random model separates acoustically: a low tone, high-passed
    noise and a click train, each varied a little per example."""
    rng = np.random.default_rng(1000 * SOUNDS.index(kind) + variant)
    time = np.arange(int(seconds * RATE)) / RATE
    if kind == "hum":
        return (0.4 * np.sin(2 * np.pi * (90 + 4 * variant) * time)).astype(np.float32)
    if kind == "hiss":
        noise = rng.standard_normal(len(time))
        return (0.2 * np.diff(noise, prepend=0.0)).astype(np.float32)
    clicks = np.zeros(len(time))
    clicks[:: int(RATE / (6 + variant / 2))] = 0.9
    return clicks.astype(np.float32)


def write_examples(folder: Path, shots: int, *, start: int = 0) -> Path:
    for kind in SOUNDS:
        for variant in range(start, start + shots):
            write_soundfile(folder / kind / f"{kind}-{variant}.wav", synthetic(kind, variant), RATE)
    return folder


@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> Path:
    return write_examples(tmp_path_factory.mktemp("examples"), shots=4)


@pytest.fixture(scope="module")
def adapter(classifier, examples) -> Adapter:
    return Adapter.fit(classifier, examples)


def held_out(kind: str) -> list[tuple[np.ndarray, int]]:
    """Examples of each family that teaching never saw (variants 4 to 7; teaching uses 0 to 3)."""
    return [(synthetic(kind, variant), RATE) for variant in range(4, 8)]


def accuracy(classifier: Classifier, adapter: Adapter | None) -> float:
    labels = None if adapter is not None else list(SOUNDS)
    hits = 0
    for kind in SOUNDS:
        for result in classifier.classify_batch(held_out(kind), labels, adapter=adapter):
            hits += result.top_label == kind  # type: ignore[union-attr]
    return hits / (4 * len(SOUNDS))


def test_teaching_separates_sounds_zero_shot_cannot_name(classifier, adapter):
    taught = accuracy(classifier, adapter)
    assert taught == 1.0, taught
    assert accuracy(classifier, None) < taught
    assert adapter.labels == SOUNDS or set(adapter.labels) == set(SOUNDS)
    assert adapter.examples == {"clicks": 4, "hiss": 4, "hum": 4}
    assert adapter.cross_validated and adapter.cross_validation


@pytest.mark.parametrize("method", ["prototype", "tip", "probe"])
def test_every_method_learns_the_sounds(classifier, examples, adapter, method):
    adapter = Adapter.fit(classifier, examples, method=method, reuse=adapter)
    assert adapter.method == method
    assert accuracy(classifier, adapter) >= 0.9


def test_a_result_says_which_labels_were_taught_and_mixes_with_zero_shot(classifier, adapter):
    result = classifier.classify(held_out("hum")[0], "glass breaking, smoke alarm", adapter=adapter)
    assert {score.label for score in result.scores} == {*SOUNDS, "glass breaking", "smoke alarm"}
    assert {score.label for score in result.scores if score.taught} == set(SOUNDS)
    assert result.adapter is not None
    with pytest.raises(LabelError, match="taught"):
        classifier.classify(held_out("hum")[0], "hum, siren", adapter=adapter)


def test_a_sound_unlike_every_taught_label_is_none_of_these(classifier, examples, adapter, tmp_path):
    negatives = tmp_path / "negatives"
    for variant in range(6):
        chirp = np.sin(2 * np.pi * (2000 + 500 * variant) * np.arange(RATE) / RATE) * 0.5
        write_soundfile(negatives / f"chirp-{variant}.wav", chirp.astype(np.float32), RATE)
    adapter = Adapter.fit(classifier, examples, negatives=negatives, reuse=adapter)
    assert len(adapter.negatives) == 6
    stranger = (np.sin(2 * np.pi * 3200 * np.arange(RATE) / RATE) * 0.5).astype(np.float32)
    result = classifier.classify((stranger, RATE), adapter=adapter)
    assert result.none_of_these and result.uncertain
    known = classifier.classify(held_out("clicks")[0], adapter=adapter)
    assert known.top_label == "clicks" and not known.none_of_these


def test_the_file_round_trips_bit_exactly(classifier, adapter, tmp_path):
    path = adapter.save(tmp_path / "sounds.adapter")
    loaded = Adapter.load(path)
    assert loaded.to_bytes() == adapter.to_bytes() == path.read_bytes()
    for field in ("weights", "thresholds", "support", "fingerprint"):
        assert np.array_equal(getattr(loaded, field), getattr(adapter, field))
    clip = held_out("hiss")[1]
    assert classifier.classify(clip, adapter=loaded).scores == classifier.classify(clip, adapter=adapter).scores
    assert b"pickle" not in path.read_bytes() and path.read_bytes()[8:9] == b"{"


def test_the_classifier_setting_loads_an_adapter_for_every_request(tiny_model_dir, adapter, tmp_path):
    path = adapter.save(tmp_path / "sounds.adapter")
    with_adapter = Classifier(model=str(tiny_model_dir), device="cpu", adapter=str(path))
    assert with_adapter.classify(held_out("clicks")[0]).top_label == "clicks"


def test_another_model_is_refused(tiny_unfused_model_dir, adapter, tmp_path):
    path = adapter.save(tmp_path / "sounds.adapter")
    other = Classifier(model=str(tiny_unfused_model_dir), device="cpu")
    with pytest.raises(AdapterMismatchError, match="embeddings differ"):
        other.classify(held_out("hum")[0], adapter=Adapter.load(path))
    with pytest.raises(AdapterMismatchError):
        Classifier(model=str(tiny_unfused_model_dir), device="cpu", adapter=str(path))


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],  # truncated
        lambda data: b"",
        lambda data: b"\xff" * 8 + data[8:],  # header length garbage
        lambda data: data.replace(b'\\"method\\"', b'\\"metxod\\"', 1),  # metadata without a method
        lambda data: b"RIFF" + data[4:],
    ],
    ids=["truncated", "empty", "bad-header-length", "missing-field", "not-an-adapter"],
)
def test_a_damaged_file_is_a_typed_error(adapter, tmp_path, damage):
    path = tmp_path / "damaged.adapter"
    path.write_bytes(damage(adapter.to_bytes()))
    with pytest.raises(AdapterError):
        Adapter.load(path)


def test_a_missing_adapter_file_is_a_typed_error(tmp_path):
    with pytest.raises(AdapterError, match="cannot read"):
        Adapter.load(tmp_path / "nothing.adapter")


def test_a_label_without_usable_clips_is_reported(classifier, tmp_path):
    folder = write_examples(tmp_path / "examples", shots=2)
    broken = folder / "broken"
    broken.mkdir()
    (broken / "noise.wav").write_bytes(b"RIFF not really a wave file")
    with pytest.raises(ExamplesError, match="broken"):
        Adapter.fit(classifier, folder)


def test_bad_clips_are_skipped_and_listed(classifier, tmp_path):
    folder = write_examples(tmp_path / "examples", shots=2)
    (folder / "hum" / "broken.wav").write_bytes(b"RIFF not really a wave file")
    adapter = Adapter.fit(classifier, folder)
    assert adapter.examples["hum"] == 2
    assert [item.error for item in adapter.skipped] == ["audio_decode_error"]


def test_a_csv_list_and_one_shot_work(classifier, tmp_path):
    folder = write_examples(tmp_path / "clips", shots=1)
    listing = tmp_path / "examples.csv"
    rows = ["path,label"] + [f"clips/{kind}/{kind}-0.wav,{kind}" for kind in SOUNDS]
    listing.write_text("\n".join(rows) + "\n", encoding="utf-8")
    adapter = Adapter.fit(classifier, listing)
    assert adapter.method == "tip" and not adapter.cross_validated
    assert adapter.examples == {kind: 1 for kind in SOUNDS}
    assert folder.exists()


def test_reteaching_with_one_more_clip_embeds_only_that_clip(classifier, tmp_path, monkeypatch):
    folder = write_examples(tmp_path / "examples", shots=3)
    first = Adapter.fit(classifier, folder)
    write_soundfile(folder / "hum" / "hum-new.wav", synthetic("hum", 3), RATE)
    embedded: list[int] = []
    original = classifier.pipeline.embed_all
    monkeypatch.setattr(classifier.pipeline, "embed_all", lambda clips: embedded.append(len(clips)) or original(clips))
    second = Adapter.fit(classifier, folder, reuse=first)
    assert embedded == [1]
    assert second.examples["hum"] == 4


@pytest.mark.parametrize(
    ("examples", "message"),
    [
        ({}, "no labels"),
        ({"hum": []}, "no audio clips"),
        ("/nonexistent/folder", "no such folder"),
    ],
)
def test_unusable_examples_are_refused(classifier, examples, message):
    with pytest.raises(ExamplesError, match=message):
        Adapter.fit(classifier, examples)


def test_labels_in_any_language(classifier):
    clips = {
        "嗡嗡声": [(synthetic("hum", v), RATE) for v in range(2)],
        "咔哒声": [(synthetic("clicks", v), RATE) for v in range(2)],
    }
    adapter = Adapter.fit(classifier, clips)
    assert classifier.classify(held_out("clicks")[0], adapter=adapter).top_label == "咔哒声"
