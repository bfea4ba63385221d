"""The data splits that training and evaluation share: which examples are trained on, which are held out.

- fashion photos: the 1,000 products with the lowest md5 of their id are never trained on (`recagent eval images`
  and the simulated users' targets), the next 500 choose the image encoder's retrieval weights (validation);
- MovieLens: per user, in time order, the last rating is the test item (`recagent eval movielens`), the one
  before it the validation item, the rest train the ranking head; the 60 users with the lowest md5 of their id
  are never trained on at all (the feedback evaluation's test users, `recagent eval feedback`), the next 30
  choose the feedback weights (its validation users).
ReDial keeps its own files: train.jsonl and valid.jsonl train, dev.jsonl evaluates (tools/datasets/redial.py).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

from recagent.tools.catalog import Item
from recagent.tools.settings import Settings

from .movielens import read_ratings

HOLDOUT = 1000
VALIDATION = 500
USER_HOLDOUT = 60
USER_VALIDATION = 30


def md5_order(items: list[Item]) -> list[Item]:
    """Items in the order of the md5 of their id: a fixed, well-mixed order that any copy of the data agrees on."""
    return sorted(items, key=lambda it: hashlib.md5(it.id.encode()).hexdigest())


def fashion_holdout(items: list[Item]) -> list[Item]:
    """The 1,000 fashion products with the lowest md5 of their id, in that order: never trained on, used to evaluate."""
    return md5_order(items)[:HOLDOUT]


def fashion_holdout_ids(items: list[Item]) -> set[str]:
    """The ids of `fashion_holdout`."""
    return {it.id for it in fashion_holdout(items)}


def fashion_validation_ids(items: list[Item]) -> set[str]:
    """The next 500 in md5 order: never trained on, they choose the image encoder's retrieval weights."""
    return {it.id for it in md5_order(items)[HOLDOUT : HOLDOUT + VALIDATION]}


def movielens_split(
    settings: Settings, ids: list[str]
) -> tuple[list[tuple[str, str]], dict[str, str], dict[str, str], dict[str, list[str]]]:
    """Per user, ratings in time order (ties by file order): (train rows, {user: val item}, {user: test item},
    {user: ordered training items})."""
    known = set(ids)
    by_user: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for n, (user, movie, _rating, ts) in enumerate(read_ratings(settings)):
        if movie in known:
            by_user[user].append((ts, n, movie))
    train_rows: list[tuple[str, str]] = []
    val: dict[str, str] = {}
    test: dict[str, str] = {}
    seqs: dict[str, list[str]] = {}
    for user, rows in by_user.items():
        items = [m for _, _, m in sorted(rows)]
        if len(items) >= 3:
            test[user], val[user] = items[-1], items[-2]
            items = items[:-2]
        seqs[user] = items
        train_rows.extend((user, m) for m in items)
    return train_rows, val, test, seqs


def movielens_user_groups(users: list[str]) -> tuple[list[str], list[str]]:
    """(test users, validation users) of the feedback evaluation: the USER_HOLDOUT users with the lowest md5 of
    their id, then the next USER_VALIDATION. Neither trains the ranking head."""
    order = sorted(set(users), key=lambda u: hashlib.md5(f"movielens-user-{u}".encode()).hexdigest())
    return order[:USER_HOLDOUT], order[USER_HOLDOUT : USER_HOLDOUT + USER_VALIDATION]
