from __future__ import annotations

import pytest

from soundsift.core.labels import LabelClass, LabelLimits, parse_labels
from soundsift.errors import LabelError


def parse(labels, min_labels=2, **limits):
    return parse_labels(
        labels, limits=LabelLimits(**{"max_labels": 100, "max_label_chars": 200, **limits}), min_labels=min_labels
    )


def test_comma_separated_string_with_all_separators_and_whitespace():
    classes = parse("  dog barking ,siren，rain、 glass   breaking ")
    assert [c.name for c in classes] == ["dog barking", "siren", "rain", "glass breaking"]
    assert all(c.phrases == (c.name,) for c in classes)


def test_synonyms_with_pipe():
    classes = parse("dog barking | dog bark | a dog woofs, cat")
    assert classes[0] == LabelClass("dog barking | dog bark | a dog woofs", ("dog barking", "dog bark", "a dog woofs"))


def test_list_list_of_lists_and_dict_forms():
    assert parse(["dog | hound", "cat"])[0].phrases == ("dog", "hound")
    nested = parse([["dog", "hound"], ["cat"]])
    assert nested[0] == LabelClass("dog", ("dog", "hound"))
    mapping = parse({"dog": ["dog barking", "dog bark"], "cat": "cat meowing", "bird": []})
    assert mapping == [
        LabelClass("dog", ("dog barking", "dog bark")),
        LabelClass("cat", ("cat meowing",)),
        LabelClass("bird", ("bird",)),
    ]


def test_chinese_labels_split_on_full_width_commas():
    assert [c.name for c in parse("狗叫声，猫叫声、鸟叫声")] == ["狗叫声", "猫叫声", "鸟叫声"]


def test_empty_items_between_commas_are_ignored():
    assert [c.name for c in parse("dog,, cat,")] == ["dog", "cat"]


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ("dog", "at least 2 labels"),
        ("", "at least 2 labels"),
        ("dog, Dog", "given twice"),
        ("dog | , cat", "empty phrase"),
        ([["dog", ""], ["cat"]], "non-empty phrase"),
        (42, "must be a string, a list or a dict"),
    ],
)
def test_bad_label_sets(labels, message):
    with pytest.raises(LabelError, match=message):
        parse(labels)


def test_limits_are_configurable():
    with pytest.raises(LabelError, match="3 labels given; the limit is 2"):
        parse("a, b, c", max_labels=2)
    with pytest.raises(LabelError, match="is 11 characters; the limit is 10"):
        parse("short, much longer", max_label_chars=10)


def test_one_label_allowed_when_asked():
    assert len(parse("smoke alarm", min_labels=1)) == 1
