"""Sound concepts of the bilingual glossary: English phrasings and Chinese variants, read from TSV."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from soundsift.errors import ConfigurationError


@dataclass(frozen=True)
class Concept:
    english: tuple[str, ...]
    chinese: tuple[str, ...]


def prompt_phrases(concept: Concept) -> tuple[str, ...]:
    """English phrasings for prompts: AudioSet-style 'A, B, C' names split into their parts."""
    phrases: list[str] = []
    for english in concept.english:
        for part in english.split(", "):
            part = part.strip()
            if part and part.lower() not in ("etc.", "etc") and part not in phrases:
                phrases.append(part)
    return tuple(phrases)


def read_glossary(path: Path) -> list[Concept]:
    """Concepts from a TSV file: English phrasings TAB Chinese variants, each side '|'-separated.

    A file that cannot be read or does not have that shape is a ConfigurationError naming the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigurationError(f"glossary {path}: cannot be read as UTF-8 text ({error})") from None
    concepts = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#") or line.startswith("en\t"):
            continue
        columns = line.split("\t")
        if len(columns) != 2:
            raise ConfigurationError(f"{path}:{number}: expected 'english phrasings<TAB>chinese variants'")
        english, chinese = (tuple(p.strip() for p in column.split("|") if p.strip()) for column in columns)
        if not english or not chinese:
            raise ConfigurationError(f"{path}:{number}: both columns need at least one entry")
        concepts.append(Concept(english, chinese))
    return concepts
