"""The attribute heads' weights in photo search, chosen after training on the validation photos.

Both searches score as tools/retrieval.py does, with the same functions (tools/images.py): a cosine score plus, per
head, weight * max(log p(value | photo), FACET_FLOOR). The heads' log-probabilities of every photo are computed once,
then the weights are chosen by coordinate ascent over a small grid, maximising precision@10.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import numpy as np

from recagent.tools.images import (
    attribute_phrase,
    facet_terms,
    head_logprobs,
    named_head_values,
    named_value_terms,
    with_facets,
)
from recagent.tools.models import embed_texts
from recagent.tools.retrieval import photo_score
from recagent.tools.settings import Settings

from .image_encoder_data import TrainingSet, adapted_texts, embed_photos, head_labels

if TYPE_CHECKING:
    from recagent.tools.image_encoder import ImageTower

FACET_GRID = (0.0, 0.02, 0.05, 0.1, 0.2)  # weights tried for each head's term (calibrate_facets)
TEXT_FACET_GRID = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)  # ... in words-against-photos search


def calibrate(
    model: ImageTower,
    train: TrainingSet,
    val: TrainingSet,
    size: int,
    settings: Settings,
    log: Callable[[str], object] = print,
) -> dict[str, dict[str, float]]:
    """The heads' weights in photo search and in words-against-photos search, chosen on the validation photos."""
    weights = {
        "facet_weights": calibrate_facets(model, train, val, size),
        "text_facet_weights": calibrate_text_facets(model, val, size, settings),
    }
    if any(weights.values()):
        log(f"head weights (chosen on the validation photos): {weights}")
    return weights


def calibrate_facets(
    model: ImageTower, train: TrainingSet, val: TrainingSet, size: int, pool: int = 200
) -> dict[str, float]:
    """Each head's weight in photo retrieval, chosen on the validation photos against every training photo.

    Photo retrieval (tools/retrieval.py) scores a candidate by how its photo and its description match the
    query photo (`photo_score`), plus, per head, weight * log p(candidate's catalog value | query photo). The
    weights are chosen by coordinate ascent over FACET_GRID, maximising the mean precision@10 of the heads' fields.
    """
    if not model.heads or not val.items:
        return {}
    gallery_photos = embed_photos(model, np.concatenate([train.photos, val.photos]), size)
    gallery_texts = adapted_texts(model, np.concatenate([train.texts, val.texts]))
    queries = gallery_photos[len(train.items) :]
    labels = head_labels(train.items + val.items, model.config.heads)
    logp = head_logprobs(model, queries)
    pools = []  # per query: its row, its best `pool` candidates, their scores without and with each head's term
    for q, vector in enumerate(queries):
        sims = photo_score(gallery_photos @ vector, gallery_texts @ vector)
        sims[len(train.items) + q] = -9  # never the query itself
        top = np.argpartition(-sims, pool)[:pool]
        terms = {name: facet_terms(logp[name][q], labels[name][top]) for name in model.heads}
        pools.append((len(train.items) + q, top, sims[top], terms))

    def precision(weights: dict[str, float]) -> float:
        scores = []
        for query, top, base, terms in pools:
            order = top[np.argsort(-with_facets(base, terms, weights))[:10]]
            scores.append(
                np.mean(
                    [np.mean(labels[n][order] == labels[n][query]) for n in weights if labels[n][query] >= 0] or [0.0]
                )
            )
        return float(np.mean(scores))

    return coordinate_ascent(model.heads, FACET_GRID, precision)


def calibrate_text_facets(
    model: ImageTower, val: TrainingSet, size: int, settings: Settings, min_count: int = 3
) -> dict[str, float]:
    """Each head's weight in words-against-photos search, chosen on the validation photos.

    The queries are "<colour> <type>" for every pair that at least min_count validation products share;
    a photo scores cos(adapted words, photo) plus, per head whose value the words name, weight * log p(value |
    photo) (tools/retrieval.py). Coordinate ascent over TEXT_FACET_GRID maximises precision@10 (both must match).
    """
    heads = model.config.heads
    if not {"articleType", "baseColour"} <= set(heads) or not val.items:
        return {}
    photos = embed_photos(model, val.photos, size)
    logp = head_logprobs(model, photos)
    kinds = [(it.metadata.get("baseColour"), it.metadata.get("articleType")) for it in val.items]
    pairs = [pair for pair, n in Counter(kinds).items() if n >= min_count and all(pair)]
    phrases = [attribute_phrase(str(colour), str(kind)) for colour, kind in pairs]
    words = adapted_texts(model, embed_texts(phrases, settings))
    rows = [
        (pair, photos @ vector, named_value_terms(logp, heads, named_head_values(phrase, heads)))
        for pair, phrase, vector in zip(pairs, phrases, words)
    ]

    def precision(weights: dict[str, float]) -> float:
        scores = []
        for pair, base, terms in rows:
            top = np.argsort(-with_facets(base, terms, weights))[:10]
            scores.append(np.mean([kinds[j] == pair for j in top]))
        return float(np.mean(scores)) if scores else 0.0

    return coordinate_ascent(heads, TEXT_FACET_GRID, precision)


def coordinate_ascent(
    names: Iterable[str], grid: tuple[float, ...], objective: Callable[[dict[str, float]], float], rounds: int = 2
) -> dict[str, float]:
    """Weights (all 0 at first) chosen one at a time from the grid, each round, to maximise the objective."""
    weights = {name: 0.0 for name in names}
    for _ in range(rounds):
        for name in weights:
            weights[name] = max(grid, key=lambda w: objective({**weights, name: w}))
    return weights
