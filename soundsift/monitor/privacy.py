"""Privacy: labels whose sound must never end up in an evidence clip (people talking, by default).

A label is *private* when one of the private terms occurs in one of its phrasings (its name, or its
``|`` synonyms, without the sounds it excludes) or in the English it was translated to: as a whole
word or phrase in Latin script (``speech`` makes ``speech`` and ``Male speech`` private, not
``speechless``; ``talking`` makes ``people talking`` private), anywhere in the label for Chinese and
other scripts without spaces between words (``说话`` makes ``小孩说话`` private). Matching ignores
case and full-width forms. The default terms are ``speech``, ``talking`` and ``conversation`` with
every English phrasing and Chinese variant of the glossary concepts named by them (``speaking``,
``Human voice``, ``说话声``, ``对话`` ...), so a label the glossary translates from Chinese is caught
by its own text.

A private label is *heard* in a window when the window was scored and the label's score reached the
stream's threshold for it (``thresholds``, else ``threshold``), the same test that makes an alert
label count as heard, but for one window: no N-of-M, no cooldown. `ClipGuard` keeps which stretches
of a stream were judged and where a private label was heard; an evidence clip is written only when
every window that overlaps it was judged and none heard a private label (see
`soundsift.monitor.evidence.StreamEvidence`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache

from soundsift.core.scoring import PreparedLabels
from soundsift.i18n.concepts import prompt_phrases, read_glossary
from soundsift.i18n.glossary import GLOSSARY, detect_script

DEFAULT_PRIVATE_WORDS = ("speech", "talking", "conversation")

PRIVATE = "private"
"""A clip withheld because a private label was heard in a window it contains."""
UNJUDGED = "unjudged"
"""A clip withheld because part of it was never judged (windows that failed, hops skipped)."""


@lru_cache(maxsize=1)
def default_private_terms() -> tuple[str, ...]:
    """speech, talking, conversation, and the English phrasings and Chinese variants of every glossary
    concept whose English names one of them as a word."""
    terms = list(DEFAULT_PRIVATE_WORDS)
    for concept in read_glossary(GLOSSARY):
        english = prompt_phrases(concept)
        if any(_contains(phrase, word) for phrase in english for word in DEFAULT_PRIVATE_WORDS):
            terms.extend(english)
            terms.extend(concept.chinese)
    return tuple(dict.fromkeys(_normal(term) for term in terms))


def private_labels(prepared: PreparedLabels, terms: Sequence[str]) -> list[str]:
    """The names of the prepared labels that are private under ``terms``."""
    private = []
    for index, label in enumerate(prepared.classes):
        # The phrasings, not the name: "music (not speech)" is music, its exclusion is no phrasing.
        texts = [*(label.phrases or (label.name,)), *(prepared.translated_as[index] or ())]
        if any(_contains(text, term) for text in texts for term in terms):
            private.append(label.name)
    return private


def _normal(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def _contains(text: str, term: str) -> bool:
    text, term = _normal(text), _normal(term)
    if not term:
        return False
    if detect_script(term) == "latin":
        return re.search(rf"(?<!\w){re.escape(term)}(?!\w)", text) is not None
    return term in text


class ClipGuard:
    """One stream's judged stretches and the stretches where a private label was heard, in samples
    since the stream started; only the last ``keep`` samples are remembered (what an evidence clip
    can still reach)."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._judged: list[list[int]] = []  # merged, sorted [start, end) spans
        self._private: list[tuple[int, int]] = []
        self.judged_until = 0
        """The end of the latest judged window."""

    def judged(self, start: int, end: int, *, private: bool) -> None:
        """A window [start, end) was judged (scored, or below the volume gate); ``private``: a private
        label was heard in it."""
        start = max(0, start)
        if self._judged and start <= self._judged[-1][1]:
            self._judged[-1][1] = max(self._judged[-1][1], end)
        else:
            self._judged.append([start, end])
        if private:
            self._private.append((start, end))
        self.judged_until = max(self.judged_until, end)
        horizon = end - self.keep
        self._judged = [span for span in self._judged if span[1] > horizon]
        self._private = [span for span in self._private if span[1] > horizon]

    def verdict(self, start: int, end: int) -> str | None:
        """Why the clip [start, end) must not be written (PRIVATE, UNJUDGED), or None: it may."""
        if any(a < end and start < b for a, b in self._private):
            return PRIVATE
        if not any(a <= start and end <= b for a, b in self._judged):
            return UNJUDGED
        return None

    def heard_private(self, start: int, end: int) -> bool:
        """Whether a private label was heard in a window overlapping [start, end) so far."""
        return any(a < end and start < b for a, b in self._private)
