"""The data behind the ranking head's features, prepared once from the data folder and kept in the recagent home.

`Signals` holds arrays only: the movies' MiniLM content vectors, popularity, quality, year and genres; the
MovieLens ratings as a binary user-item matrix, its item-kNN matrix and recent popularity; the ReDial
co-occurrence counts (mentioned -> suggested, co-mentions, suggestions, mentions), with each dialogue's own
counts kept apart so that a training dialogue can be left out of its own features.

`build_signals` computes them from the data folder (training builds them in memory from its ratings split);
`prepare_signals` builds them once for serving and writes HOME/ranker/signals-CATALOG-FINGERPRINT.npz, the
fingerprint covering the data files (sizes, modification times), the text embedder, the sources below and the
file format; `Signals.load` reads that file, so loading the ranking head never re-reads the raw datasets. The file
stays in the home: MovieLens and ReDial data must not go into the repository (their licences).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse

from recagent.tools.catalog import Catalog, load_catalog
from recagent.tools.errors import MissingModelError
from recagent.tools.models import embed_texts, resolve_model
from recagent.tools.settings import Settings
from recagent.tools.text import GENRE_NAMES

from .movielens import ratings_matrix, read_ratings, recent_popularity
from .redial import MENTION, load_dialogues, redial_dir, redial_mapping

logger = logging.getLogger(__name__)

FORMAT = 1  # of the signals file; part of its fingerprint
DECADES = ((0, 1970), (1970, 1980), (1980, 1990), (1990, 2000), (2000, 2010), (2010, 3000))


@dataclass(frozen=True)
class SignalSources:
    """What the signals are built from (the ranking head's RankerConfig carries the same fields)."""

    redial_files: tuple[str, ...] = ("train.jsonl", "valid.jsonl")  # ReDial dialogues behind the counts
    mapping: str = "redial_to_movielens.csv"  # ReDial -> MovieLens: that file, or "recagent" (match_titles)
    knn: int = 100  # neighbours per item in the item-kNN matrix
    recent_since: int = 2015  # recent popularity counts the MovieLens ratings from this year on


@dataclass
class DialogueCounts:
    """One ReDial dialogue's contribution to the co-occurrence counts (to leave it out of its own features)."""

    pairs: dict[tuple[int, int], float] = field(default_factory=dict)  # (mentioned, suggested) -> count
    comention: dict[tuple[int, int], float] = field(default_factory=dict)
    suggested: dict[int, float] = field(default_factory=dict)
    mentioned: dict[int, float] = field(default_factory=dict)


class Signals:
    """What the features are computed from (N items, in `ids` order), and the few arrays derived from them."""

    def __init__(
        self,
        ids: list[str],
        content: np.ndarray,
        popularity: np.ndarray,
        quality: np.ndarray,
        year: np.ndarray,
        genres: np.ndarray,
        R: sparse.csr_matrix,
        knn: sparse.csr_matrix,
        recent: np.ndarray,
        D: sparse.csr_matrix,
        M: sparse.csr_matrix,
        suggested: np.ndarray,
        mentioned: np.ndarray,
        per_dialogue: dict[str, DialogueCounts] | None = None,
        users: dict[str, int] | None = None,
        n_dialogues: int = 0,
        image: np.ndarray | None = None,
    ):
        self.ids = list(ids)
        self.pos = {item: n for n, item in enumerate(self.ids)}
        self.content = content.astype(np.float32)  # [N, 384], L2-normalised
        self.popularity = popularity.astype(np.float32)  # [N], 0..1
        self.quality = quality.astype(np.float32)  # [N], -1..1
        self.year = year.astype(np.float32)  # [N], 0..1 over 1920..2020
        self.decade = np.zeros((len(self.ids), len(DECADES)), np.float32)  # [N, 6], from year
        years = 1920 + 100 * self.year
        for j, (lo, hi) in enumerate(DECADES):
            self.decade[:, j] = (years >= lo) & (years < hi)
        self.genres = genres.astype(np.float32)  # [N, G], G = len(GENRE_NAMES)
        self.image = image  # [N, D] or None
        # MovieLens: R [users, N] binary (users: userId -> row); item norms for the cosine.
        self.R = R
        self.users = dict(users or {})
        counts = np.asarray(self.R.sum(axis=0)).ravel().astype(np.float32)
        self.inv_norm = (1.0 / np.sqrt(counts + 1.0)).astype(np.float32)
        self.RT = self.R.T.tocsr()
        self.knn = knn  # [N, N] sparse, each row an item's top-`knn` cosine neighbours
        self.recent = recent.astype(np.float32)  # [N], 0..1
        # ReDial: D [N, N] mentioned -> suggested, M [N, N] co-mentions, suggestion and mention counts [N].
        self.D, self.M = D, M
        self.suggested = suggested.astype(np.float32)
        self.mentioned = mentioned.astype(np.float32)
        self.per_dialogue = dict(per_dialogue or {})
        self.n_dialogues = n_dialogues

    @property
    def n(self) -> int:
        return len(self.ids)

    def save(self, path: Path) -> Path:
        """Write the signals as one .npz (no pickles), atomically: a temporary file, then a rename."""
        arrays: dict[str, Any] = {
            "format": np.array(FORMAT),
            "ids": np.array(self.ids, dtype=str),
            "content": self.content,
            "popularity": self.popularity,
            "quality": self.quality,
            "year": self.year,
            "genres": self.genres,
            "recent": self.recent,
            "suggested": self.suggested,
            "mentioned": self.mentioned,
            "users": np.array(sorted(self.users, key=self.users.__getitem__), dtype=str),
            "n_dialogues": np.array(self.n_dialogues),
            "dialogues": np.array(list(self.per_dialogue), dtype=str),
        }
        for name, m in (("R", self.R), ("knn", self.knn), ("D", self.D), ("M", self.M)):
            arrays.update(
                {
                    f"{name}.data": m.data,
                    f"{name}.indices": m.indices,
                    f"{name}.indptr": m.indptr,
                    f"{name}.shape": np.array(m.shape),
                }
            )
        counts = list(self.per_dialogue.values())
        for name in ("pairs", "comention"):  # rows (dialogue, m, i, count)
            rows = [(d, m, i, c) for d, dc in enumerate(counts) for (m, i), c in getattr(dc, name).items()]
            arrays[f"per_dialogue.{name}"] = np.array(rows, np.float64).reshape(-1, 4)
        for name in ("suggested", "mentioned"):  # rows (dialogue, i, count)
            rows3 = [(d, i, c) for d, dc in enumerate(counts) for i, c in getattr(dc, name).items()]
            arrays[f"per_dialogue.{name}"] = np.array(rows3, np.float64).reshape(-1, 3)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: Path) -> Signals:
        """Signals written by `save`; a file that cannot be read raises MissingModelError."""
        try:
            with np.load(path, allow_pickle=False) as f:
                if int(f["format"]) != FORMAT:
                    raise ValueError(f"format {int(f['format'])}, expected {FORMAT}")
                mats = {
                    name: sparse.csr_matrix(
                        (f[f"{name}.data"], f[f"{name}.indices"], f[f"{name}.indptr"]),
                        shape=tuple(int(x) for x in f[f"{name}.shape"]),
                    )
                    for name in ("R", "knn", "D", "M")
                }
                per_dialogue = {str(d): DialogueCounts() for d in f["dialogues"]}
                counts = list(per_dialogue.values())
                for name in ("pairs", "comention"):
                    for d, m, i, c in f[f"per_dialogue.{name}"]:
                        getattr(counts[int(d)], name)[(int(m), int(i))] = float(c)
                for name in ("suggested", "mentioned"):
                    for d, i, c in f[f"per_dialogue.{name}"]:
                        getattr(counts[int(d)], name)[int(i)] = float(c)
                return cls(
                    [str(i) for i in f["ids"]],
                    f["content"],
                    f["popularity"],
                    f["quality"],
                    f["year"],
                    f["genres"],
                    mats["R"],
                    mats["knn"],
                    f["recent"],
                    mats["D"],
                    mats["M"],
                    f["suggested"],
                    f["mentioned"],
                    per_dialogue,
                    {str(u): n for n, u in enumerate(f["users"])},
                    int(f["n_dialogues"]),
                )
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise MissingModelError(
                f"the ranking head's signals {path} cannot be read ({exc}); delete the file "
                "and it is prepared again from the data folder"
            ) from None


# ---- building them from the data folder ---------------------------------------------------------


def item_knn(R: sparse.csr_matrix, k: int) -> sparse.csr_matrix:
    """Item-item cosine over the users' co-ratings, each row keeping its k largest values: sparse [N, N]."""
    n = R.shape[1]
    if R.shape[0] == 0 or R.nnz == 0 or k <= 0:
        return sparse.csr_matrix((n, n), dtype=np.float32)
    RT = R.T.tocsr()
    inv = 1.0 / np.sqrt(np.maximum(np.asarray(R.sum(axis=0)).ravel(), 1.0)).astype(np.float32)  # [N]
    k = min(k, n - 1)
    rows, cols, vals = [], [], []
    for lo in range(0, n, 1024):  # [chunk, users] @ [users, N], dense per chunk
        sims = np.asarray((RT[lo : lo + 1024] @ R).todense(), np.float32)
        sims *= inv[lo : lo + 1024, None] * inv[None, :]
        sims[np.arange(sims.shape[0]), np.arange(lo, lo + sims.shape[0])] = 0.0  # not its own neighbour
        top = np.argpartition(-sims, k, axis=1)[:, :k]  # [chunk, k]
        v = np.take_along_axis(sims, top, axis=1)
        keep = v > 0
        rows.append((np.arange(lo, lo + sims.shape[0])[:, None] + 0 * top)[keep])
        cols.append(top[keep])
        vals.append(v[keep])
    return sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))


def _sparse(counts: dict[tuple[int, int], float], n: int) -> sparse.csr_matrix:
    if not counts:
        return sparse.csr_matrix((n, n), dtype=np.float32)
    rows, cols = zip(*counts)
    return sparse.csr_matrix((np.fromiter(counts.values(), np.float32), (rows, cols)), shape=(n, n))


def dialogue_counts(dialogue: dict, mapping: dict[str, str], pos: dict[str, int]) -> DialogueCounts:
    """The co-occurrence counts one dialogue adds: earlier mention -> suggested movie, co-mentions, suggestions."""
    recommender = dialogue.get("respondentWorkerId")
    questions = dialogue.get("respondentQuestions") or {}
    out = DialogueCounts()
    earlier: list[int] = []
    for message in dialogue.get("messages", []):
        rids = [
            r for r in dict.fromkeys(MENTION.findall(message.get("text", ""))) if r in mapping and mapping[r] in pos
        ]
        ids = [pos[mapping[r]] for r in rids]
        if message.get("senderWorkerId") == recommender:
            for rid, i in zip(rids, ids):
                if i in earlier or (questions.get(rid) or {}).get("suggested") != 1:
                    continue
                out.suggested[i] = 1.0
                for m in earlier:
                    out.pairs[(m, i)] = 1.0
        for i in ids:
            if i not in earlier:
                earlier.append(i)
    out.mentioned = {i: 1.0 for i in earlier}
    for a in earlier:
        for b in earlier:
            if a != b:
                out.comention[(a, b)] = 1.0
    return out


def build_signals(
    settings: Settings,
    catalog: Catalog | None = None,
    sources: SignalSources | None = None,
    ratings_rows: list[tuple[str, str]] | None = None,
    dialogues: list[dict] | None = None,
) -> Signals:
    """Signals for the movie catalog from the data folder, in memory. ratings_rows: (userId, movieId) pairs to use
    instead of all of ratings.csv (training and the MovieLens evaluation leave each user's last ratings out);
    dialogues: the ReDial dialogues behind the counts instead of sources.redial_files."""
    sources = sources or SignalSources()
    catalog = catalog or load_catalog("movies", settings)
    items = catalog.items
    ids = [it.id for it in items]
    content = embed_texts([it.document() for it in items], settings)
    max_ratings = max(int(it.metadata.get("ratings", 0) or 0) for it in items) or 1
    popularity = np.array(
        [math.log1p(int(it.metadata.get("ratings", 0) or 0)) / math.log1p(max_ratings) for it in items], np.float32
    )
    quality = np.array(
        [
            (float(it.metadata.get("rating", 3.0)) - 3.0) / 2.0
            if int(it.metadata.get("ratings", 0) or 0) >= 10
            else 0.0
            for it in items
        ],
        np.float32,
    )
    year = np.array(
        [min(max((int(it.metadata.get("year", 1990) or 1990) - 1920) / 100.0, 0.0), 1.0) for it in items], np.float32
    )
    all_rows = read_ratings(settings)
    if ratings_rows is None:
        ratings_rows = [(u, m) for u, m, _, _ in all_rows]
    recent = recent_popularity(all_rows, set(ratings_rows), ids, sources.recent_since)
    genres = np.array([[g in (it.metadata.get("genres") or []) for g in GENRE_NAMES] for it in items], np.float32)
    R, users = ratings_matrix(ratings_rows, ids)
    if dialogues is None and redial_dir(settings).is_dir():
        dialogues = []
        for name in sources.redial_files:
            if (redial_dir(settings) / name).is_file():
                dialogues.extend(load_dialogues(redial_dir(settings) / name))
    mapping = redial_mapping(settings, sources.mapping, items) if dialogues else {}
    # ReDial: mentioned -> suggested counts, co-mentions, suggestion counts; per dialogue for leave-out.
    n = len(ids)
    pos = {item: j for j, item in enumerate(ids)}
    per_dialogue: dict[str, DialogueCounts] = {}
    pairs: dict[tuple[int, int], float] = {}
    comention: dict[tuple[int, int], float] = {}
    suggested = np.zeros(n, np.float32)
    mentioned = np.zeros(n, np.float32)
    for dialogue in dialogues or []:
        dc = dialogue_counts(dialogue, mapping, pos)
        per_dialogue[str(dialogue.get("conversationId", ""))] = dc
        for key, c in dc.pairs.items():
            pairs[key] = pairs.get(key, 0.0) + c
        for key, c in dc.comention.items():
            comention[key] = comention.get(key, 0.0) + c
        for i, c in dc.suggested.items():
            suggested[i] += c
        for i, c in dc.mentioned.items():
            mentioned[i] += c
    return Signals(
        ids,
        content,
        popularity,
        quality,
        year,
        genres,
        R,
        item_knn(R, sources.knn),
        recent,
        _sparse(pairs, n),
        _sparse(comention, n),
        suggested,
        mentioned,
        per_dialogue,
        users,
        len(dialogues or []),
    )


# ---- prepared once, kept in the home ------------------------------------------------------------


def signals_path(settings: Settings, catalog: str = "movies", sources: SignalSources | None = None) -> Path:
    """HOME/ranker/signals-CATALOG-FINGERPRINT.npz: the fingerprint changes when the data files, the text embedder,
    the sources or the file format do, so a stale file is never used."""
    sources = sources or SignalSources()
    data = settings.require_data()
    files = sorted(p for p in (data / "movielens").glob("*") if p.is_file())
    files += [redial_dir(settings) / name for name in sources.redial_files]
    files.append(
        redial_dir(settings) / ("movies_with_mentions.csv" if sources.mapping == "recagent" else sources.mapping)
    )
    stats = [
        (str(p.relative_to(data)), *((p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else (None,)))
        for p in files
    ]
    key = json.dumps(
        {
            "format": FORMAT,
            "catalog": catalog,
            "sources": asdict(sources),
            "files": stats,
            "embedder": resolve_model("text-embedder", settings),
        },
        sort_keys=True,
    )
    return settings.home / "ranker" / f"signals-{catalog}-{hashlib.sha1(key.encode()).hexdigest()[:16]}.npz"


def prepare_signals(
    settings: Settings,
    catalog: Catalog | str = "movies",
    sources: SignalSources | None = None,
    log: Callable[[str], object] | None = None,
) -> Path:
    """The signals file for a catalog (the movies catalog: the only one with a ranking head), built from the data
    folder and written into the home the first time (a minute or two), then reused. Returns its path."""
    name = catalog if isinstance(catalog, str) else catalog.name
    path = signals_path(settings, name, sources)
    if path.is_file():
        return path
    (log or logger.info)("preparing the ranking head's signals from the data folder (once)")
    try:
        loaded = load_catalog(catalog, settings) if isinstance(catalog, str) else catalog
        return build_signals(settings, loaded, sources).save(path)
    except OSError as exc:  # a data file missing or unreadable, or the home not writable
        raise MissingModelError(
            f"the ranking head's signals cannot be prepared ({exc.__class__.__name__}: {exc})"
        ) from None
