"""Labels in Chinese: glossary coverage, matching, warnings, exclusions, original text preserved."""

from __future__ import annotations

import json

import numpy as np
import pytest

from soundsift import Classifier, detect
from soundsift.cli.main import main
from soundsift.core.labels import split_exclusions
from soundsift.errors import ConfigurationError
from soundsift.i18n.concepts import prompt_phrases
from soundsift.i18n.glossary import Glossary, detect_script, key
from soundsift.i18n.presets import PRESETS_ZH, preset_labels, preset_names
from tests.data.shared import LABEL_SETS, shared_path


@pytest.fixture(scope="module")
def glossary():
    return Glossary.load()


def test_every_class_of_the_shared_label_sets_has_a_chinese_entry(glossary):
    english = {key(p) for concept in glossary.concepts for p in concept.english}
    english |= {key(p) for concept in glossary.concepts for p in prompt_phrases(concept)}
    missing = []
    for path in sorted(shared_path(LABEL_SETS).glob("*.json")):
        for name in json.loads(path.read_text()):
            if key(name.replace("_", " ")) not in english:
                missing.append(f"{path.name}: {name}")
    assert not missing, "glossary lacks: " + "; ".join(missing)
    assert all(concept.chinese for concept in glossary.concepts)


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("狗叫声", "dog barking"),
        ("狗叫", "dog barking"),
        ("狗吠", "dog barking"),
        ("猫叫声", "cat meowing"),
        ("猫的叫声", "cat meowing"),
        ("鸟叫声", "bird song"),
        ("门铃声", "Doorbell"),
        ("烟雾报警声", "smoke alarm"),
        ("烟雾报警器", "smoke alarm"),
        ("玻璃破碎声", "glass breaking"),
        ("玻璃碎裂", "glass breaking"),
        ("婴儿哭声", "baby crying"),
        ("下雨的声音", "Rain"),
        ("汽车喇叭", "car horn"),
        ("汽车鸣笛", "car horn"),
        ("救护车鸣笛", "Ambulance (siren)"),
        ("敲门声", "Knock"),
        ("警笛声", "Siren"),
        ("电钻", "Drill"),
        ("打字声", "keyboard typing"),
        ("鼓掌", "Applause"),
    ],
)
def test_common_user_phrasings(glossary, label, expected):
    translation = glossary.translate(label)
    assert translation.method == "glossary" and expected in translation.phrases, translation


def test_normalisation_full_width_punctuation_and_suffixes():
    assert key("狗叫声！") == key("狗 叫 声") == key("狗叫")
    assert key("猫的叫声") == "猫叫"
    assert key("ＤＯＧ") == "dog"


def test_composition_and_fuzzy_matching(glossary):
    composed = glossary.translate("卡车鸣笛")
    assert composed.method == "composed" and composed.phrases == ("truck honking",)
    fuzzy = glossary.translate("烟雾报警的器声")
    assert fuzzy.method in ("fuzzy", "composed") and "smoke alarm" in " ".join(fuzzy.phrases)


def test_scripts_and_untranslatable_labels(glossary):
    assert detect_script("dog barking") == "latin"
    assert detect_script("狗叫声") == "cjk"
    assert detect_script("собака лает") == "other"
    assert glossary.translate("dog barking").method == "none"
    unknown = glossary.translate("量子计算机")
    assert unknown.method == "untranslated" and unknown.phrases == ("量子计算机",)


def test_user_glossary_extends_and_overrides(tmp_path):
    extra = tmp_path / "mine.tsv"
    extra.write_text("en\tzh\nquantum computer fan|server fan noise\t量子计算机\nkettle whistling\t狗叫声\n")
    mine = Glossary.load([extra])
    assert mine.translate("量子计算机").phrases == ("quantum computer fan", "server fan noise")
    assert mine.translate("狗叫声").phrases == ("kettle whistling",)
    broken = tmp_path / "broken.tsv"
    broken.write_text("only one column\n")
    with pytest.raises(ConfigurationError, match="broken.tsv:1: expected"):
        Glossary.load([broken])
    with pytest.raises(ConfigurationError, match="cannot be read"):
        Glossary.load([tmp_path / "missing.tsv"])


def test_mixed_language_label_sets_keep_the_users_text(classifier, esc50_clips):
    result = classifier.classify(esc50_clips[0], "狗叫声, rain, 玻璃破碎声 | 玻璃碎裂, 量子计算机")
    by_label = {score.label: score for score in result.scores}
    assert set(by_label) == {"狗叫声", "rain", "玻璃破碎声 | 玻璃碎裂", "量子计算机"}
    assert "dog barking" in by_label["狗叫声"].translated_as
    assert "This is a sound of dog barking." in by_label["狗叫声"].prompt_text
    assert by_label["rain"].translated_as is None and by_label["rain"].prompt_text == "This is a sound of rain."
    assert by_label["玻璃破碎声 | 玻璃碎裂"].translated_as == ["Shatter", "glass breaking"]
    assert by_label["量子计算机"].translated_as is None
    assert len(result.warnings) == 1 and "量子计算机" in result.warnings[0]


def test_translated_embedding_is_the_mean_of_the_english_prompts(classifier):
    prepared = classifier.prepare_labels("狗叫声, rain")
    prompts = [f"This is a sound of {p}." for p in prepared.translated_as[0]]
    mean = classifier.embed_text(prompts).mean(axis=0)
    np.testing.assert_allclose(prepared.embeddings[0], mean / np.linalg.norm(mean), atol=1e-6)


def test_no_translate_sends_labels_as_written(tiny_model_dir, esc50_clips):
    raw = Classifier(model=str(tiny_model_dir), device="cpu", translate=False)
    result = raw.classify(esc50_clips[0], "狗叫声, 猫叫声")
    assert all(score.translated_as is None for score in result.scores) and result.warnings == []
    assert {score.prompt_text for score in result.scores} == {
        "This is a sound of 狗叫声.",
        "This is a sound of 猫叫声.",
    }


def test_exclusion_parsing():
    assert split_exclusions("cat meowing (not hissing)") == ("cat meowing", ("hissing",))
    assert split_exclusions("猫叫声(非嘶吼)") == ("猫叫声", ("嘶吼",))
    assert split_exclusions("猫叫声（不是嘶吼）") == ("猫叫声", ("嘶吼",))
    assert split_exclusions("cat meowing -hissing -growling") == ("cat meowing", ("hissing", "growling"))
    assert split_exclusions("office keyboard typing (quiet room)") == ("office keyboard typing (quiet room)", ())
    assert split_exclusions("hip-hop") == ("hip-hop", ())


def test_exclusion_veto_against_direct_computation(classifier, esc50_clips):
    audio = classifier.embed_audio(esc50_clips[0])[0]
    candidates = ["rain", "siren", "crow", "clock tick", "sea waves", "wind"]
    text = classifier.embed_text([f"This is a sound of {c}." for c in candidates])
    similarity = dict(zip(candidates, text @ audio))
    ranked = sorted(candidates, key=similarity.get, reverse=True)
    best, second, worst = ranked[0], ranked[1], ranked[-1]

    plain = classifier.classify(esc50_clips[0], [best, second], threshold=0, min_margin=0)
    assert plain.top_label == best
    # The excluded sound beats the label: the label is vetoed and the answer falls to the next one.
    vetoed = classifier.classify(esc50_clips[0], [f"{second} (not {best})", worst], threshold=0, min_margin=0)
    assert similarity[best] > similarity[second]
    assert vetoed.top_label == worst
    flags = {score.label: score.vetoed for score in vetoed.scores}
    assert flags == {f"{second} (not {best})": True, worst: None}
    # The excluded sound loses to the label: nothing changes.
    kept = classifier.classify(esc50_clips[0], [f"{best} -{worst}", second], threshold=0, min_margin=0)
    assert kept.top_label == f"{best} -{worst}"
    assert {s.label: s.vetoed for s in kept.scores}[f"{best} -{worst}"] is False
    # Every label vetoed: no answer, uncertain.
    nothing = classifier.classify(esc50_clips[0], [f"{second} (not {best})", f"{worst} (not {best})"])
    assert nothing.top_label is None and nothing.uncertain


def test_presets_in_both_languages(glossary):
    assert set(preset_names()) >= {"smart_home", "smart_home_zh", "moderation", "classroom_zh"}
    for name in PRESETS_ZH:
        for label in preset_labels(f"{name}_zh").split(", "):
            assert glossary.translate(label).method == "glossary", label
    with pytest.raises(KeyError, match="unknown preset"):
        preset_labels("kitchen")


def test_cli_preset_warnings_and_original_text(tiny_model_dir, monkeypatch, capsys, esc50_clips, tmp_path):
    monkeypatch.setenv("SOUNDSIFT_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("SOUNDSIFT_DEVICE", "cpu")
    assert main(["classify", str(esc50_clips[0]), "--preset", "smart_home_zh", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {s["label"] for s in rows[0]["scores"]} == set(preset_labels("smart_home_zh").split(", "))
    assert main(["classify", str(esc50_clips[0]), "--labels", "狗叫声, 量子计算机", "--json"]) == 0
    captured = capsys.readouterr()
    assert "warning" in captured.err and "量子计算机" in captured.err
    out = tmp_path / "rows.jsonl"
    assert main(["batch", str(esc50_clips[0]), "--labels", "狗叫声, 猫叫声", "--out", str(out)]) == 0
    assert set(json.loads(out.read_text().splitlines()[0])["scores"]) == {"狗叫声", "猫叫声"}
    assert main(["classify", str(esc50_clips[0]), "--preset", "nope"]) == 2


def test_detect_keeps_the_users_labels(classifier, esc50_clips):
    detection = detect(classifier, str(esc50_clips[0]), "狗叫声, 雨声", threshold=0.0)
    assert detection.labels == ["狗叫声", "雨声"]
    assert "dog barking" in detection.translations["狗叫声"]
    assert {event.label for event in detection.events} == {"狗叫声", "雨声"}


def test_cross_lingual_fallback_finds_unlisted_phrasings(glossary):
    knock = glossary.translate("有人在敲门")
    assert knock.method == "semantic" and "Knock" in knock.phrases and 0.88 <= knock.score <= 1.0
    shatter = glossary.translate("玻璃杯摔碎了")
    assert shatter.method == "semantic" and "glass breaking" in shatter.phrases
    assert glossary.translate("量子计算机").method == "untranslated"
    assert Glossary(glossary.concepts, semantic=False).translate("有人在敲门").method == "untranslated"


@pytest.fixture(scope="module")
def tiny_marian_dir(tmp_path_factory):
    from tests.data.tiny_marian import build_tiny_marian

    return build_tiny_marian(tmp_path_factory.mktemp("tiny-marian"))


def test_machine_translation_covers_labels_the_glossary_lacks(tiny_model_dir, tiny_marian_dir, esc50_clips):
    translating = Classifier(model=str(tiny_model_dir), device="cpu", translator=str(tiny_marian_dir))
    result = translating.classify(esc50_clips[0], "量子计算机, 狗叫声")
    by_label = {score.label: score for score in result.scores}
    machine = by_label["量子计算机"].translated_as
    assert machine and len(machine) == 1 and detect_script(machine[0]) == "latin"
    assert by_label["量子计算机"].prompt_text == f"This is a sound of {machine[0]}."
    assert "dog barking" in by_label["狗叫声"].translated_as, "the glossary still comes first"
    assert result.warnings == []
    translator = translating.label_encoder.glossary.translator
    calls = translator.calls
    translating.classify(esc50_clips[1], "量子计算机, 狗叫声")
    assert translator.calls == calls, "translations are cached"


def test_missing_translation_model_is_a_clear_error(tiny_model_dir, esc50_clips, tmp_path):
    from soundsift import ModelLoadError

    broken = Classifier(model=str(tiny_model_dir), device="cpu", translator=str(tmp_path / "no-such-model"))
    with pytest.raises(ModelLoadError, match="translation model"):
        broken.classify(esc50_clips[0], "量子计算机, 狗叫声")
