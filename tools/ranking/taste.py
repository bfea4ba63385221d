"""A user's taste from their feedback, as the seed describes it: r(u, i) = u . v_i + b_u + b_i.

v_i and b_i are the ranking head's own item vectors and item biases for rating histories (RankingHead.history_space:
v_i = E_id[i] + P_item(content_i), b_i = item bias + content bias), learned from MovieLens rating histories, where
the head scores a history with u = the mean of its items' vectors. Feedback builds u the same way, online: each
like adds its item's vector, each dislike subtracts DISLIKE times its own (items near a disliked one drop), and u is
the sum over the number of events. b_u, the user's mean signal, is the same for every item: it moves nothing in a
ranking and is kept so that r reads as the seed's formula. One event costs one vector addition; scoring the whole
catalog one [N, d] @ [d] product (a fraction of a millisecond for 9,742 movies).

In a turn the agent adds WEIGHT * r(u, i) to the head's score of every candidate; the events are the user's stored
likes, dislikes and accepts from earlier conversations and this one (tools/feedback.py: user_events), the latest
signal for an item winning. `recagent forget USER` deletes the events, so the next turn has no taste at all.
WEIGHT and DISLIKE were chosen on MovieLens validation users, never on the held-out ones the feedback
evaluation reports (evals/eval_feedback.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .ranker import Ranker

WEIGHT = 2.0  # of r(u, i) beside the head's conversation score (chosen on the 30 validation users)
DISLIKE = 0.5  # a dislike's vector counts this much, negatively, in u


@dataclass
class Taste:
    """One user's taste: the running sum of their signed item vectors and of their signals."""

    total: np.ndarray  # [d] sum over events of signal * v_item (dislikes scaled by DISLIKE)
    events: int = 0
    signals: float = 0.0

    @property
    def vector(self) -> np.ndarray:
        """u [d]."""
        return self.total / max(self.events, 1)

    @property
    def bias(self) -> float:
        """b_u: the mean signal (+1 a like, -1 a dislike)."""
        return self.signals / max(self.events, 1)

    def update(self, vector: np.ndarray, signal: int, dislike: float = DISLIKE) -> None:
        """Add one event online: a like (+1) or a dislike (-1) of the item with this vector."""
        self.total = self.total + (vector if signal > 0 else -dislike * vector)
        self.events += 1
        self.signals += 1.0 if signal > 0 else -1.0


class TasteSpace:
    """The head's item space for tastes: builds a user's Taste from events and scores the catalog with it."""

    def __init__(self, ranker: Ranker):
        self.pos = ranker.signals.pos
        self.vectors, self.bias = ranker.head.history_space(ranker.signals.content)  # [N, d], [N]

    def taste(self, events: Iterable[tuple[str, int]], dislike: float = DISLIKE) -> Taste | None:
        """The taste of (item id, signal) events, oldest first (the latest signal for an item wins); None when no
        event names an item of the catalog."""
        latest = {str(item): signal for item, signal in events if signal}
        taste = Taste(np.zeros(self.vectors.shape[1], np.float32))
        for item, signal in latest.items():
            if item in self.pos:
                taste.update(self.vectors[self.pos[item]], signal, dislike)
        return taste if taste.events else None

    def scores(self, taste: Taste) -> np.ndarray:
        """r(u, i) = u . v_i + b_u + b_i for every item [N] (signals order)."""
        return self.vectors @ taste.vector + taste.bias + self.bias


def taste_space(ranker: Ranker) -> TasteSpace:
    """The ranker's taste space, made once per loaded head."""
    space = ranker.derived.get("taste")
    if not isinstance(space, TasteSpace):
        space = ranker.derived["taste"] = TasteSpace(ranker)
    return space
