"""The learned ranking head: one readable file (the model, its input features, loading and scoring).

For a context u (a conversation, or a user's rating history) and an item i:

    score(u, i) = <u, v_i> + b_u + b_i + sum_f w_f * feature_f(u, i)

  v_i  = E_id[i] + P_item(content_i)           item vector: a learned id embedding plus a projection of the
                                                item's MiniLM content vector (title, genres, tags), so an item
                                                without interactions still gets a meaningful vector
  u    = sum_k a_k v_{m_k} + P_text(text)       context vector: the liked and mentioned items m_k, the most
                                                recent weighted most (a_k = recency^(age) / sum), plus a
                                                projection of the MiniLM vector of the text request; a new
                                                user with no history has u from the text alone
  b_u  drops out of any ranking for one context; it is kept out of the code (zero)
  b_i  learned item bias: a per-item value plus a projection of the content vector per kind of context
       (what kinds of films are suggested in conversations, or rated), so that it generalises to rare items
  E_id and the per-item b_i learn from rating histories only (conversation examples train the rest: with a
  few hundred dialogues the per-item parameters memorise them, measured: ReDial valid Recall@10 0.35 but
  dev 0.09)
  w_f  learned weights, one set per kind of context (0: conversation, 1: rating history), on the features.

For a conversation the default score is the feature mixture alone, sum_f w_f * feature_f(u, i)
(RankerConfig.conversation_embeddings = False): <u, v_i> and b_i then serve rating histories only. With a few
hundred training dialogues a learned mixture over strong signals transfers to new dialogues better than the
projections (measured on ReDial dev, see docs/benchmarks.md).

The features:


  text          cosine of the text request and the item's content vector (what retrieval scores)
  content       cosine of the recency-weighted mean content vector of the mentioned items and the item's
  genre         share of the genres the text asks for ("a funny movie" -> Comedy) that the item has
  ml_cooc       item-kNN from MovieLens ratings: sum_m a_m * cos(m, i) over the users' co-ratings
  ml_knn        the same with each item's `knn` nearest neighbours only (classic item-kNN), recency-weighted;
                conversations only (for a MovieLens user the matrix holds the user's own ratings: a leak)
  ml_knn_all    the same, every mentioned item weighted equally
  ml_pop_recent log of the MovieLens rating count since `recent_since` (what was popular when ReDial was
                collected, 2017-18), scaled to 0..1
  content_max   the largest cosine of a mentioned item's content vector and the item's (conversations only:
                a rating history's 20 items make it slow to train, and `content` covers them)
  genre_liked   cosine of the genre profile of the mentioned items (MovieLens genres) and the item's genres
  text_seeker   cosine of the seeker's own words (all their messages) and the item's content vector
  text_last     cosine of the last message and the item's content vector
  redial_cooc   ReDial train + valid dialogues: how often i was suggested after m was mentioned, sum_m a_m * count
  redial_comention  how often i and m were mentioned in the same ReDial train or valid dialogue
  redial_pop    log of how often i was suggested in the ReDial train dialogues
  redial_mentioned  log of how many ReDial train dialogues mention i at all
  popularity    log of the MovieLens rating count, scaled to 0..1
  quality       mean MovieLens rating, -1..1 (0 with fewer than 10 ratings)
  year          release year scaled to 0..1 over 1920..2020
  before_1970 .. since_2010  1 for the item's release decade (a conversation's taste in eras is not linear)
  pop_before_1970 .. pop_since_2010  popularity times the decade indicator (MovieLens raters favour the
                1990s; people in conversations suggest recent films)
  image         cosine of the photo in the conversation and the item's image vector (0 without a photo;
                no item image vectors are loaded yet, so it is 0 and its weight stays 0: see UNTRAINED)
  constraint    1 when the item passes the conversation's filters (all 1 without filters; no training
                example has filters, so its weight stays 0 and the agent applies filters in retrieval)

The co-occurrence features are normalised per context to a maximum of 1, and log-scaled. ReDial-derived
features of a training dialogue leave that dialogue out (no leak of the target into its own features).
The non-learned data behind the features (MovieLens ratings, ReDial dialogues, content vectors) is rebuilt
from the data folder when the head is loaded; the checkpoint holds only the learned weights and metadata.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

FEATURES = ("text", "content", "genre", "ml_cooc", "redial_cooc", "redial_comention", "redial_pop",
            "redial_mentioned", "popularity", "quality", "year", "before_1970", "1970s", "1980s", "1990s", "2000s",
            "since_2010", "pop_before_1970", "pop_1970s", "pop_1980s", "pop_1990s", "pop_2000s", "pop_since_2010",
            "ml_knn", "ml_knn_all", "ml_pop_recent", "content_max", "genre_liked", "text_seeker", "text_last",
            "image", "constraint")
UNTRAINED = ("image", "constraint")  # see RankingHead.learned
DECADES = ((0, 1970), (1970, 1980), (1980, 1990), (1990, 2000), (2000, 2010), (2010, 3000))
# Words by which a request names a genre (a word starting with one of these, matched on word boundaries).
GENRE_WORDS = {
    "Comedy": "comed funny laugh hilarious humor humour", "Horror": "horror scary spooky frighten creepy slasher",
    "Animation": "animat cartoon pixar disney anime", "Romance": "romanc romantic rom-com romcom chick flick", "Drama": "drama",
    "Sci-Fi": "sci-fi science fiction scifi space alien", "Thriller": "thriller suspense", "Action": "action",
    "Crime": "crime heist gangster mob mafia", "Documentary": "documentar", "Children": "kid kids family children",
    "Fantasy": "fantasy magic wizard", "War": "war soldier", "Western": "western cowboy", "Musical": "musical",
    "Mystery": "mystery detective whodunit", "Adventure": "adventure", "Film-Noir": "noir",
}
_GENRE_RE = {g: re.compile(r"\b(" + "|".join(re.escape(w) for w in words.split()) + ")") for g, words in
             GENRE_WORDS.items()}
CONVERSATION, HISTORY = 0, 1  # kinds of context
SHIPPED = Path(__file__).resolve().parent / "weights" / "ranker-movies.pt"


@dataclass
class RankerConfig:
    dim: int = 32  # size of the item and context vectors
    history: int = 20  # the most recent mentioned/liked items used
    recency: float = 0.75  # weight of an item relative to the one mentioned after it
    content_dim: int = 384  # MiniLM
    redial_files: tuple[str, ...] = ("train.jsonl", "valid.jsonl")  # ReDial dialogues behind the features
    mapping: str = "redial_to_movielens.csv"  # behind the ReDial features: that file, or "recagent" (match_titles)
    knn: int = 100  # neighbours per item in the ml_knn features
    recent_since: int = 2015  # ml_pop_recent counts the MovieLens ratings from this year on
    conversation_embeddings: bool = False  # conversations also scored by <u, v_i> + b_i (False: features only)


# ---- the data behind the features ----------------------------------------------------------------

@dataclass
class DialogueCounts:
    """One ReDial dialogue's contribution to the co-occurrence counts (to leave it out of its own features)."""

    pairs: dict[tuple[int, int], float] = field(default_factory=dict)  # (mentioned, suggested) -> count
    comention: dict[tuple[int, int], float] = field(default_factory=dict)
    suggested: dict[int, float] = field(default_factory=dict)
    mentioned: dict[int, float] = field(default_factory=dict)


class Signals:
    """What the features are computed from: item content vectors, MovieLens ratings, ReDial counts."""

    def __init__(self, ids: list[str], content: np.ndarray, popularity: np.ndarray, quality: np.ndarray,
                 year: np.ndarray, genres: np.ndarray | None = None, ratings=None,
                 dialogues: list[dict] | None = None, mapping: dict | None = None, image: np.ndarray | None = None,
                 recent: np.ndarray | None = None, knn: int = 100):
        from scipy import sparse

        self.ids = list(ids)
        self.pos = {item: n for n, item in enumerate(self.ids)}
        n = len(self.ids)
        self.content = content.astype(np.float32)  # [N, 384], L2-normalised
        self.popularity = popularity.astype(np.float32)  # [N]
        self.quality = quality.astype(np.float32)
        self.year = year.astype(np.float32)
        self.decade = np.zeros((len(self.ids), len(DECADES)), np.float32)  # [N, 6], from year (0..1 scale)
        years = 1920 + 100 * self.year
        for j, (lo, hi) in enumerate(DECADES):
            self.decade[:, j] = (years >= lo) & (years < hi)
        self.genres = genres if genres is not None else np.zeros((len(self.ids), len(GENRE_WORDS)), np.float32)
        self.image = image  # [N, D] or None
        # MovieLens: R [users, N] binary; item norms for the cosine.
        self.R = ratings if ratings is not None else sparse.csr_matrix((0, n), dtype=np.float32)
        counts = np.asarray(self.R.sum(axis=0)).ravel().astype(np.float32)
        self.inv_norm = (1.0 / np.sqrt(counts + 1.0)).astype(np.float32)
        self.RT = self.R.T.tocsr()
        self.knn = item_knn(self.R, knn)  # [N, N] sparse, each row an item's top-`knn` cosine neighbours
        self.recent = (recent if recent is not None else np.zeros(n)).astype(np.float32)  # [N], 0..1
        # ReDial: mentioned -> suggested counts, co-mentions, suggestion counts; per dialogue for leave-out.
        self.per_dialogue: dict[str, DialogueCounts] = {}
        pairs: dict[tuple[int, int], float] = {}
        comention: dict[tuple[int, int], float] = {}
        suggested = np.zeros(n, np.float32)
        mentioned = np.zeros(n, np.float32)
        for dialogue in dialogues or []:
            dc = dialogue_counts(dialogue, mapping or {}, self.pos)
            self.per_dialogue[str(dialogue.get("conversationId", ""))] = dc
            for key, c in dc.pairs.items():
                pairs[key] = pairs.get(key, 0.0) + c
            for key, c in dc.comention.items():
                comention[key] = comention.get(key, 0.0) + c
            for i, c in dc.suggested.items():
                suggested[i] += c
            for i, c in dc.mentioned.items():
                mentioned[i] += c
        self.D = _sparse(pairs, n)
        self.M = _sparse(comention, n)
        self.suggested = suggested
        self.mentioned = mentioned
        self.n_dialogues = len(dialogues or [])

    @property
    def n(self) -> int:
        return len(self.ids)


def item_knn(R, k: int):
    """Item-item cosine over the users' co-ratings, each row keeping its k largest values: sparse [N, N]."""
    from scipy import sparse

    n = R.shape[1]
    if R.shape[0] == 0 or R.nnz == 0 or k <= 0:
        return sparse.csr_matrix((n, n), dtype=np.float32)
    RT = R.T.tocsr()
    inv = 1.0 / np.sqrt(np.maximum(np.asarray(R.sum(axis=0)).ravel(), 1.0)).astype(np.float32)  # [N]
    k = min(k, n - 1)
    rows, cols, vals = [], [], []
    for lo in range(0, n, 1024):  # [chunk, users] @ [users, N], dense per chunk
        sims = np.asarray((RT[lo: lo + 1024] @ R).todense(), np.float32)
        sims *= inv[lo: lo + 1024, None] * inv[None, :]
        sims[np.arange(sims.shape[0]), np.arange(lo, lo + sims.shape[0])] = 0.0  # not its own neighbour
        top = np.argpartition(-sims, k, axis=1)[:, :k]  # [chunk, k]
        v = np.take_along_axis(sims, top, axis=1)
        keep = v > 0
        rows.append((np.arange(lo, lo + sims.shape[0])[:, None] + 0 * top)[keep])
        cols.append(top[keep])
        vals.append(v[keep])
    return sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))


def _sparse(counts: dict[tuple[int, int], float], n: int):
    from scipy import sparse

    if not counts:
        return sparse.csr_matrix((n, n), dtype=np.float32)
    rows, cols = zip(*counts)
    return sparse.csr_matrix((np.fromiter(counts.values(), np.float32), (rows, cols)), shape=(n, n))


def dialogue_counts(dialogue: dict, mapping: dict[str, str], pos: dict[str, int]) -> DialogueCounts:
    """The co-occurrence counts one dialogue adds: earlier mention -> suggested movie, co-mentions, suggestions."""
    from .redial import MENTION

    recommender = dialogue.get("respondentWorkerId")
    questions = dialogue.get("respondentQuestions") or {}
    out = DialogueCounts()
    earlier: list[int] = []
    for message in dialogue.get("messages", []):
        ids = [pos[mapping[r]] for r in dict.fromkeys(MENTION.findall(message.get("text", "")))
               if r in mapping and mapping[r] in pos]
        rids = [r for r in dict.fromkeys(MENTION.findall(message.get("text", ""))) if r in mapping and mapping[r] in pos]
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


def build_signals(settings, catalog=None, config: RankerConfig | None = None, ratings_rows=None,
                  dialogues: list[dict] | None = None) -> Signals:
    """Signals for the movie catalog from the data folder. ratings_rows: (userId, movieId) pairs to use instead
    of all of ratings.csv (the MovieLens evaluation leaves each user's last rating out)."""
    from .catalog import load_catalog
    from .models import embed_texts
    from .redial import load_dialogues, redial_dir

    config = config or RankerConfig()
    catalog = catalog or load_catalog("movies", settings)
    items = catalog.items
    ids = [it.id for it in items]
    content = embed_texts([it.document() for it in items], settings)
    max_ratings = max(int(it.metadata.get("ratings", 0) or 0) for it in items) or 1
    popularity = np.array([math.log1p(int(it.metadata.get("ratings", 0) or 0)) / math.log1p(max_ratings)
                           for it in items], np.float32)
    quality = np.array([(float(it.metadata.get("rating", 3.0)) - 3.0) / 2.0
                        if int(it.metadata.get("ratings", 0) or 0) >= 10 else 0.0 for it in items], np.float32)
    year = np.array([min(max((int(it.metadata.get("year", 1990) or 1990) - 1920) / 100.0, 0.0), 1.0)
                     for it in items], np.float32)
    all_rows = read_ratings(settings)
    if ratings_rows is None:
        ratings_rows = [(u, m) for u, m, _, _ in all_rows]
    recent = recent_popularity(all_rows, set(ratings_rows), ids, config.recent_since)
    genres = np.array([[g in (it.metadata.get("genres") or []) for g in GENRE_WORDS] for it in items], np.float32)
    R = ratings_matrix(ratings_rows, ids)
    mapping = {}
    root = settings.require_data() / "redial"
    if dialogues is None and root.is_dir():
        dialogues = []
        for name in config.redial_files:
            if (redial_dir(settings) / name).is_file():
                dialogues.extend(load_dialogues(redial_dir(settings) / name))
    if dialogues:
        mapping = signal_mapping(settings, config, catalog)
    return Signals(ids, content, popularity, quality, year, genres, R, dialogues, mapping, recent=recent,
                   knn=config.knn)


def recent_popularity(rows, known: set, ids: list[str], since: int) -> np.ndarray:
    """[N] log1p of each item's rating count from the year `since` on (only (user, item) pairs in `known`),
    scaled to 0..1."""
    import datetime

    start = datetime.datetime(since, 1, 1, tzinfo=datetime.timezone.utc).timestamp()
    pos = {item: n for n, item in enumerate(ids)}
    counts = np.zeros(len(ids), np.float32)
    for user, movie, _rating, ts in rows:
        if ts >= start and movie in pos and (user, movie) in known:
            counts[pos[movie]] += 1.0
    counts = np.log1p(counts)
    return counts / max(float(counts.max()), 1e-6)


def signal_mapping(settings, config: RankerConfig, catalog) -> dict[str, str]:
    """ReDial id -> MovieLens id for the ReDial features: a CSV in the redial folder, or recagent's matcher."""
    from .redial import default_mapping, load_mapping, match_titles, redial_dir, redial_titles

    if config.mapping == "recagent":
        names = redial_titles(redial_dir(settings) / "movies_with_mentions.csv")
        return {r: m for r, (m, _) in match_titles(names, catalog.items).items()}
    if config.mapping == "redial_to_movielens.csv":
        return default_mapping(settings)
    return load_mapping(redial_dir(settings) / config.mapping)


def read_ratings(settings) -> list[tuple[str, str, float, int]]:
    """MovieLens ratings.csv as (userId, movieId, rating, timestamp) rows."""
    import csv

    path = settings.require_data() / "movielens" / "ratings.csv"
    with open(path, newline="") as fh:
        return [(r["userId"], r["movieId"], float(r["rating"]), int(r["timestamp"])) for r in csv.DictReader(fh)]


def ratings_matrix(rows, ids: list[str]):
    """(userId, movieId) rows -> binary CSR matrix [users, N] (users in order of first appearance)."""
    from scipy import sparse

    pos = {item: n for n, item in enumerate(ids)}
    users: dict[str, int] = {}
    r, c = [], []
    for user, movie in rows:
        if movie in pos:
            r.append(users.setdefault(user, len(users)))
            c.append(pos[movie])
    m = sparse.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(max(len(users), 1), len(ids)))
    m.data[:] = 1.0  # duplicates summed -> binary
    m.user_index = users  # type: ignore[attr-defined]
    return m


# ---- contexts and features ---------------------------------------------------------------------

@dataclass
class Context:
    """What the ranking head knows about one conversation or user."""

    items: list[str] = field(default_factory=list)  # liked or mentioned item ids, oldest first
    text: str = ""  # the text request (the conversation so far)
    kind: int = CONVERSATION
    exclude: set[str] = field(default_factory=set)  # never ranked (mentioned earlier, shown, disliked)
    disliked: list[str] = field(default_factory=list)
    text_vector: np.ndarray | None = None  # [384]; computed from text when missing
    seeker_text: str = ""  # the user's own words (all their messages); "" -> the text request is used
    last_text: str = ""  # the last message; "" -> the text request is used
    seeker_vector: np.ndarray | None = None  # [384] of seeker_text
    last_vector: np.ndarray | None = None  # [384] of last_text
    image_vector: np.ndarray | None = None  # a photo's vector, in the space of Signals.image
    allowed: np.ndarray | None = None  # [N] bool: items passing the filters (None: all)
    user_row: int | None = None  # MovieLens user row to leave out of ml_cooc (the user's own ratings)
    dialogue: str | None = None  # ReDial dialogue to leave out of the ReDial counts (training only)


def recency_weights(n: int, recency: float) -> np.ndarray:
    """Weights of n items, oldest first, the newest weighing most; they sum to 1."""
    if n == 0:
        return np.zeros(0, np.float32)
    w = recency ** np.arange(n - 1, -1, -1, dtype=np.float32)
    return (w / w.sum()).astype(np.float32)


def requested_genres(text: str) -> np.ndarray:
    """[G] 1 for each genre the text names (GENRE_WORDS), else 0."""
    text = (text or "").lower()
    return np.array([bool(rx.search(text)) for rx in _GENRE_RE.values()], np.float32)


def _rownorm(x: np.ndarray) -> np.ndarray:
    """log1p, then each row scaled to a maximum of 1 (rows of zeros stay zero)."""
    x = np.log1p(np.where(x > 1e-4, x, 0.0))  # leave-one-out subtraction leaves float residue
    top = x.max(axis=1, keepdims=True)
    return np.divide(x, top, out=np.zeros_like(x), where=top > 0)


def context_items(signals: Signals, ctx: Context, config: RankerConfig) -> tuple[np.ndarray, np.ndarray]:
    """The positions and recency weights of the context's last `history` known items."""
    idx = [signals.pos[i] for i in ctx.items if i in signals.pos][-config.history:]
    return np.array(idx, np.int64), recency_weights(len(idx), config.recency)


def features(signals: Signals, contexts: list[Context], config: RankerConfig) -> np.ndarray:
    """Feature tensor [B, N, F] (F = len(FEATURES)) for a batch of contexts over the whole catalog."""
    from scipy import sparse

    b, n = len(contexts), signals.n
    # A [B, N]: each context's recency weights over its items.
    rows, cols, vals = [], [], []
    for k, ctx in enumerate(contexts):
        idx, w = context_items(signals, ctx, config)
        rows += [k] * len(idx)
        cols += idx.tolist()
        vals += w.tolist()
    A = sparse.csr_matrix((np.array(vals, np.float32), (rows, cols)), shape=(b, n))
    out = np.zeros((b, n, len(FEATURES)), np.float32)
    f = {name: j for j, name in enumerate(FEATURES)}
    # text: [B, 384] @ [384, N]
    tv = np.stack([ctx.text_vector if ctx.text_vector is not None else np.zeros(signals.content.shape[1], np.float32)
                   for ctx in contexts])
    out[:, :, f["text"]] = tv @ signals.content.T
    # content: the weighted mean of the items' content vectors against every item's
    mean = np.asarray(A @ signals.content)
    mean /= np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-6)
    out[:, :, f["content"]] = mean @ signals.content.T
    # content_max, genre_liked: per context, over its items' content vectors [L, 384] and genres [L, G]
    gnorm = np.maximum(np.linalg.norm(signals.genres, axis=1), 1e-6)  # [N]
    for k, ctx in enumerate(contexts):
        idx, _ = context_items(signals, ctx, config)
        if len(idx) and ctx.kind == CONVERSATION:
            out[k, :, f["content_max"]] = (signals.content[idx] @ signals.content.T).max(0)  # [L, N] -> [N]
        if len(idx):
            profile = signals.genres[idx].mean(0)  # [G]
            out[k, :, f["genre_liked"]] = (signals.genres @ profile) / (gnorm * max(np.linalg.norm(profile), 1e-6))
    # text_seeker, text_last: [B, 384] @ [384, N]; without their own texts, the text request stands in
    for name, attr in (("text_seeker", "seeker_vector"), ("text_last", "last_vector")):
        v = np.stack([getattr(c, attr) if getattr(c, attr) is not None else tv[k] for k, c in enumerate(contexts)])
        out[:, :, f[name]] = v @ signals.content.T
    # ml_knn, ml_knn_all: A [B, N] (recency weights) or uniform weights over the items @ knn [N, N]
    conv = np.array([c.kind == CONVERSATION for c in contexts], np.float32)[:, None]  # [B, 1]
    uniform = A.copy()
    uniform.data[:] = 1.0
    uniform = sparse.diags(1.0 / np.maximum(np.asarray(uniform.sum(axis=1)).ravel(), 1.0)) @ uniform
    out[:, :, f["ml_knn"]] = _rownorm((A @ signals.knn).toarray() * 100.0) * conv
    out[:, :, f["ml_knn_all"]] = _rownorm((uniform @ signals.knn).toarray() * 100.0) * conv
    out[:, :, f["ml_pop_recent"]] = signals.recent[None, :]
    # ml_cooc: cosine item-kNN through the users: (A / sqrt(n_m)) R^T R / sqrt(n_i), the own user left out
    if signals.R.shape[0] > 0:
        U = (A.multiply(signals.inv_norm[None, :])).tocsr() @ signals.RT  # [B, users]
        U = U.toarray() if sparse.issparse(U) else np.asarray(U)
        for k, ctx in enumerate(contexts):
            if ctx.user_row is not None and ctx.user_row < U.shape[1]:
                U[k, ctx.user_row] = 0.0
        S = np.asarray(signals.RT @ U.T).T  # [B, N]
        out[:, :, f["ml_cooc"]] = _rownorm(S * signals.inv_norm[None, :] * 100.0)
    # ReDial counts (the context's own dialogue left out)
    D = (A @ signals.D).toarray()
    M = (A @ signals.M).toarray()
    sugg = np.broadcast_to(signals.suggested, (b, n)).copy()
    ment = np.broadcast_to(signals.mentioned, (b, n)).copy()
    for k, ctx in enumerate(contexts):
        own = signals.per_dialogue.get(ctx.dialogue) if ctx.dialogue else None
        if own is None:
            continue
        weight = dict(zip(A.indices[A.indptr[k]:A.indptr[k + 1]], A.data[A.indptr[k]:A.indptr[k + 1]]))
        for (m, i), c in own.pairs.items():
            D[k, i] -= weight.get(m, 0.0) * c
        for (m, i), c in own.comention.items():
            M[k, i] -= weight.get(m, 0.0) * c
        for i, c in own.suggested.items():
            sugg[k, i] -= c
        for i, c in own.mentioned.items():
            ment[k, i] -= c
    out[:, :, f["redial_cooc"]] = _rownorm(D * 10.0)
    out[:, :, f["redial_comention"]] = _rownorm(M * 10.0)
    top = math.log1p(max(float(signals.suggested.max()), 1.0))
    out[:, :, f["redial_pop"]] = np.log1p(np.maximum(sugg, 0.0)) / top
    top = math.log1p(max(float(signals.mentioned.max()), 1.0))
    out[:, :, f["redial_mentioned"]] = np.log1p(np.maximum(ment, 0.0)) / top
    asked = np.stack([requested_genres(ctx.text) for ctx in contexts])  # [B, G]
    out[:, :, f["genre"]] = (asked @ signals.genres.T) / np.maximum(asked.sum(1, keepdims=True), 1.0)
    out[:, :, f["popularity"]] = signals.popularity[None, :]
    out[:, :, f["quality"]] = signals.quality[None, :]
    out[:, :, f["year"]] = signals.year[None, :]
    first = f["before_1970"]
    out[:, :, first:first + len(DECADES)] = signals.decade[None, :, :]
    first = f["pop_before_1970"]
    out[:, :, first:first + len(DECADES)] = (signals.decade * signals.popularity[:, None])[None, :, :]
    if signals.image is not None:
        for k, ctx in enumerate(contexts):
            if ctx.image_vector is not None:
                out[k, :, f["image"]] = signals.image @ ctx.image_vector
    for k, ctx in enumerate(contexts):
        out[k, :, f["constraint"]] = 1.0 if ctx.allowed is None else ctx.allowed.astype(np.float32)
    return out


# ---- the model -----------------------------------------------------------------------------------

def _torch():
    import torch

    return torch


def make_head(n_items: int, config: RankerConfig):
    """The RankingHead module (built lazily so that importing this file does not import torch)."""
    torch = _torch()
    nn = torch.nn

    class RankingHead(nn.Module):
        def __init__(self):
            super().__init__()
            d = config.dim
            self.item_id = nn.Embedding(n_items, d)  # E_id [N, d]
            nn.init.normal_(self.item_id.weight, std=0.01)
            self.item_content = nn.Linear(config.content_dim, d, bias=False)  # P_item [384 -> d]
            self.text = nn.Linear(config.content_dim, d, bias=False)  # P_text [384 -> d]
            self.item_bias = nn.Embedding(n_items, 1)  # b_i [N, 1]
            nn.init.zeros_(self.item_bias.weight)
            self.content_bias = nn.Linear(config.content_dim, 2, bias=False)  # [384 -> kinds]
            nn.init.zeros_(self.content_bias.weight)
            self.feature_weights = nn.Parameter(torch.zeros(2, len(FEATURES)))  # w [kinds, F]
            # Features without a training signal yet (no photos, no filters in the training data) keep weight
            # 0: a constant feature's gradient is float noise, which Adam would turn into random steps.
            self.register_buffer("learned", torch.tensor([[f not in UNTRAINED for f in FEATURES]] * 2,
                                                         dtype=torch.float32), persistent=False)

        def item_vectors(self, content):  # content [N, 384] -> [N, d]
            return self.item_id.weight + self.item_content(content)

        def forward(self, hist, hist_w, text, kind, feats, content):
            # hist [B, L] item positions (0-padded), hist_w [B, L] recency weights (0 on padding),
            # text [B, 384], kind [B], feats [B, N, F], content [N, 384] -> scores [B, N]
            # The per-item parameters (E_id, b_i) learn from rating histories only: conversation examples
            # (a few hundred dialogues) would memorise their own items, which does not carry over to new
            # dialogues. Conversations train the shared parts: projections, feature weights, content bias.
            proj = self.item_content(content)  # [N, d]
            conv = (kind == CONVERSATION)[:, None]  # [B, 1]
            ids, ids_fixed = self.item_id.weight, self.item_id.weight.detach()  # [N, d]
            hv = torch.where(conv[:, :, None], ids_fixed[hist], ids[hist]) + proj[hist]  # [B, L, d]
            u = (hv * hist_w.unsqueeze(-1)).sum(1) + self.text(text)  # [B, d]
            dot = torch.where(conv, u @ (ids_fixed + proj).T, u @ (ids + proj).T)  # [B, N]
            b = self.item_bias.weight.T  # [1, N]
            bias = torch.where(conv, b.detach(), b) + self.content_bias(content).T[kind]  # [B, N]
            if not config.conversation_embeddings:  # conversations: the feature mixture alone
                dot, bias = dot * ~conv, bias * ~conv
            w = (self.feature_weights * self.learned)[kind]  # [B, F]
            return dot + bias + torch.einsum("bnf,bf->bn", feats, w)

    return RankingHead()


def batch_inputs(signals: Signals, contexts: list[Context], config: RankerConfig):
    """Tensors for RankingHead.forward from contexts (text vectors must be set)."""
    torch = _torch()
    L = max(1, max(len(context_items(signals, c, config)[0]) for c in contexts))
    hist = np.zeros((len(contexts), L), np.int64)
    hist_w = np.zeros((len(contexts), L), np.float32)
    for k, ctx in enumerate(contexts):
        idx, w = context_items(signals, ctx, config)
        hist[k, :len(idx)] = idx
        hist_w[k, :len(idx)] = w
    text = np.stack([c.text_vector if c.text_vector is not None else np.zeros(config.content_dim, np.float32)
                     for c in contexts])
    kind = np.array([c.kind for c in contexts], np.int64)
    feats = features(signals, contexts, config)
    return (torch.from_numpy(hist), torch.from_numpy(hist_w), torch.from_numpy(text.astype(np.float32)),
            torch.from_numpy(kind), torch.from_numpy(feats))


def exclusion_mask(signals: Signals, contexts: list[Context]) -> np.ndarray:
    """[B, N] True where an item must not be ranked."""
    mask = np.zeros((len(contexts), signals.n), bool)
    for k, ctx in enumerate(contexts):
        for item in ctx.exclude:
            j = signals.pos.get(item)
            if j is not None:
                mask[k, j] = True
    return mask


# ---- loading and scoring ------------------------------------------------------------------------

class Ranker:
    """A trained head with its signals: scores every catalog item for a context."""

    def __init__(self, head, config: RankerConfig, signals: Signals, meta: dict):
        self.head = head.eval()
        self.config = config
        self.signals = signals
        self.meta = meta
        self._content = _torch().from_numpy(signals.content)

    def embed(self, contexts: list[Context], settings=None) -> None:
        """Fill in the contexts' text vectors (MiniLM) from their texts."""
        embed_contexts(contexts, settings)

    def score(self, contexts: list[Context], settings=None, batch: int = 32) -> np.ndarray:
        """Scores [B, N] over the whole catalog (signals.ids order); excluded items get -inf."""
        torch = _torch()
        self.embed(contexts, settings)
        out = []
        with torch.no_grad():
            for lo in range(0, len(contexts), batch):
                part = contexts[lo: lo + batch]
                hist, hist_w, text, kind, feats = batch_inputs(self.signals, part, self.config)
                scores = self.head(hist, hist_w, text, kind, feats, self._content).numpy()
                scores[exclusion_mask(self.signals, part)] = -np.inf
                out.append(scores)
        return np.concatenate(out) if out else np.zeros((0, self.signals.n), np.float32)

    def top(self, context: Context, k: int = 10, settings=None) -> list[tuple[str, float]]:
        scores = self.score([context], settings)[0]
        order = np.argsort(-scores)[:k]
        return [(self.signals.ids[j], float(scores[j])) for j in order if np.isfinite(scores[j])]


def embed_contexts(contexts: list[Context], settings=None) -> None:
    """Fill in the contexts' missing text vectors (MiniLM) from their texts, in one batch."""
    from .models import embed_texts

    todo = [(c, vec, text) for c in contexts
            for vec, text in (("text_vector", c.text), ("seeker_vector", c.seeker_text), ("last_vector", c.last_text))
            if getattr(c, vec) is None and text.strip()]
    if todo:
        for (c, vec, _), v in zip(todo, embed_texts([t for _, _, t in todo], settings)):
            setattr(c, vec, v)


def checkpoint_path(settings, catalog: str = "movies") -> Path:
    """Where train-ranker writes by default; load_ranker looks here first, then at the shipped checkpoint."""
    return settings.home / "ranker" / f"ranker-{catalog}.pt"


def save_checkpoint(path: Path, head, config: RankerConfig, meta: dict, ids: list[str]) -> None:
    """Write atomically (a temporary file, then a rename)."""
    torch = _torch()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    state = {k: v.detach().cpu() for k, v in head.state_dict().items()}
    torch.save({"state_dict": state, "config": asdict(config), "meta": meta, "ids": ids}, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path) -> dict:
    torch = _torch()
    return torch.load(path, map_location="cpu", weights_only=False)


_LOADED: dict = {}


def find_checkpoint(settings, catalog: str = "movies") -> Path | None:
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


def load_ranker(settings, catalog: str = "movies", path: Path | None = None, signals: Signals | None = None):
    """The trained ranking head for a catalog, or None when there is no checkpoint for it."""
    path = Path(path) if path else find_checkpoint(settings, catalog)
    if path is None or not path.is_file():
        return None
    key = (str(path), path.stat().st_mtime, str(settings.data), id(signals))
    if key in _LOADED:
        return _LOADED[key]
    ckpt = load_checkpoint(path)
    if ckpt.get("meta", {}).get("catalog", "movies") != catalog:
        return None
    config = RankerConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in ckpt["config"].items()})
    signals = signals or build_signals(settings, config=config)
    head = make_head(len(ckpt["ids"]), config)
    head.load_state_dict(ckpt["state_dict"])
    if ckpt["ids"] != signals.ids:
        # The catalog changed since training: keep the learned rows of the items that are still there.
        head = _remap(head, ckpt["ids"], signals.ids, config)
    ranker = Ranker(head, config, signals, {**ckpt.get("meta", {}), "path": str(path)})
    _LOADED[key] = ranker
    return ranker


def _remap(head, old_ids: list[str], new_ids: list[str], config: RankerConfig):
    torch = _torch()
    new = make_head(len(new_ids), config)
    state = head.state_dict()
    old_pos = {i: n for n, i in enumerate(old_ids)}
    keep = [(n, old_pos[i]) for n, i in enumerate(new_ids) if i in old_pos]
    with torch.no_grad():
        new.load_state_dict({k: v for k, v in state.items() if not k.startswith(("item_id", "item_bias"))},
                            strict=False)
        if keep:
            dst, src = map(list, zip(*keep))
            new.item_id.weight[dst] = state["item_id.weight"][src]
            new.item_bias.weight[dst] = state["item_bias.weight"][src]
    return new


def conversation_text(messages: list[tuple[str, str]], last: int = 6) -> str:
    """The text request from a conversation's last messages (role: text lines)."""
    return "\n".join(f"{role}: " + re.sub(r"\s+", " ", text).strip() for role, text in messages[-last:])


def conversation_context(messages: list[tuple[str, str]], items: list[str], exclude: set[str], user_role="seeker",
                         **kw) -> Context:
    """A conversation's context: its items, the text of its last messages, the user's own words (the last 1,000
    characters of them; "movie" when the user has said nothing yet) and its last message."""
    seeker = " ".join(text for role, text in messages if role == user_role)[-1000:]
    return Context(items=list(items), text=conversation_text(messages), exclude=set(exclude),
                   seeker_text=seeker or "movie", last_text=messages[-1][1] if messages else "movie", **kw)
