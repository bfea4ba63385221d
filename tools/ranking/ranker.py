"""Serving the ranking head: finding its checkpoint, loading it with its prepared signals, scoring contexts.

    ranker = load_ranker(settings, "movies")        # None without a checkpoint: the simple scorer ranks then
    scores = ranker.score([Context(items=[...], text="a funny heist movie")], settings)   # [1, N]

The head and its signals are loaded once per (checkpoint, modification time, signals file) and shared
(tools.models.shared). The signals come from HOME/ranker/signals-*.npz, prepared from the data folder the first
time (tools/datasets/ranking_signals.py); loading never re-reads the raw datasets after that.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recagent.tools.datasets.ranking_signals import Signals, prepare_signals
from recagent.tools.models import shared
from recagent.tools.settings import Settings

from .config import RankerConfig
from .features import Context, embed_contexts

if TYPE_CHECKING:
    from .model import RankingHead

log = logging.getLogger(__name__)

SHIPPED = Path(__file__).resolve().parent.parent / "weights" / "ranker-movies.pt"  # trained by recagent


class Ranker:
    """A trained head with its signals: scores every catalog item for a context."""

    def __init__(self, head: RankingHead, config: RankerConfig, signals: Signals, meta: dict[str, Any]):
        self.head = head.eval()
        self.config = config
        self.signals = signals
        self.meta = meta
        self.derived: dict[str, Any] = {}  # made from the head once, on first use (the taste space)

    def embed(self, contexts: list[Context], settings: Settings | None = None) -> None:
        """Fill in the contexts' text vectors (MiniLM) from their texts."""
        embed_contexts(contexts, settings)

    def score(self, contexts: list[Context], settings: Settings | None = None, batch: int = 32) -> np.ndarray:
        """Scores [B, N] over the whole catalog (signals.ids order); excluded items get -inf."""
        self.embed(contexts, settings)
        return self.head.rank(self.signals, contexts, batch)

    def top(self, context: Context, k: int = 10, settings: Settings | None = None) -> list[tuple[str, float]]:
        """The k best items for one context, as (id, score)."""
        scores = self.score([context], settings)[0]
        order = np.argsort(-scores)[:k]
        return [(self.signals.ids[j], float(scores[j])) for j in order if np.isfinite(scores[j])]


def checkpoint_path(settings: Settings, catalog: str = "movies") -> Path:
    """Where train-ranker writes by default; load_ranker looks here first, then at the shipped checkpoint."""
    return settings.home / "ranker" / f"ranker-{catalog}.pt"


def find_checkpoint(settings: Settings, catalog: str = "movies") -> Path | None:
    """RECAGENT_MODEL_RANKER / models.ranker, else HOME/ranker/ranker-CATALOG.pt, else the shipped one."""
    override = (getattr(settings, "models", {}) or {}).get("ranker")
    if override:
        if override.lower() in ("none", "off", "simple"):
            return None
        return Path(override).expanduser()
    for path in (checkpoint_path(settings, catalog), SHIPPED if catalog == "movies" else None):
        if path is not None and path.is_file():
            return path
    return None


def load_ranker(
    settings: Settings, catalog: str = "movies", path: Path | None = None, signals: Signals | None = None
) -> Ranker | None:
    """The trained ranking head for a catalog, or None when there is no checkpoint for it (or the checkpoint is for
    another catalog). `signals`: the caller's own (an evaluation with its own ratings split; not shared), else the
    prepared ones. A checkpoint or signals file that cannot be read raises MissingModelError."""
    path = Path(path) if path else find_checkpoint(settings, catalog)
    if path is None or not path.is_file():
        return None
    from . import model  # noqa: PLC0415  (imports torch: heavy, and only needed once a head is loaded)

    stamp = path.stat().st_mtime_ns
    ckpt = shared(("ranker-checkpoint", str(path), stamp), lambda: model.load_checkpoint(path))
    assert isinstance(ckpt, dict)
    if ckpt.get("meta", {}).get("catalog", "movies") != catalog:
        return None

    def assemble(signals: Signals) -> Ranker:
        head, config = model.head_from_checkpoint(ckpt, path)
        if ckpt["ids"] != signals.ids:
            # The catalog changed since training: keep the learned rows of the items that are still there.
            head = model.remap_head(head, ckpt["ids"], signals.ids)
        return Ranker(head, config, signals, {**ckpt.get("meta", {}), "path": str(path)})

    if signals is not None:
        return assemble(signals)
    sources = RankerConfig.from_dict(ckpt["config"]).sources()
    signals_file = prepare_signals(settings, catalog, sources, log=log.warning)
    ranker = shared(("ranker", str(path), stamp, str(signals_file)), lambda: assemble(Signals.load(signals_file)))
    assert isinstance(ranker, Ranker)
    return ranker
