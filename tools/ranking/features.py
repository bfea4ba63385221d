"""The ranking head's input features, computed from its Signals for a batch of contexts (numpy, no torch).

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
The data behind the features (Signals: content vectors, MovieLens ratings, ReDial counts) is prepared once
from the data folder by tools/datasets/ranking_signals.py and loaded from the home with the head.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import sparse

from recagent.tools.datasets.ranking_signals import Signals
from recagent.tools.models import embed_texts
from recagent.tools.settings import Settings
from recagent.tools.text import GENRE_NAMES

from .config import CONVERSATION, DECADES, FEATURES, RankerConfig

# The genre feature reads a request with the precise genre words (the head's weights were learned on them).
_GENRE_RE = {
    g: re.compile(r"\b(" + "|".join(re.escape(w) for w in words.split()) + ")") for g, words in GENRE_NAMES.items()
}


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
    """[G] 1 for each genre the text names (tools.text.GENRE_NAMES), else 0."""
    text = (text or "").lower()
    return np.array([bool(rx.search(text)) for rx in _GENRE_RE.values()], np.float32)


def _rownorm(x: np.ndarray) -> np.ndarray:
    """log1p, then each row scaled to a maximum of 1 (rows of zeros stay zero)."""
    x = np.log1p(np.where(x > 1e-4, x, 0.0))  # leave-one-out subtraction leaves float residue
    top = x.max(axis=1, keepdims=True)
    return np.divide(x, top, out=np.zeros_like(x), where=top > 0)


def context_items(signals: Signals, ctx: Context, config: RankerConfig) -> tuple[np.ndarray, np.ndarray]:
    """The positions and recency weights of the context's last `history` known items."""
    idx = [signals.pos[i] for i in ctx.items if i in signals.pos][-config.history :]
    return np.array(idx, np.int64), recency_weights(len(idx), config.recency)


_F = {name: j for j, name in enumerate(FEATURES)}  # feature name -> its position in the last axis


def features(signals: Signals, contexts: list[Context], config: RankerConfig) -> np.ndarray:
    """Feature tensor [B, N, F] (F = len(FEATURES)) for a batch of contexts over the whole catalog."""
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
    _text_features(out, signals, contexts)
    _mentioned_item_features(out, signals, contexts, config, A)
    _movielens_features(out, signals, contexts, A)
    _redial_features(out, signals, contexts, A)
    _catalog_features(out, signals, contexts)
    return out


def _text_features(out: np.ndarray, signals: Signals, contexts: list[Context]) -> None:
    """text, text_seeker, text_last: [B, 384] @ [384, N]; without their own texts, the text request stands in."""
    zeros = np.zeros(signals.content.shape[1], np.float32)
    tv = np.stack([ctx.text_vector if ctx.text_vector is not None else zeros for ctx in contexts])
    out[:, :, _F["text"]] = tv @ signals.content.T
    for name, attr in (("text_seeker", "seeker_vector"), ("text_last", "last_vector")):
        v = np.stack([getattr(c, attr) if getattr(c, attr) is not None else tv[k] for k, c in enumerate(contexts)])
        out[:, :, _F[name]] = v @ signals.content.T


def _mentioned_item_features(
    out: np.ndarray, signals: Signals, contexts: list[Context], config: RankerConfig, A: sparse.csr_matrix
) -> None:
    """content (the weighted mean of the items' content vectors against every item's), content_max and
    genre_liked (per context, over its items' content vectors [L, 384] and genres [L, G])."""
    mean = np.asarray(A @ signals.content)
    mean /= np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-6)
    out[:, :, _F["content"]] = mean @ signals.content.T
    gnorm = np.maximum(np.linalg.norm(signals.genres, axis=1), 1e-6)  # [N]
    for k, ctx in enumerate(contexts):
        idx, _ = context_items(signals, ctx, config)
        if len(idx) and ctx.kind == CONVERSATION:
            out[k, :, _F["content_max"]] = (signals.content[idx] @ signals.content.T).max(0)  # [L, N] -> [N]
        if len(idx):
            profile = signals.genres[idx].mean(0)  # [G]
            out[k, :, _F["genre_liked"]] = (signals.genres @ profile) / (gnorm * max(np.linalg.norm(profile), 1e-6))


def _movielens_features(out: np.ndarray, signals: Signals, contexts: list[Context], A: sparse.csr_matrix) -> None:
    """ml_knn, ml_knn_all (A [B, N] recency weights, or uniform weights, @ knn [N, N]), ml_pop_recent, and ml_cooc:
    cosine item-kNN through the users, (A / sqrt(n_m)) R^T R / sqrt(n_i), the context's own user left out."""
    conv = np.array([c.kind == CONVERSATION for c in contexts], np.float32)[:, None]  # [B, 1]
    uniform = A.copy()
    uniform.data[:] = 1.0
    uniform = sparse.diags(1.0 / np.maximum(np.asarray(uniform.sum(axis=1)).ravel(), 1.0)) @ uniform
    out[:, :, _F["ml_knn"]] = _rownorm((A @ signals.knn).toarray() * 100.0) * conv
    out[:, :, _F["ml_knn_all"]] = _rownorm((uniform @ signals.knn).toarray() * 100.0) * conv
    out[:, :, _F["ml_pop_recent"]] = signals.recent[None, :]
    if signals.R.shape[0] > 0:
        U = (A.multiply(signals.inv_norm[None, :])).tocsr() @ signals.RT  # [B, users]
        U = U.toarray() if sparse.issparse(U) else np.asarray(U)
        for k, ctx in enumerate(contexts):
            if ctx.user_row is not None and ctx.user_row < U.shape[1]:
                U[k, ctx.user_row] = 0.0
        S = np.asarray(signals.RT @ U.T).T  # [B, N]
        out[:, :, _F["ml_cooc"]] = _rownorm(S * signals.inv_norm[None, :] * 100.0)


def _redial_features(out: np.ndarray, signals: Signals, contexts: list[Context], A: sparse.csr_matrix) -> None:
    """redial_cooc, redial_comention, redial_pop, redial_mentioned: the ReDial counts, each context's own
    dialogue left out."""
    b, n = len(contexts), signals.n
    D = (A @ signals.D).toarray()
    M = (A @ signals.M).toarray()
    sugg = np.broadcast_to(signals.suggested, (b, n)).copy()
    ment = np.broadcast_to(signals.mentioned, (b, n)).copy()
    for k, ctx in enumerate(contexts):
        own = signals.per_dialogue.get(ctx.dialogue) if ctx.dialogue else None
        if own is None:
            continue
        weight = dict(zip(A.indices[A.indptr[k] : A.indptr[k + 1]], A.data[A.indptr[k] : A.indptr[k + 1]]))
        for (m, i), c in own.pairs.items():
            D[k, i] -= weight.get(m, 0.0) * c
        for (m, i), c in own.comention.items():
            M[k, i] -= weight.get(m, 0.0) * c
        for i, c in own.suggested.items():
            sugg[k, i] -= c
        for i, c in own.mentioned.items():
            ment[k, i] -= c
    out[:, :, _F["redial_cooc"]] = _rownorm(D * 10.0)
    out[:, :, _F["redial_comention"]] = _rownorm(M * 10.0)
    top = math.log1p(max(float(signals.suggested.max()), 1.0))
    out[:, :, _F["redial_pop"]] = np.log1p(np.maximum(sugg, 0.0)) / top
    top = math.log1p(max(float(signals.mentioned.max()), 1.0))
    out[:, :, _F["redial_mentioned"]] = np.log1p(np.maximum(ment, 0.0)) / top


def _catalog_features(out: np.ndarray, signals: Signals, contexts: list[Context]) -> None:
    """genre (the share of the genres the request asks for), popularity, quality, year, the decades and their
    popularity, image (a photo in the context) and constraint (the item passes the context's filters)."""
    asked = np.stack([requested_genres(ctx.text) for ctx in contexts])  # [B, G]
    out[:, :, _F["genre"]] = (asked @ signals.genres.T) / np.maximum(asked.sum(1, keepdims=True), 1.0)
    out[:, :, _F["popularity"]] = signals.popularity[None, :]
    out[:, :, _F["quality"]] = signals.quality[None, :]
    out[:, :, _F["year"]] = signals.year[None, :]
    first = _F["before_1970"]
    out[:, :, first : first + len(DECADES)] = signals.decade[None, :, :]
    first = _F["pop_before_1970"]
    out[:, :, first : first + len(DECADES)] = (signals.decade * signals.popularity[:, None])[None, :, :]
    if signals.image is not None:
        for k, ctx in enumerate(contexts):
            if ctx.image_vector is not None:
                out[k, :, _F["image"]] = signals.image @ ctx.image_vector
    for k, ctx in enumerate(contexts):
        out[k, :, _F["constraint"]] = 1.0 if ctx.allowed is None else ctx.allowed.astype(np.float32)


def exclusion_mask(signals: Signals, contexts: list[Context]) -> np.ndarray:
    """[B, N] True where an item must not be ranked."""
    mask = np.zeros((len(contexts), signals.n), bool)
    for k, ctx in enumerate(contexts):
        for item in ctx.exclude:
            j = signals.pos.get(item)
            if j is not None:
                mask[k, j] = True
    return mask


def embed_contexts(contexts: list[Context], settings: Settings | None = None) -> None:
    """Fill in the contexts' missing text vectors (MiniLM) from their texts, in one batch."""
    todo = [
        (c, vec, text)
        for c in contexts
        for vec, text in (("text_vector", c.text), ("seeker_vector", c.seeker_text), ("last_vector", c.last_text))
        if getattr(c, vec) is None and text.strip()
    ]
    if todo:
        for (c, vec, _), v in zip(todo, embed_texts([t for _, _, t in todo], settings)):
            setattr(c, vec, v)


def conversation_text(messages: list[tuple[str, str]], last: int = 6) -> str:
    """The text request from a conversation's last messages (role: text lines)."""
    return "\n".join(f"{role}: " + re.sub(r"\s+", " ", text).strip() for role, text in messages[-last:])


def conversation_context(
    messages: list[tuple[str, str]], items: list[str], exclude: set[str], user_role: str = "seeker", **kw: Any
) -> Context:
    """A conversation's context: its items, the text of its last messages, the user's own words (the last 1,000
    characters of them; "movie" when the user has said nothing yet) and its last message."""
    seeker = " ".join(text for role, text in messages if role == user_role)[-1000:]
    return Context(
        items=list(items),
        text=conversation_text(messages),
        exclude=set(exclude),
        seeker_text=seeker or "movie",
        last_text=messages[-1][1] if messages else "movie",
        **kw,
    )
