"""Label sets: parsing user input into classes, each with one or more phrasings, and prompts."""

from __future__ import annotations

import re
import sys
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from soundsift.core.text import check_text
from soundsift.errors import LabelError

LabelsInput = str | Sequence[str | Sequence[str]] | Mapping[str, str | Sequence[str]]
"""``"dog, cat"``; ``["dog barking | dog bark", "cat"]``; ``[["dog", "dog bark"], ["cat"]]``;
or ``{"dog": ["dog barking", "dog bark"], "cat": "cat meowing"}``."""

# ASCII comma, full-width comma and the ideographic enumeration comma.
_LABEL_SEPARATORS = re.compile(r"[,，、]")
_SYNONYM_SEPARATOR = "|"


# "(not X)", "(except X)", "（非X）", "(不是X)", "(除了X)": X is excluded; other parentheses are context.
_EXCLUSION_IN_PARENTHESES = re.compile(
    r"\s*[(（]\s*(?:not|except|but not|非|不是|不要|除了|除去)\s*([^)）]+?)\s*[)）]", re.IGNORECASE
)
# "cat meowing -hissing": a dash after a space and before a word; "hip-hop" and "a - b" are kept.
_EXCLUSION_DASH = re.compile(r"\s+-(?=[^\s-])")


@dataclass(frozen=True)
class LabelClass:
    """One class: the name shown to the user, the phrasings the text encoder sees, and the sounds
    it must not be (each a hidden competitor: see Classifier.result_from_embedding)."""

    name: str
    phrases: tuple[str, ...]
    exclusions: tuple[str, ...] = ()


def split_exclusions(phrase: str) -> tuple[str, tuple[str, ...]]:
    """('cat meowing', ('hissing',)) from 'cat meowing (not hissing)' or 'cat meowing -hissing'."""
    excluded = [match.strip() for match in _EXCLUSION_IN_PARENTHESES.findall(phrase)]
    phrase = _EXCLUSION_IN_PARENTHESES.sub("", phrase)
    head, *dashed = _EXCLUSION_DASH.split(phrase)
    excluded.extend(part.strip() for part in dashed if part.strip())
    return _clean(head), tuple(excluded)


@dataclass(frozen=True)
class LabelLimits:
    """Bounds on one request's labels, so that no label set can make unbounded work or memory."""

    max_labels: int = sys.maxsize
    max_label_chars: int = sys.maxsize
    max_synonyms: int = sys.maxsize
    max_total_chars: int = sys.maxsize


def parse_labels(labels: LabelsInput, *, limits: LabelLimits, min_labels: int = 2) -> list[LabelClass]:
    """Normalise any accepted label form into classes; raise LabelError on unusable input.

    The total size is checked before any splitting, so a huge input costs one pass over it."""
    _check_total_size(labels, limits.max_total_chars)
    classes = _to_classes(labels)
    _validate(classes, limits=limits, min_labels=min_labels)
    return classes


def check_taught_labels(
    labels: Sequence[str],
    prompts: Sequence[Sequence[str]],
    *,
    limits: LabelLimits,
    max_prompts: int,
    max_prompt_chars: int,
) -> None:
    """An adapter's labels obey the rules of every label set (parse_labels: count, length, characters,
    duplicates), whoever wrote the file; its stored prompts are clean text of bounded number and length."""
    if not all(label.strip() for label in labels):
        raise LabelError("a taught label is empty")
    parse_labels(list(labels), limits=limits, min_labels=1)
    for label, group in zip(labels, prompts):
        if len(group) > max_prompts:
            raise LabelError(f"label {label[:40]!r} has {len(group)} prompts; the limit is {max_prompts}")
        for prompt in group:
            check_text(prompt, f"a prompt of label {label[:40]!r}")
            if len(prompt) > max_prompt_chars:
                raise LabelError(f"a prompt of label {label[:40]!r} is longer than {max_prompt_chars} characters")


def label_names(labels: LabelsInput, *, min_labels: int = 0) -> list[str]:
    """Class names exactly as parse_labels shows them, without count or length limits."""
    return [label.name for label in parse_labels(labels, limits=LabelLimits(), min_labels=min_labels)]


def build_prompts(phrase: str, templates: Sequence[str]) -> list[str]:
    return [template.replace("{}", phrase) for template in templates]


def _to_classes(labels: LabelsInput) -> list[LabelClass]:
    if isinstance(labels, str):
        return [_from_text(item) for item in _LABEL_SEPARATORS.split(labels) if item.strip()]
    if isinstance(labels, Mapping):
        return [_from_mapping_item(name, phrases) for name, phrases in labels.items()]
    if isinstance(labels, Sequence):
        return [_from_sequence_item(item) for item in labels if not (isinstance(item, str) and not item.strip())]
    raise LabelError(f"labels must be a string, a list or a dict, not {type(labels).__name__}")


def _from_text(text: str) -> LabelClass:
    return _with_exclusions(
        _display_name(tuple(_clean(p) for p in text.split(_SYNONYM_SEPARATOR))),
        [_clean(part) for part in text.split(_SYNONYM_SEPARATOR)],
        text,
    )


def _with_exclusions(name: str, raw_phrases: Sequence[str], original: object) -> LabelClass:
    phrases: list[str] = []
    exclusions: dict[str, None] = {}  # a dict keeps order and de-duplicates in linear time
    for raw in raw_phrases:
        phrase, excluded = split_exclusions(raw)
        if not phrase:
            raise LabelError(f"label {str(original).strip()!r} has an empty phrase (around '|' or an exclusion)")
        phrases.append(phrase)
        exclusions.update(dict.fromkeys(excluded))
    return LabelClass(name=name, phrases=tuple(phrases), exclusions=tuple(exclusions))


def _from_sequence_item(item: str | Sequence[str]) -> LabelClass:
    if isinstance(item, str):
        return _from_text(item)
    phrases = [_clean(str(phrase)) for phrase in item]
    if not phrases or not all(phrases):
        raise LabelError(f"label {list(item)!r} needs at least one non-empty phrase")
    return _with_exclusions(phrases[0], phrases, list(item))


def _from_mapping_item(name: str, phrases: str | Sequence[str]) -> LabelClass:
    clean_name = _clean(str(name))
    if not clean_name:
        raise LabelError("a label name is empty")
    texts = [phrases] if isinstance(phrases, str) else list(phrases)
    clean_phrases = [_clean(str(text)) for text in texts] or [clean_name]
    if not all(clean_phrases):
        raise LabelError(f"label {clean_name!r} has an empty phrase")
    return _with_exclusions(clean_name, clean_phrases, clean_name)


def _display_name(phrases: tuple[str, ...]) -> str:
    return " | ".join(phrases) if len(phrases) > 1 else phrases[0]


def _clean(text: str) -> str:
    return " ".join(text.split())


def _check_total_size(labels: LabelsInput, max_total_chars: int) -> None:
    if isinstance(labels, str):
        total = len(labels)
    elif isinstance(labels, Mapping):
        total = sum(len(str(name)) + _size(phrases) for name, phrases in labels.items())
    elif isinstance(labels, Sequence):
        total = sum(_size(item) for item in labels)
    else:
        return  # _to_classes names the unsupported type
    if total > max_total_chars:
        raise LabelError(
            f"the labels hold {total} characters; the limit is {max_total_chars} (SOUNDSIFT_MAX_LABEL_TEXT_CHARS)"
        )


def _size(item: object) -> int:
    if isinstance(item, str):
        return len(item)
    if isinstance(item, Sequence):
        return sum(len(str(part)) for part in item)
    return len(str(item))


def _validate(classes: list[LabelClass], *, limits: LabelLimits, min_labels: int) -> None:
    if len(classes) < min_labels:
        found = ", ".join(repr(c.name) for c in classes) or "none"
        raise LabelError(f"at least {min_labels} labels are needed (got {found}); separate labels with commas")
    if len(classes) > limits.max_labels:
        raise LabelError(f"{len(classes)} labels given; the limit is {limits.max_labels} (SOUNDSIFT_MAX_LABELS)")
    seen: dict[str, str] = {}
    for label in classes:
        variants = len(label.phrases) + len(label.exclusions)
        if variants > limits.max_synonyms:
            raise LabelError(
                f"label {label.name[:40]!r} has {variants} synonyms and exclusions; the limit is "
                f"{limits.max_synonyms} (SOUNDSIFT_MAX_SYNONYMS)"
            )
        for phrase in (*label.phrases, *label.exclusions):
            check_text(phrase, f"label {phrase[:40]!r}")
            if len(phrase) > limits.max_label_chars:
                raise LabelError(
                    f"label {phrase[:40]!r}... is {len(phrase)} characters; the limit is {limits.max_label_chars}"
                )
        key = unicodedata.normalize("NFKC", label.name).casefold()
        if key in seen:
            raise LabelError(f"label {label.name!r} is given twice")
        seen[key] = label.name
