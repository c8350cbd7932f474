"""Ensembles (`--model fused+general`): the members' own answers, averaged, with their agreement."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from soundsift import Classifier, ConfigurationError, Ensemble, FailedInput
from soundsift.core.ensemble import combine, ensemble_members
from soundsift.core.results import Classification, LabelScore
from soundsift.errors import OptionsError

LABELS = "dog barking, rain, siren, church bells"


@pytest.fixture(scope="module")
def members(tiny_model_dir, tiny_unfused_model_dir) -> list[Classifier]:
    return [
        Classifier(model=str(folder), device="cpu", batch_size=4) for folder in (tiny_model_dir, tiny_unfused_model_dir)
    ]


@pytest.fixture(scope="module")
def ensemble(members) -> Ensemble:
    return Ensemble(members)


def test_scores_are_the_mean_of_the_members_own_answers(ensemble, members, esc50_clips):
    result = ensemble.classify(esc50_clips[0], LABELS, threshold=0.0, min_margin=0.0)
    own = [member.classify(esc50_clips[0], LABELS, threshold=0.0, min_margin=0.0) for member in members]
    for score in result.scores:
        expected = np.mean([next(s.score for s in answer.scores if s.label == score.label) for answer in own])
        assert score.score == pytest.approx(expected, abs=1e-6)
    assert [score.score for score in result.scores] == sorted((s.score for s in result.scores), reverse=True)
    assert result.top_label == result.scores[0].label
    assert [m.top_label for m in result.members] == [answer.top_label for answer in own]
    assert [m.model for m in result.members] == [member.model_id for member in members]
    assert result.model == "+".join(member.model_id for member in members)
    agreeing = sum(answer.top_label == result.top_label for answer in own)
    assert result.agreement == pytest.approx(agreeing / 2)
    assert result.uncertain == (agreeing < 2)


def test_a_disagreement_is_uncertain_whatever_the_confidence():
    def answer(model: str, scores: dict[str, float]) -> Classification:
        ordered = sorted(scores, key=lambda label: -scores[label])
        return Classification(
            source="x",
            top_label=ordered[0],
            confidence=scores[ordered[0]],
            margin=0.0,
            uncertain=False,
            scores=[LabelScore(label=label, score=scores[label], similarity=0.1) for label in ordered],
            duration_s=1.0,
            silent=False,
            model=model,
        )

    from soundsift.core.scoring import Decision

    decision = Decision.build(logit_scale=1.0, threshold=0.1, min_margin=0.0, label_threshold=0.2)
    agree = combine([answer("a", {"dog": 0.9, "rain": 0.1}), answer("b", {"dog": 0.8, "rain": 0.2})], decision)
    assert (agree.top_label, agree.agreement, agree.uncertain) == ("dog", 1.0, False)
    assert agree.confidence == pytest.approx(0.85)
    assert agree.margin == pytest.approx(0.7)
    split = combine([answer("a", {"dog": 0.95, "rain": 0.05}), answer("b", {"dog": 0.4, "rain": 0.6})], decision)
    assert split.top_label == "dog" and split.confidence == pytest.approx(0.675)
    assert split.agreement == 0.5 and split.uncertain


def test_multi_label_detects_what_most_members_detect(ensemble, esc50_clips):
    result = ensemble.classify(esc50_clips[1], LABELS, multi_label=True, label_thresholds=-1.0)
    assert sorted(result.detected_labels) == sorted(label.strip() for label in LABELS.split(","))
    nothing = ensemble.classify(esc50_clips[1], LABELS, multi_label=True, label_thresholds=1.0)
    assert nothing.detected_labels == [] and nothing.top_label is None and nothing.uncertain


def test_a_bad_input_fails_alone_in_a_batch(ensemble, esc50_clips, tmp_path):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really a wave file")
    results = ensemble.classify_batch([esc50_clips[0], broken, esc50_clips[2]], LABELS, errors="return")
    assert isinstance(results[1], FailedInput) and results[1].error == "audio_decode_error"
    assert all(isinstance(results[i], Classification) and results[i].members for i in (0, 2))
    one = ensemble.classify(esc50_clips[2], LABELS)
    assert [s.label for s in results[2].scores] == [s.label for s in one.scores]
    np.testing.assert_allclose([s.score for s in results[2].scores], [s.score for s in one.scores], atol=1e-5)


def test_load_names_the_members_joined_by_plus(tiny_model_dir, tiny_unfused_model_dir, esc50_clips):
    ensemble = Ensemble.load(f"{tiny_model_dir}+{tiny_unfused_model_dir}", device="cpu")
    assert [member.model_id for member in ensemble.members] == [str(tiny_model_dir), str(tiny_unfused_model_dir)]
    assert ensemble.classify(esc50_clips[0], LABELS).agreement is not None


def test_ensemble_names_are_checked():
    assert ensemble_members("fused+general") == ["fused", "general"]
    assert ensemble_members("laion/clap-htsat-fused") == ["laion/clap-htsat-fused"]
    for bad in ("fused+", "fused+fused", "+general"):
        with pytest.raises(OptionsError):
            ensemble_members(bad)


def test_one_member_or_an_adapter_is_refused(members, tmp_path):
    with pytest.raises(ConfigurationError, match="two or more"):
        Ensemble(members[:1])
    from soundsift import Adapter
    from tests.test_adapters import write_examples

    adapter = Adapter.fit(members[0], write_examples(tmp_path / "examples", shots=2))
    taught = Classifier(model=members[0].model_id, device="cpu", adapter=adapter)
    with pytest.raises(ConfigurationError, match="adapter"):
        Ensemble([taught, members[1]])


def test_the_cli_classifies_with_an_ensemble(run, tiny_model_dir, tiny_unfused_model_dir, esc50_clips, tmp_path):
    import json

    ensemble = f"{tiny_model_dir}+{tiny_unfused_model_dir}"
    code, out, _ = run("classify", str(esc50_clips[0]), "--labels", LABELS, "--model", ensemble, "--json")
    assert code == 0
    (result,) = json.loads(out)
    assert [member["model"] for member in result["members"]] == [str(tiny_model_dir), str(tiny_unfused_model_dir)]
    assert 0.0 <= result["agreement"] <= 1.0
    code, out, _ = run("classify", str(esc50_clips[0]), "--labels", LABELS, "--model", ensemble)
    assert code == 0 and "models: " in out and "agreement" in out
    code, _, err = run(
        "batch", str(esc50_clips[0]), "--labels", LABELS, "--model", ensemble, "--engine", "ray", "--out", "o.csv"
    )
    assert code == 2 and "--engine ray runs one model" in err


def test_batch_classifies_a_folder_with_an_ensemble(
    run, ensemble, tiny_model_dir, tiny_unfused_model_dir, esc50_clips, tmp_path
):
    """`soundsift batch --model A+B`: every file answered by both models (decoded once, on worker
    threads), a broken file an error row of its own, the run's exit code 1 for it."""
    import json

    folder = tmp_path / "clips"
    folder.mkdir()
    for clip in esc50_clips[:5]:
        (folder / clip.name).write_bytes(clip.read_bytes())
    (folder / "broken.wav").write_bytes(b"RIFF not audio")
    out = tmp_path / "rows.jsonl"
    models = f"{tiny_model_dir}+{tiny_unfused_model_dir}"
    code, _, err = run("batch", str(folder), "--labels", LABELS, "--model", models, "--workers", "2", "--out", str(out))
    assert code == 1, err
    assert float(re.search(r"model ([0-9.]+) s", err).group(1)) > 0, err  # the members' model time is counted
    rows = {Path(row["path"]).name: row for row in map(json.loads, out.read_text().splitlines())}
    assert len(rows) == 6 and rows["broken.wav"]["error"].startswith("audio_decode_error")
    for clip in esc50_clips[:5]:
        expected = ensemble.classify(clip, LABELS)
        row = rows[clip.name]
        assert row["top_label"] == expected.top_label and row["uncertain"] == expected.uncertain
        np.testing.assert_allclose(
            [row["scores"][s.label] for s in expected.scores], [s.score for s in expected.scores], atol=1e-4
        )
    # Resumable as with one model: a rerun finds every file done.
    code, _, err = run("batch", str(folder), "--labels", LABELS, "--model", models, "--out", str(out))
    assert len(out.read_text().splitlines()) == 6 and "skipped" in err.lower()
