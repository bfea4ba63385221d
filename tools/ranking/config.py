"""The ranking head's configuration, its features and the kinds of context (no torch here: the agent imports this
module at startup, and torch is only needed once a head is loaded)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from recagent.tools.datasets.ranking_signals import DECADES, SignalSources

FEATURES = (
    "text",
    "content",
    "genre",
    "ml_cooc",
    "redial_cooc",
    "redial_comention",
    "redial_pop",
    "redial_mentioned",
    "popularity",
    "quality",
    "year",
    "before_1970",
    "1970s",
    "1980s",
    "1990s",
    "2000s",
    "since_2010",
    "pop_before_1970",
    "pop_1970s",
    "pop_1980s",
    "pop_1990s",
    "pop_2000s",
    "pop_since_2010",
    "ml_knn",
    "ml_knn_all",
    "ml_pop_recent",
    "content_max",
    "genre_liked",
    "text_seeker",
    "text_last",
    "image",
    "constraint",
)
UNTRAINED = ("image", "constraint")  # see RankingHead.learned
CONVERSATION, HISTORY = 0, 1  # kinds of context

__all__ = ["CONVERSATION", "DECADES", "FEATURES", "HISTORY", "UNTRAINED", "RankerConfig"]


@dataclass
class RankerConfig:
    dim: int = 32  # size of the item and context vectors
    history: int = 20  # the most recent mentioned/liked items used
    recency: float = 0.75  # weight of an item relative to the one mentioned after it
    content_dim: int = 384  # MiniLM
    redial_files: tuple[str, ...] = SignalSources.redial_files  # ReDial dialogues behind the features
    mapping: str = SignalSources.mapping  # behind the ReDial features: that file, or "recagent" (match_titles)
    knn: int = SignalSources.knn  # neighbours per item in the ml_knn features
    recent_since: int = SignalSources.recent_since  # ml_pop_recent counts the MovieLens ratings from this year on
    conversation_embeddings: bool = False  # conversations also scored by <u, v_i> + b_i (False: features only)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RankerConfig:
        """The config saved in a checkpoint (lists back to tuples)."""
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**fields)

    def sources(self) -> SignalSources:
        """What this head's signals are built from."""
        return SignalSources(self.redial_files, self.mapping, self.knn, self.recent_since)
