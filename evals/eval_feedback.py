"""`recagent eval feedback`: does a user's feedback change their next recommendation? Measured on MovieLens users
the ranking head never saw.

For each test user (tools/datasets/splits.py: movielens_user_groups; their ratings never trained the head), k of
their high ratings (>= 4 stars) are revealed as likes and up to k of their low ones (<= 2) as dislikes, a seeded
draw; the same request (REQUEST, no items) is then ranked over the whole catalog without feedback (the head's
score) and with it (plus WEIGHT * r(u, i), tools/ranking/taste.py), the revealed movies left out of both. Recall@10
(hits / min(10, relevant)) and NDCG@10 of the user's other high-rated movies, for k = 1, 3, 5, 10; a user with fewer
than k + MIN_LEFT high ratings is skipped at that k. `--tune` chooses WEIGHT and DISLIKE on the validation users
instead and prints the grid.

The request holds no items, so the signals' rating-based features (item-kNN, co-ratings) are zero for it; the
users' own ratings count only in the catalog's popularity figures (one rating among the item's count).
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from recagent.evals.common import pyplot, save_figure
from recagent.tools.datasets.movielens import read_ratings
from recagent.tools.datasets.splits import movielens_user_groups
from recagent.tools.errors import MissingModelError
from recagent.tools.ranking import Context, load_ranker
from recagent.tools.ranking.taste import DISLIKE, WEIGHT, taste_space
from recagent.tools.settings import Settings

REQUEST = "Can you recommend a movie I would enjoy?"
KS = (1, 3, 5, 10)
MIN_LEFT = 5
HIGH, LOW = 4.0, 2.0
GRID_WEIGHTS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
GRID_DISLIKES = (0.0, 0.5, 1.0)


def _metrics(scores: np.ndarray, relevant: set[int]) -> tuple[float, float]:
    """Recall@10 (hits / min(10, |relevant|)) and NDCG@10 of the relevant positions in scores [N]."""
    top = np.argpartition(-scores, 10)[:10]
    top = top[np.argsort(-scores[top])]
    gains = np.array([1.0 if j in relevant else 0.0 for j in top])
    ideal = np.sum(1.0 / np.log2(np.arange(2, 2 + min(10, len(relevant)))))
    return float(gains.sum()) / min(10, len(relevant)), float((gains / np.log2(np.arange(2, 12))).sum() / ideal)


def _user_ratings(settings: Settings) -> dict[str, list[tuple[str, float]]]:
    out: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for user, movie, rating, _ts in read_ratings(settings):
        out[user].append((movie, rating))
    return out


def run_feedback_eval(
    settings: Settings,
    checkpoint: str | None = None,
    ks: tuple[int, ...] = KS,
    tune: bool = False,
    limit: int | None = None,
    seed: int = 0,
    log: Callable[[str], object] = print,
) -> dict:
    """The figures: per k, users, Recall@10 and NDCG@10 without and with feedback (and, with tune, the grid)."""
    started = time.perf_counter()
    ranker = load_ranker(settings, "movies", path=Path(checkpoint) if checkpoint else None)
    if ranker is None:
        raise MissingModelError("no ranking-head checkpoint: feedback acts through the head (`recagent train-ranker`)")
    space = taste_space(ranker)
    pos = ranker.signals.pos
    ratings = _user_ratings(settings)
    test_users, validation_users = movielens_user_groups(list(ratings))
    users = (validation_users if tune else test_users)[:limit]
    base = ranker.score([Context(text=REQUEST)], settings)[0]  # [N]: the request alone, the same for every user
    draws = []  # (k, relevant positions, revealed events, scores without feedback, their metrics)
    for user in users:
        rated = [(m, r) for m, r in ratings[user] if m in pos]
        highs = sorted(m for m, r in rated if r >= HIGH)
        lows = sorted(m for m, r in rated if r <= LOW)
        rng = random.Random(f"{seed}-{user}")
        rng.shuffle(highs)
        rng.shuffle(lows)
        for k in ks:
            if len(highs) - k >= MIN_LEFT:
                relevant = {pos[m] for m in highs[k:]}
                before = base.copy()
                before[[pos[m] for m in highs[:k] + lows[:k]]] = -np.inf
                events = [(m, 1) for m in highs[:k]] + [(m, -1) for m in lows[:k]]
                draws.append((k, relevant, events, before, _metrics(before, relevant)))
    grid = [(w, d) for w in GRID_WEIGHTS for d in GRID_DISLIKES] if tune else [(WEIGHT, DISLIKE)]
    results: list[dict[str, Any]] = []
    tastes: dict[tuple[float, int], np.ndarray | None] = {}  # r(u, i) per (dislike factor, draw): no weight in it
    for weight, dislike in grid:
        per_k: dict[int, list[tuple[float, float, float, float]]] = defaultdict(list)
        for n, (k, relevant, events, before, without) in enumerate(draws):
            if (dislike, n) not in tastes:
                taste = space.taste(events, dislike)
                tastes[(dislike, n)] = space.scores(taste) if taste else None
            r = tastes[(dislike, n)]
            after = before + weight * r if r is not None else before
            per_k[k].append((*without, *_metrics(after, relevant)))
        rows = {}
        for k in ks:
            m = np.array(per_k[k]) if per_k[k] else np.zeros((0, 4))
            means = m.mean(0) if len(m) else np.zeros(4)
            rows[str(k)] = {
                "users": len(m),
                "recall@10_without": round(float(means[0]), 4),
                "ndcg@10_without": round(float(means[1]), 4),
                "recall@10_with": round(float(means[2]), 4),
                "ndcg@10_with": round(float(means[3]), 4),
                "recall_ratio": round(float(means[2] / means[0]), 2) if means[0] else None,
            }
        results.append({"weight": weight, "dislike": dislike, "by_k": rows})
        if tune:
            five = rows.get("5", next(iter(rows.values())))
            log(f"weight {weight:g}, dislike {dislike:g}: k=5 Recall@10 {five['recall@10_with']:.4f}")
    best = max(results, key=lambda r: np.mean([row["recall@10_with"] for row in r["by_k"].values()]))
    return {
        "users": "validation" if tune else "test",
        "n_users": len(users),
        "request": REQUEST,
        "weight": best["weight"],
        "dislike": best["dislike"],
        "by_k": best["by_k"],
        "grid": results if tune else None,
        "checkpoint": ranker.meta.get("path"),
        "seconds": round(time.perf_counter() - started, 1),
    }


def format_table(figures: dict) -> str:
    """Per k: users, Recall@10 and NDCG@10 without and with feedback, and the ratio."""
    lines = [
        "| revealed likes k | users | Recall@10 without | Recall@10 with | ratio | NDCG@10 without | NDCG@10 with |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for k, row in figures["by_k"].items():
        ratio = f"{row['recall_ratio']:.2f}x" if row["recall_ratio"] is not None else "-"
        lines.append(
            f"| {k} | {row['users']} | {row['recall@10_without']:.4f} | {row['recall@10_with']:.4f} | {ratio} | "
            f"{row['ndcg@10_without']:.4f} | {row['ndcg@10_with']:.4f} |"
        )
    return "\n".join(lines)


def plot_curve(figures: dict, path: str | Path) -> Path:
    """Recall@10 and NDCG@10 over k, without and with feedback, as a PNG."""
    plt = pyplot()
    ks = [int(k) for k in figures["by_k"]]
    rows = list(figures["by_k"].values())
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label, style in (
        ("recall@10_with", "Recall@10 with feedback", "o-"),
        ("recall@10_without", "Recall@10 without", "o--"),
        ("ndcg@10_with", "NDCG@10 with feedback", "s-"),
        ("ndcg@10_without", "NDCG@10 without", "s--"),
    ):
        ax.plot(ks, [r[key] for r in rows], style, label=label)
    ax.set_xlabel("liked movies revealed (k; as many disliked where the user has them)")
    ax.set_ylabel("metric on the user's other high-rated movies")
    ax.set_title(f"Feedback on {figures['n_users']} held-out MovieLens users")
    ax.set_xticks(ks)
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)
