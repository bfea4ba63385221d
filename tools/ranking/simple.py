"""Ranking candidates without the learned ranking head (no checkpoint for the catalog): a simple documented scorer.

score = similarity to the request
      + 0.05 * popularity (log of the rating count, scaled to 0..1)
      + 0.03 * quality    (mean rating mapped to -1..1, only with at least 10 ratings)
      - 1.0  for an item the user disliked (it sinks; it is also excluded upstream)
Ties keep the retrieval order. The weights are small on purpose: relevance decides, popularity breaks
near-ties in favour of films people know.
"""

from __future__ import annotations

import math
from collections.abc import Set
from dataclasses import dataclass

POPULARITY_WEIGHT = 0.05
QUALITY_WEIGHT = 0.03
MAX_RATINGS = 330  # the most-rated MovieLens latest-small film has 329 ratings


@dataclass
class Ranked:
    id: str
    title: str
    score: float
    metadata: dict
    similarity: float


def rank_candidates(candidates: list, disliked: Set[str] = frozenset()) -> list[Ranked]:
    """Order retrieval hits (objects with id, title, score, metadata) by the simple scorer above."""
    ranked = []
    for hit in candidates:
        meta = hit.metadata
        ratings = int(meta.get("ratings", 0) or 0)
        score = hit.score + POPULARITY_WEIGHT * math.log1p(ratings) / math.log1p(MAX_RATINGS)
        if ratings >= 10 and "rating" in meta:
            score += QUALITY_WEIGHT * (float(meta["rating"]) - 3.0) / 2.0
        if hit.id in disliked:
            score -= 1.0
        ranked.append(Ranked(hit.id, hit.title, score, meta, hit.score))
    ranked.sort(key=lambda r: -r.score)
    return ranked
