"""Label sets: parsing user input into classes, each with one or more phrasings, and prompts."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from soundsift.errors import LabelError

LabelsInput = str | Sequence[str | Sequence[str]] | Mapping[str, str | Sequence[str]]
"""``"dog, cat"``; ``["dog barking | dog bark", "cat"]``; ``[["dog", "dog bark"], ["cat"]]``;
or ``{"dog": ["dog barking", "dog bark"], "cat": "cat meowing"}``."""

# ASCII comma, full-width comma and the ideographic enumeration comma.
_LABEL_SEPARATORS = re.compile(r"[,，、]")
_SYNONYM_SEPARATOR = "|"


@dataclass(frozen=True)
class LabelClass:
    """One class: the name shown to the user and the phrasings the text encoder sees."""

    name: str
    phrases: tuple[str, ...]


def parse_labels(
    labels: LabelsInput, *, max_labels: int, max_label_chars: int, min_labels: int = 2
) -> list[LabelClass]:
    """Normalise any accepted label form into classes; raise LabelError on unusable input."""
    classes = _to_classes(labels)
    _validate(classes, max_labels=max_labels, max_label_chars=max_label_chars, min_labels=min_labels)
    return classes


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
    phrases = tuple(_clean(part) for part in text.split(_SYNONYM_SEPARATOR))
    if not all(phrases):
        raise LabelError(f"label {text.strip()!r} has an empty synonym around '|'")
    return LabelClass(name=_display_name(phrases), phrases=phrases)


def _from_sequence_item(item: str | Sequence[str]) -> LabelClass:
    if isinstance(item, str):
        return _from_text(item)
    phrases = tuple(_clean(str(phrase)) for phrase in item)
    if not phrases or not all(phrases):
        raise LabelError(f"label {list(item)!r} needs at least one non-empty phrase")
    return LabelClass(name=phrases[0], phrases=phrases)


def _from_mapping_item(name: str, phrases: str | Sequence[str]) -> LabelClass:
    clean_name = _clean(str(name))
    if not clean_name:
        raise LabelError("a label name is empty")
    texts = [phrases] if isinstance(phrases, str) else list(phrases)
    clean_phrases = tuple(_clean(str(text)) for text in texts) or (clean_name,)
    if not all(clean_phrases):
        raise LabelError(f"label {clean_name!r} has an empty phrase")
    return LabelClass(name=clean_name, phrases=clean_phrases)


def _display_name(phrases: tuple[str, ...]) -> str:
    return " | ".join(phrases) if len(phrases) > 1 else phrases[0]


def _clean(text: str) -> str:
    return " ".join(text.split())


def _validate(classes: list[LabelClass], *, max_labels: int, max_label_chars: int, min_labels: int) -> None:
    if len(classes) < min_labels:
        found = ", ".join(repr(c.name) for c in classes) or "none"
        raise LabelError(f"at least {min_labels} labels are needed (got {found}); separate labels with commas")
    if len(classes) > max_labels:
        raise LabelError(f"{len(classes)} labels given; the limit is {max_labels} (SOUNDSIFT_MAX_LABELS)")
    seen: dict[str, str] = {}
    for label in classes:
        for phrase in label.phrases:
            if len(phrase) > max_label_chars:
                raise LabelError(
                    f"label {phrase[:40]!r}... is {len(phrase)} characters; the limit is {max_label_chars}"
                )
        key = unicodedata.normalize("NFKC", label.name).casefold()
        if key in seen:
            raise LabelError(f"label {label.name!r} is given twice")
        seen[key] = label.name
