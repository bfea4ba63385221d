"""MovieLens ratings: reading ratings.csv, the user-item matrix, and popularity in a period."""

from __future__ import annotations

import csv
import datetime
from collections.abc import Iterable

import numpy as np
from scipy import sparse

from recagent.tools.settings import Settings

Rating = tuple[str, str, float, int]  # (userId, movieId, rating, timestamp)


def read_ratings(settings: Settings) -> list[Rating]:
    """MovieLens ratings.csv as (userId, movieId, rating, timestamp) rows."""
    path = settings.require_data() / "movielens" / "ratings.csv"
    with open(path, newline="") as fh:
        return [(r["userId"], r["movieId"], float(r["rating"]), int(r["timestamp"])) for r in csv.DictReader(fh)]


def ratings_matrix(rows: Iterable[tuple[str, str]], ids: list[str]) -> tuple[sparse.csr_matrix, dict[str, int]]:
    """(userId, movieId) rows -> (binary CSR matrix [users, N], userId -> row), users in order of first
    appearance."""
    pos = {item: n for n, item in enumerate(ids)}
    users: dict[str, int] = {}
    r, c = [], []
    for user, movie in rows:
        if movie in pos:
            r.append(users.setdefault(user, len(users)))
            c.append(pos[movie])
    m = sparse.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(max(len(users), 1), len(ids)))
    m.data[:] = 1.0  # duplicates summed -> binary
    return m, users


def recent_popularity(rows: Iterable[Rating], known: set[tuple[str, str]], ids: list[str], since: int) -> np.ndarray:
    """[N] log1p of each item's rating count from the year `since` on (only (user, item) pairs in `known`),
    scaled to 0..1."""
    start = datetime.datetime(since, 1, 1, tzinfo=datetime.timezone.utc).timestamp()
    pos = {item: n for n, item in enumerate(ids)}
    counts = np.zeros(len(ids), np.float32)
    for user, movie, _rating, ts in rows:
        if ts >= start and movie in pos and (user, movie) in known:
            counts[pos[movie]] += 1.0
    counts = np.log1p(counts)
    return counts / max(float(counts.max()), 1e-6)
