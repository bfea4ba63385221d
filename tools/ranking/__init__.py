"""Ranking candidates: the learned ranking head and, without one, the simple documented scorer.

    config.py    RankerConfig, the feature names, the kinds of context
    features.py  Context and the features computed from the head's Signals (numpy)
    model.py     RankingHead (torch), its input tensors, its checkpoint file
    ranker.py    serving: find and load a checkpoint with its prepared signals, score contexts
    simple.py    the simple scorer used without a head
The signals are prepared from the data folder by tools/datasets/ranking_signals.py; training is
tools/train/ranker.py. Importing this package does not import torch (only loading a head does).
"""

from .config import CONVERSATION, FEATURES, HISTORY, RankerConfig
from .features import Context, conversation_context, embed_contexts
from .ranker import SHIPPED, Ranker, checkpoint_path, find_checkpoint, load_ranker
from .simple import Ranked, rank_candidates

__all__ = [
    "CONVERSATION",
    "FEATURES",
    "HISTORY",
    "SHIPPED",
    "Context",
    "Ranked",
    "Ranker",
    "RankerConfig",
    "checkpoint_path",
    "conversation_context",
    "embed_contexts",
    "find_checkpoint",
    "load_ranker",
    "rank_candidates",
]
