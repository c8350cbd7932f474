"""Checks on user text (labels, templates, texts to embed) before it reaches a tokenizer or a response."""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

from soundsift.errors import InvalidTextError

# Tab, newline and carriage return are whitespace users paste; every other control character is refused.
_ALLOWED_CONTROLS = frozenset("\t\n\r")


def check_text(text: str, what: str) -> str:
    """Return ``text`` if it is clean Unicode; raise InvalidTextError naming ``what`` otherwise.

    Lone surrogates are what invalid UTF-8 becomes on the way in (and they cannot be encoded on the
    way out); U+FFFD means a decoder already replaced broken bytes; NUL and other control characters
    have no place in a label and confuse tokenizers and logs.
    """
    for position, character in enumerate(text):
        code = ord(character)
        if 0xD800 <= code <= 0xDFFF:
            raise InvalidTextError(f"{what} is not valid UTF-8 (broken character at position {position})")
        if character == "\ufffd":
            raise InvalidTextError(f"{what} contains U+FFFD: it was not valid UTF-8 (position {position})")
        if unicodedata.category(character) == "Cc" and character not in _ALLOWED_CONTROLS:
            raise InvalidTextError(f"{what} contains the control character U+{code:04X} at position {position}")
    return text


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_JSON_BRACKET = re.compile(r"[\[\]{}]")


def load_bounded_json(text: str, *, max_chars: int, max_depth: int) -> Any:
    """``json.loads`` for untrusted text, with its size and nesting bounded before parsing: a deeply
    nested document would otherwise exhaust the parser's recursion (a RecursionError, not a
    ValueError). Raises ValueError for text that is too large, too deep or not JSON."""
    if len(text) > max_chars:
        raise ValueError(f"the JSON is {len(text):,} characters; the limit is {max_chars:,}")
    depth = deepest = 0
    for bracket in _JSON_BRACKET.findall(_JSON_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
        if deepest > max_depth:
            raise ValueError(f"the JSON is nested more than {max_depth} levels deep")
    return json.loads(text)
