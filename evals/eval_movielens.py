"""`recagent eval movielens`: the ranking head against classic recommenders on MovieLens latest-small.

Protocol: each user's ratings in time order (ties by file order); the last one is the test item, every earlier
rating is known (ratings as implicit feedback: any rating is a positive). Each system ranks the whole catalog
for each of the 610 users, the user's known items left out; Recall@10 (= HitRate@10, one test item) and
NDCG@10 over users. Systems: popularity; item-kNN (cosine, 100 neighbours, `implicit`); ALS (`implicit`,
factors and regularisation chosen on the validation item, the one before the test item); the ranking head
(trained by `recagent train-ranker` without each user's last two ratings).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse

from recagent.tools.catalog import load_catalog
from recagent.tools.datasets.ranking_signals import build_signals
from recagent.tools.datasets.splits import movielens_split
from recagent.tools.ranking import HISTORY, Context, load_ranker
from recagent.tools.settings import Settings


def _metrics(ranked: list[list[int]], targets: list[int]) -> dict[str, float]:
    hits, ndcg = [], []
    for row, t in zip(ranked, targets):
        rank = row.index(t) if t in row else None
        hits.append(1.0 if rank is not None else 0.0)
        ndcg.append(1.0 / np.log2(rank + 2.0) if rank is not None else 0.0)
    return {"recall@10": round(float(np.mean(hits)), 4), "ndcg@10": round(float(np.mean(ndcg)), 4)}


def _top10(scores: np.ndarray, known: list[list[int]]) -> list[list[int]]:
    scores = scores.copy()
    for k, items in enumerate(known):
        scores[k, items] = -np.inf
    top = np.argpartition(-scores, 10, axis=1)[:, :10]
    return [list(t[np.argsort(-scores[k, t])]) for k, t in enumerate(top)]


def _implicit_top10(model: Any, X: sparse.csr_matrix, users: list[str]) -> list[list[int]]:
    ids, _ = model.recommend(np.arange(len(users)), X[np.arange(len(users))], N=10, filter_already_liked_items=True)
    return [list(map(int, r)) for r in ids]


def run_movielens_eval(
    settings: Settings, checkpoint: str | None = None, tune: bool = True, log: Callable[[str], object] = print
) -> dict:
    """All systems on the leave-last-out split; returns the figures (a table per system)."""
    started = time.perf_counter()
    catalog = load_catalog("movies", settings)
    ids = [it.id for it in catalog.items]
    pos = {i: n for n, i in enumerate(ids)}
    train_rows, val, test, seqs = movielens_split(settings, ids)
    users = [u for u in seqs if u in test]
    known_seq = {u: seqs[u] + [val[u]] for u in users}  # everything before the test item
    known = [[pos[i] for i in known_seq[u]] for u in users]
    targets = [pos[test[u]] for u in users]
    rows = [(u, i) for u in users for i in known_seq[u]]
    X = _matrix(users, rows, pos)
    systems: dict[str, dict] = {}

    t0 = time.perf_counter()
    counts = np.asarray(X.sum(0)).ravel()
    systems["popularity"] = {
        **_metrics(_top10(np.broadcast_to(counts, (len(users), len(ids))).astype(np.float32), known), targets),
        "seconds": round(time.perf_counter() - t0, 2),
    }

    try:  # optional (recagent[eval]), and only this evaluation needs them
        from implicit.als import AlternatingLeastSquares  # noqa: PLC0415
        from implicit.nearest_neighbours import CosineRecommender  # noqa: PLC0415

        have_implicit = True
    except ImportError:
        have_implicit = False
        log("the `implicit` library is not installed (pip install 'recagent[eval]'): item-kNN and ALS left out")
    if have_implicit:
        try:  # implicit's ALS wants single-threaded BLAS (it parallelises itself); threadpoolctl comes with it
            from threadpoolctl import threadpool_limits  # noqa: PLC0415

            threadpool_limits(1, "blas")
        except ImportError:
            pass
        t0 = time.perf_counter()
        knn = CosineRecommender(K=100)
        knn.fit(X, show_progress=False)
        systems["item-kNN (cosine, K=100, implicit)"] = {
            **_metrics(_implicit_top10(knn, X, users), targets),
            "seconds": round(time.perf_counter() - t0, 2),
        }
        t0 = time.perf_counter()
        grid = [(f, r) for f in (32, 64, 128) for r in (0.01, 0.1, 1.0)] if tune else [(64, 0.05)]
        best = None
        if len(grid) > 1:  # choose on the validation item: fit without it, score it
            Xv = _matrix(users, [(u, i) for u in users for i in seqs[u]], pos)
            vt = [pos[val[u]] for u in users]
            for f, r in grid:
                als = AlternatingLeastSquares(factors=f, regularization=r, iterations=20, random_state=0)
                als.fit(Xv, show_progress=False)
                m = _metrics(_implicit_top10(als, Xv, users), vt)["ndcg@10"]
                if best is None or m > best[0]:
                    best = (m, f, r)
        _, f, r = best if best else (0, *grid[0])
        als = AlternatingLeastSquares(factors=f, regularization=r, iterations=20, random_state=0)
        als.fit(X, show_progress=False)
        systems[f"ALS (implicit, {f} factors, reg {r})"] = {
            **_metrics(_implicit_top10(als, X, users), targets),
            "seconds": round(time.perf_counter() - t0, 2),
        }

    # the ranking head: features from the same known ratings (the user's own row left out of the item-kNN
    # feature, as in training)
    signals = build_signals(settings, catalog, ratings_rows=rows)
    ranker = load_ranker(settings, path=Path(checkpoint) if checkpoint else None, signals=signals)
    if ranker is None:
        log("no ranking-head checkpoint (run `recagent train-ranker`): the head row is left out")
    else:
        t0 = time.perf_counter()
        user_rows = signals.users
        ctxs = [
            Context(
                items=known_seq[u][-ranker.config.history :],
                kind=HISTORY,
                exclude=set(known_seq[u]),
                user_row=user_rows.get(u),
            )
            for u in users
        ]
        scores = ranker.score(ctxs, settings)
        systems["ranking head (recagent)"] = {
            **_metrics(_top10(scores, known), targets),
            "seconds": round(time.perf_counter() - t0, 2),
        }
    return {
        "users": len(users),
        "items": len(ids),
        "ratings_known": len(rows),
        "systems": systems,
        "checkpoint": ranker.meta.get("path") if ranker else None,
        "seconds": round(time.perf_counter() - started, 1),
        "protocol": "leave the last rating of each user out by time; rank the whole catalog minus the "
        "user's earlier items; Recall@10 and NDCG@10 over the 610 users",
    }


def _matrix(users: list[str], rows: list[tuple[str, str]], pos: dict[str, int]) -> sparse.csr_matrix:
    """Binary CSR [users, items] from (user, item id) rows."""
    index = {u: n for n, u in enumerate(users)}
    X = sparse.csr_matrix(
        (np.ones(len(rows), np.float32), ([index[u] for u, _ in rows], [pos[i] for _, i in rows])),
        shape=(len(users), len(pos)),
    )
    X.data[:] = 1.0
    return X


def format_table(figures: dict) -> str:
    lines = ["| system | Recall@10 | NDCG@10 | seconds |", "| --- | ---: | ---: | ---: |"]
    for name, row in figures["systems"].items():
        lines.append(f"| {name} | {row['recall@10']:.4f} | {row['ndcg@10']:.4f} | {row['seconds']:.1f} |")
    return "\n".join(lines)
