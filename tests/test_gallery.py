"""The model gallery: aliases name the known checkpoints wherever a model is named, `soundsift
models` lists them, and both audio-encoder shapes (HTSAT-tiny of clap-htsat-*, HTSAT-base of
larger_clap_*) run on torch and ONNX with the same embeddings (tiny random models of each shape)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from soundsift import Classifier
from soundsift.backends.onnx.export import export
from soundsift.cli.main import main
from soundsift.core.audio import load_audio
from soundsift.core.gallery import GALLERY
from soundsift.core.settings import ModelSettings
from tests.data.tiny_clap import build_tiny_clap


@pytest.mark.parametrize(
    ("alias", "hub_id"),
    [
        ("fused", "laion/clap-htsat-fused"),
        ("unfused", "laion/clap-htsat-unfused"),
        ("general", "laion/larger_clap_general"),
        ("Music-and-Speech", "laion/larger_clap_music_and_speech"),
        ("music", "laion/larger_clap_music"),
        ("someone/their-clap", "someone/their-clap"),
    ],
)
def test_aliases_name_the_checkpoints(alias, hub_id):
    assert ModelSettings.build(model=alias).model == hub_id


def test_a_folder_named_like_an_alias_is_the_folder(tmp_path, monkeypatch):
    (tmp_path / "general").mkdir()
    monkeypatch.chdir(tmp_path)
    assert ModelSettings.build(model="general").model == "general"


def test_models_lists_the_gallery(capsys):
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["alias"] for row in rows] == [card.alias for card in GALLERY]
    assert {row["hub_id"] for row in rows} >= {"laion/clap-htsat-fused", "laion/larger_clap_general"}
    assert all(row["cached"] in ("cached", "not cached", "cache unknown") for row in rows)
    assert all("%" in row["esc50_zero_shot"] for row in rows if row["alias"] in ("fused", "unfused", "general"))


@pytest.mark.slow
def test_the_htsat_base_shape_runs_on_torch_and_onnx_alike(tmp_path, esc50_clips):
    folder = build_tiny_clap(tmp_path / "base", fusion=False, seed=3, shape="base")
    torch_side = Classifier(model=str(folder), device="cpu")
    onnx_side = Classifier(model=str(export(str(folder), tmp_path / "onnx")), backend="onnx", device="cpu")
    clips = [load_audio(path, 48_000) for path in esc50_clips[:3]]
    features, is_longer = torch_side.pipeline.featurizer([clip.samples for clip in clips])
    ours, theirs = (
        torch_side.backend.embed_audio(features, is_longer),
        onnx_side.backend.embed_audio(features, is_longer),
    )
    assert ours.shape == theirs.shape == (3, torch_side.dim)
    assert (np.sum(ours * theirs, axis=1) >= 0.9999).all()
    texts = ["dog barking", "a siren"]
    assert (np.sum(torch_side.embed_text(texts) * onnx_side.embed_text(texts), axis=1) >= 0.9999).all()
