"""The onnx backend: export, parity with torch (fp32 and int8), on-first-use caching, no torch at serve time."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from transformers import ClapProcessor

from soundsift import Classifier
from soundsift.backends.onnx import format as onnx_format
from soundsift.backends.onnx.export import export
from soundsift.cli.main import main
from soundsift.core.audio import load_audio
from tests.data.tiny_clap import randomize_batch_norms

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


def fusion_nodes_run(graph: Path, is_longer: list[bool], tmp_path: Path) -> int:
    """How many nodes of the fusion branch (the crops' convolution, the fusion block) one run executes,
    from ONNX Runtime's profile."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp_path / "profile")
    session = onnxruntime.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    features = np.random.default_rng(0).standard_normal((len(is_longer), *session.get_inputs()[0].shape[1:]))
    session.run(None, {"input_features": features.astype(np.float32), "is_longer": np.array([is_longer]).T})
    events = json.loads(Path(session.end_profiling()).read_text())
    return sum("mel_conv2d" in event["name"] or "fusion_model" in event["name"] for event in events)


@pytest.mark.parametrize("quantized", [False, True])
def test_a_batch_of_short_clips_skips_the_fusion_branch(quantized, exported, exported_int8, tmp_path):
    graph = (exported_int8 if quantized else exported) / "audio.onnx"
    assert fusion_nodes_run(graph, [False, False], tmp_path) == 0
    assert fusion_nodes_run(graph, [False, True], tmp_path) > 0


def test_a_short_clip_reads_only_its_first_mel_channel(onnx_classifier, classifier, esc50_clips):
    """What lets the onnx backend stretch one channel of a short clip instead of four: the crops in
    channels 1-3 change nothing for a clip that is not longer, in either backend."""
    features, is_longer = classifier.pipeline.featurizer([load_audio(esc50_clips[0], 48_000).samples])
    assert not is_longer.any() and features.shape[1] == 4
    scrambled = features.copy()
    scrambled[:, 1:] = np.random.default_rng(0).normal(-40, 10, scrambled[:, 1:].shape)
    for backend in (onnx_classifier.backend, classifier.backend):
        np.testing.assert_allclose(backend.embed_audio(scrambled, is_longer), backend.embed_audio(features, is_longer))


def test_a_batch_runs_in_parts_on_a_cpu_and_answers_the_same(onnx_classifier, exported, esc50_clips, long_clip):
    clips = [load_audio(path, 48_000).samples for path in esc50_clips[:3]] + [long_clip]
    features, is_longer = onnx_classifier.pipeline.featurizer(clips)
    assert onnx_classifier.backend.clips_per_call == 1
    whole = Classifier(model=str(exported), backend="onnx", device="cpu", clips_per_call=64).backend
    assert whole.clips_per_call == 64
    one_by_one = onnx_classifier.backend.embed_audio(features, is_longer)
    assert one_by_one.shape == (4, onnx_classifier.dim)
    assert cosines(one_by_one, whole.embed_audio(features, is_longer)).min() >= 0.99999
    assert onnx_classifier.backend.embed_audio(features[:0], is_longer[:0]).shape == (0, onnx_classifier.dim)
    texts = [f"sound number {index}" for index in range(40)]  # three runs of at most 16 texts
    assert onnx_classifier.backend.texts_per_call == 16
    whole.texts_per_call = None  # all 40 in one run, as on a GPU
    assert cosines(onnx_classifier.backend.embed_text(texts), whole.embed_text(texts)).min() >= 0.99999


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
    with torch.no_grad():
        randomize_batch_norms(clap)  # the mel norm is folded into a multiply-add: with real statistics
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


@pytest.fixture(scope="module")
def calibration_folder(esc50_clips, tmp_path_factory):
    """Five real clips (four to calibrate on, one held out) of which none is among the clips the
    held-out checks below classify."""
    folder = tmp_path_factory.mktemp("calibration")
    for path in esc50_clips[3:8]:
        (folder / path.name).symlink_to(path)
    return folder


@pytest.fixture(scope="module")
def exported_static(tiny_model_dir, calibration_folder, tmp_path_factory):
    from soundsift.core.calibration import AudioCalibration

    return export(
        str(tiny_model_dir),
        tmp_path_factory.mktemp("onnx-int8-static"),
        quantize="int8-static",
        calibration=AudioCalibration(str(calibration_folder)),
        keep_float=2,
    )


def test_static_int8_records_its_calibration(exported_static, calibration_folder):
    import onnx

    manifest = json.loads((exported_static / "manifest.json").read_text())
    assert manifest["quantization"] == {"audio": "int8-static", "text": "int8"}
    record = manifest["calibration"]
    assert record["method"] == "minmax" and record["source"] == str(calibration_folder.resolve())
    assert record["count"] == 4 and record["held_out_count"] == 1
    for entry in record["files"]:
        assert hashlib.sha256((calibration_folder / entry["file"]).read_bytes()).hexdigest() == entry["sha256"]
    assert [entry["held_out"] for entry in record["files"]] == [False, False, False, False, True]
    audio = record["audio_cosine_to_fp32"]
    assert audio["measured_on"] == "held-out clips" and audio["clips"] == 1 and 0.98 <= audio["min"] <= 1.0
    assert 0.99 <= record["text_cosine_to_fp32"]["min"] <= 1.0
    kept = record["nodes_kept_float"]
    assert any(name.endswith("/Conv") for name in kept["by_rule"]) and len(kept["by_measurement"]) == 2
    assert any("mel_conv2d" in name for name in kept["by_rule"])  # inside the fusion branch's If, listed too
    graph = onnx.load(str(exported_static / "audio.onnx")).graph
    quantized = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= quantized
    kept_names = set(kept["by_rule"]) | {node for entry in kept["by_measurement"] for node in entry["nodes"]}
    float_gemms = [node.name for node in graph.node if node.op_type == "Gemm" and node.name in kept_names]
    assert float_gemms  # the projection after pooling


def test_static_int8_classifies_close_to_float_on_held_out_clips(exported_static, classifier, esc50_clips, long_clip):
    quantized = Classifier(model=str(exported_static), backend="onnx", device="cpu")
    held_out = [*esc50_clips[:3], (long_clip, 48_000)]
    assert cosines(quantized.embed_audio(held_out), classifier.embed_audio(held_out)).min() >= 0.98
    assert cosines(quantized.embed_text(TEXTS), classifier.embed_text(TEXTS)).min() >= 0.99
    result = quantized.classify(esc50_clips[0], "dog, rain, siren")
    assert result.top_label in ("dog", "rain", "siren")


def test_static_int8_on_first_use_calibrates_on_the_bundled_examples(run, tmp_path, monkeypatch, esc50_clips):
    """The entry points that take --quantize (here classify) export int8-static on first use."""
    from soundsift.errors import ConfigurationError

    monkeypatch.setenv("SOUNDSIFT_CACHE", str(tmp_path / "cache"))
    code, out, err = run(
        "classify",
        str(esc50_clips[0]),
        "--labels",
        "dog, rain",
        "--backend",
        "onnx",
        "--quantize",
        "int8-static",
        "--json",
    )
    assert code == 0, err
    assert json.loads(out)[0]["top_label"] in ("dog", "rain")
    (folder,) = (tmp_path / "cache" / "onnx").iterdir()
    record = json.loads((folder / "manifest.json").read_text())["calibration"]
    assert record["source"] == "bundled examples" and record["count"] == 4
    assert record["nodes_kept_float"]["by_measurement"] == []  # off by default
    code, _, err = run(
        "classify", str(esc50_clips[0]), "--labels", "dog, rain", "--backend", "onnx", "--quantize", "int8-static"
    )
    assert code == 0 and "exporting" not in err  # reused: the cache key holds the calibration files' fingerprint
    code, _, err = run(
        "classify",
        str(esc50_clips[0]),
        "--labels",
        "a, b",
        "--backend",
        "onnx",
        "--quantize",
        "int8-static",
        "--calibrate",
        str(tmp_path / "missing"),
    )
    assert code == ConfigurationError.exit_code and "calibration folder" in err


def test_calibration_needs_audio(tmp_path, run, tiny_model_dir):
    from soundsift.core.calibration import AudioCalibration
    from soundsift.errors import ConfigurationError

    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigurationError, match="no audio files"):
        AudioCalibration(str(tmp_path / "empty"))
    code, _, err = run(
        "export", "--model", str(tiny_model_dir), "--out", str(tmp_path / "x"), "--calibrate", str(tmp_path)
    )
    assert code == 2 and "--calibrate is for --quantize int8-static" in err
