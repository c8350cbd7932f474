"""The onnx backend: export, parity with torch (fp32 and int8), on-first-use caching, no torch at serve time."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from transformers import ClapProcessor

from soundsift import Classifier
from soundsift.backends.onnx import format as onnx_format
from soundsift.backends.onnx.export import export
from soundsift.cli.main import main
from soundsift.core.audio import load_audio

pytestmark = pytest.mark.slow  # ONNX exports


@pytest.fixture(scope="module")
def exported(tiny_model_dir, tmp_path_factory):
    return export(str(tiny_model_dir), tmp_path_factory.mktemp("onnx-fp32"))


@pytest.fixture(scope="module")
def exported_int8(tiny_model_dir, tmp_path_factory):
    return export(str(tiny_model_dir), tmp_path_factory.mktemp("onnx-int8"), quantize="int8")


@pytest.fixture(scope="module")
def onnx_classifier(exported):
    return Classifier(model=str(exported), backend="onnx", device="cpu", batch_size=4)


@pytest.fixture(scope="module")
def long_clip(esc50_clips):
    return np.concatenate([load_audio(path, 48_000).samples for path in esc50_clips[:4]])


TEXTS = ["This is a sound of dog.", "rain", "狗叫声", "a car horn honking again and again " * 8]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_manifest_describes_the_export(exported, tiny_model_dir):
    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["source_model"] == str(tiny_model_dir)
    assert manifest["opset"] == 17 and manifest["quantization"] == {"audio": "none", "text": "none"}
    assert manifest["mel_settings"]["fusion"] is True
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((exported / name).read_bytes()).hexdigest() == digest


def test_fp32_audio_parity_short_long_and_mixed_batches(onnx_classifier, classifier, esc50_clips, long_clip):
    short = [load_audio(path, 48_000) for path in esc50_clips[:3]]
    long = load_audio((long_clip, 48_000), 48_000)
    for clips in (short, [long], [short[0], long, short[1]]):
        features, is_longer = classifier.pipeline.featurizer([clip.samples for clip in clips])
        expected = classifier.backend.embed_audio(features, is_longer)
        assert cosines(onnx_classifier.backend.embed_audio(features, is_longer), expected).min() >= 0.9999


@pytest.mark.parametrize("fused", [True, False])
def test_export_graph_computes_what_transformers_computes(fused, tiny_model_dir, tiny_unfused_model_dir):
    """soundsift.backends.onnx.htsat_graph (window-order tokens, merged QKV, constant bias + shift mask) against
    transformers' own encoder, with shifted windows, patch merging and both is_longer branches."""
    import torch
    from transformers import ClapModel

    from soundsift.backends.onnx.htsat_graph import AudioGraph

    clap = ClapModel.from_pretrained(tiny_model_dir if fused else tiny_unfused_model_dir).eval()
    assert any(layer.shift_size for stage in clap.audio_model.audio_encoder.layers for layer in stage.blocks)
    torch.manual_seed(0)
    features = torch.randn(3, 4 if fused else 1, 1024, 64) * 10 - 40
    is_longer = torch.tensor([[True], [False], [True]])
    with torch.no_grad():
        expected = clap.get_audio_features(input_features=features, is_longer=is_longer).pooler_output
        ours = AudioGraph(clap).eval()(features, is_longer)
    assert torch.allclose(ours, torch.nn.functional.normalize(expected, dim=-1), atol=1e-5)


def test_export_refuses_a_grid_that_does_not_split_into_windows(tiny_model_dir, tmp_path):
    from transformers import ClapModel

    from soundsift.errors import ConfigurationError

    clap = ClapModel.from_pretrained(tiny_model_dir)
    clap.config.audio_config.window_size = 6
    broken = ClapModel(clap.config)
    broken.save_pretrained(tmp_path / "model")
    ClapProcessor.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "model")
    with pytest.raises(ConfigurationError, match="whole attention windows"):
        export(str(tmp_path / "model"), tmp_path / "onnx")


def test_fp32_text_parity_with_padding_and_truncation(onnx_classifier, classifier):
    assert cosines(onnx_classifier.embed_text(TEXTS), classifier.embed_text(TEXTS)).min() >= 0.9999


def test_tokens_match_transformers(exported, tiny_model_dir):
    from tokenizers import Tokenizer

    reference = ClapProcessor.from_pretrained(tiny_model_dir).tokenizer
    ours = Tokenizer.from_file(str(exported / "tokenizer.json"))
    ours.enable_truncation(77)
    for text in TEXTS:
        assert ours.encode(text).ids == reference(text, truncation=True, max_length=77)["input_ids"]


def test_same_top1_on_every_test_clip(onnx_classifier, classifier, esc50_clips, long_clip):
    inputs = [*esc50_clips, (long_clip, 48_000)]
    labels = "dog, rain, siren, crying baby, clock tick"
    for ours, theirs in zip(onnx_classifier.classify_batch(inputs, labels), classifier.classify_batch(inputs, labels)):
        assert ours.top_label == theirs.top_label
        assert ours.confidence == pytest.approx(theirs.confidence, abs=1e-4)


def test_int8_stays_close(exported_int8, classifier, esc50_clips, long_clip):
    quantized = Classifier(model=str(exported_int8), backend="onnx", device="cpu")
    assert json.loads((exported_int8 / "manifest.json").read_text())["quantization"]["audio"] == "int8"
    inputs = [*esc50_clips[:4], (long_clip, 48_000)]
    assert cosines(quantized.embed_audio(inputs), classifier.embed_audio(inputs)).min() >= 0.99
    assert cosines(quantized.embed_text(TEXTS), classifier.embed_text(TEXTS)).min() >= 0.99


def test_checkpoint_is_exported_on_first_use_and_reused(tiny_model_dir, tmp_path, capfd, esc50_clips, monkeypatch):
    os.environ["SOUNDSIFT_CACHE"] = str(tmp_path / "cache")
    try:
        first = Classifier(model=str(tiny_model_dir), backend="onnx", device="cpu")
        assert "exporting" in capfd.readouterr().err
        (folder,) = (tmp_path / "cache" / "onnx").iterdir()
        stamp = (folder / "audio.onnx").stat().st_mtime_ns
        second = Classifier(model=str(tiny_model_dir), backend="onnx", device="cpu")
        assert "exporting" not in capfd.readouterr().err
        assert (folder / "audio.onnx").stat().st_mtime_ns == stamp
        Classifier(model=str(tiny_model_dir), backend="onnx", device="cpu", quantize="int8")
        assert len(list((tmp_path / "cache" / "onnx").iterdir())) == 2
        assert first.classify(esc50_clips[0], "a, b") == second.classify(esc50_clips[0], "a, b")
        assert onnx_format.cache_folder(str(tiny_model_dir), "none", ("audio", "text")) == folder
        monkeypatch.setattr(onnx_format, "FORMAT", "soundsift-onnx/older")
        assert onnx_format.cache_folder(str(tiny_model_dir), "none", ("audio", "text")) != folder
    finally:
        del os.environ["SOUNDSIFT_CACHE"]


def test_serving_path_never_imports_torch(exported, esc50_clips):
    code = (
        "import sys, soundsift\n"
        f"c = soundsift.Classifier(model={str(exported)!r}, backend='onnx', device='cpu')\n"
        f"r = c.classify({str(esc50_clips[0])!r}, 'dog, rain')\n"
        "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "print(r.top_label, heavy)\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_export_and_classify_from_the_command_line(tiny_model_dir, tmp_path, capsys, esc50_clips):
    out = tmp_path / "cli-export"
    assert (
        main(
            [
                "export",
                "--model",
                str(tiny_model_dir),
                "--out",
                str(out),
                "--quantize",
                "int8",
                "--quantize-encoders",
                "text",
            ]
        )
        == 0
    )
    assert json.loads((out / "manifest.json").read_text())["quantization"] == {"audio": "none", "text": "int8"}
    capsys.readouterr()
    assert (
        main(
            [
                "classify",
                str(esc50_clips[0]),
                "--labels",
                "dog, rain",
                "--backend",
                "onnx",
                "--model",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)[0]["top_label"] in ("dog", "rain")
    assert main(["export", "--model", str(tiny_model_dir), "--out", str(out), "--quantize-encoders", "video"]) == 2


def test_fp16_export_stays_close_and_is_refused_on_cpu(tiny_model_dir, tmp_path, classifier, esc50_clips, long_clip):
    from soundsift import ConfigurationError

    half = export(str(tiny_model_dir), tmp_path / "fp16", fp16=True)
    manifest = json.loads((half / "manifest.json").read_text())
    assert manifest["float16"] == {"audio": True, "text": True}
    loaded = Classifier(model=str(half), backend="onnx", device="cpu")
    inputs = [esc50_clips[0], (long_clip, 48_000)]
    assert cosines(loaded.embed_audio(inputs), classifier.embed_audio(inputs)).min() >= 0.999
    assert cosines(loaded.embed_text(TEXTS), classifier.embed_text(TEXTS)).min() >= 0.999
    with pytest.raises(ConfigurationError, match="CUDA execution provider"):
        Classifier(model=str(tiny_model_dir), backend="onnx", device="cpu", fp16=True)
    mixed = export(str(tiny_model_dir), tmp_path / "mixed", quantize="int8", quantize_encoders=("audio",), fp16=True)
    assert json.loads((mixed / "manifest.json").read_text())["float16"] == {"audio": False, "text": True}
