"""`retrieve_candidates`: text, photo, or both fused, against a catalog's text and image vectors.

- by text: the words against the items' text vectors (MiniLM);
- words against photos: the encoder's text vector against the image vectors, plus, with attribute heads, the
  heads' say on a colour or kind the words name ("red t-shirt");
- by photo: PHOTO_SELF * cos(photo, item photo) + (1 - PHOTO_SELF) * cos(photo, item text) when the image
  encoder shares the text space (the offline default): an item is found both because its photo looks
  like the query and because its description reads like it (cleaner for type and colour). A candidate
  that geometric verification shows to be the query's own source photo (cropped, resized, re-encoded)
  comes first: near-duplicate lookup. When the tower has attribute heads (fashion: articleType, baseColour),
  each candidate also gains weight * log p(its catalog value | the photo), the weights chosen on validation
  photos when the tower was trained: the photo's predicted kind and colour, checked against the catalog's
  own fields, keep the top of the list to one kind and one colour;
- fused: IMAGE_WEIGHT * (the photo score) + TEXT_WEIGHT * cos(words, item text). The photo says what kind of
  thing and how it looks; the words say what to change ("but in black" also arrives as a filter).
Candidates are the union of the best POOL items of each list, then scored exactly on every term.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from .errors import ImageError
from .filters import where_fields
from .images import ImageEncoder, duplicate_scores, image_encoder, load_image
from .index import CatalogIndex, Hit
from .models import embed_texts

PHOTO_SELF = 0.5
IMAGE_WEIGHT = 0.6
TEXT_WEIGHT = 0.4
POOL = 100  # candidates taken from each list before fusing
VERIFY = 30  # candidates checked for being the very same photo
DUPLICATE_THRESHOLD = 0.95  # duplicate_scores above this: the same photo (measured in evals/eval_images.py)
Sims = TypeVar("Sims", float, np.ndarray)  # one cosine similarity, or an array of them


def photo_score(image_sim: Sims, text_sim: Sims) -> Sims:
    """How well a candidate matches a query photo before the heads' say, from cos(photo, its photo) and cos(photo,
    its adapted text): retrieval ranks by it, and the heads' weights are chosen for it (tools/train)."""
    return PHOTO_SELF * image_sim + (1 - PHOTO_SELF) * text_sim


def retrieve_candidates(
    index: CatalogIndex,
    query: str | None = None,
    photo: str | Path | bytes | None = None,
    by: str | None = None,
    k: int = 10,
    where: dict | None = None,
    exclude: Iterable[str] = (),
    photo_vector: np.ndarray | None = None,
) -> list[Hit]:
    """The k best items for a text query, a photo (path, bytes or its vector), or both ("fused")."""
    has_photo = photo is not None or photo_vector is not None
    by = by or ("fused" if has_photo and query else "image" if has_photo else "text")
    if by == "text" or (by == "fused" and not has_photo):
        return index.search(query or "", k=k, where=where, exclude=exclude)
    encoder = image_encoder(index.settings, index.catalog)
    image = load_image(photo) if photo is not None else None
    if image is not None and photo_vector is None:
        photo_vector = encoder.embed_images([image])[0]
    if not has_photo:  # words against photos
        return _words_against_photos(index, encoder, query or "", k, where, exclude)
    photo_vector = np.asarray(photo_vector, dtype=np.float32)
    text_vector = embed_texts([query], index.settings)[0] if by == "fused" and query else None
    hits, looks = _photo_hits(index, encoder, photo_vector, text_vector, where, set(exclude))
    if image is not None:  # the source photo is looked for among the best-looking candidates, field terms apart
        hits = _source_first(image, hits, sorted(hits, key=lambda h: -looks[h.id]))
    return hits[:k]


def _photo_hits(
    index: CatalogIndex,
    encoder: ImageEncoder,
    photo_vector: np.ndarray,
    text_vector: np.ndarray | None,
    where: dict | None,
    exclude: set[str],
) -> tuple[list[Hit], dict[str, float]]:
    """The candidates of a photo search (with words: fused), best first, and how each looks (its score before the
    heads' field terms and the words: where the query's own photo ranks high)."""
    pools = [index.search_images(photo_vector, k=POOL, where=where, exclude=exclude, encoder_key=encoder.key)]
    if encoder.shares_text_space:  # the photo also finds items whose description reads like it
        pools.append(index.search(vector=photo_vector, k=POOL, where=where, exclude=exclude))
    if text_vector is not None:
        pools.append(index.search(vector=text_vector, k=POOL, where=where, exclude=exclude))
    candidates = {h.id: h for pool in pools for h in pool}
    if not candidates:
        return [], {}
    ids = list(candidates)
    photos, texts = index.vectors(ids, images=True), index.vectors(ids)
    if encoder.shares_text_space and texts:  # through the tower's text adapter, as in training
        texts_seen = list(texts)
        adapted = dict(zip(texts_seen, encoder.adapt_texts(np.stack([texts[i] for i in texts_seen]))))
    # a field the request already constrains ("but in black" -> baseColour) is not the photo's to decide
    facets = encoder.photo_facet_terms(photo_vector, [candidates[i].metadata for i in ids], skip=where_fields(where))
    hits, looks = [], {}
    for n, item_id in enumerate(ids):
        image_sim = float(photos[item_id] @ photo_vector) if item_id in photos else 0.0
        score = image_sim
        if encoder.shares_text_space and item_id in texts:
            score = photo_score(image_sim, float(adapted[item_id] @ photo_vector))
        looks[item_id] = score
        for name, terms in facets.items():
            score += encoder.facet_weights[name] * float(terms[n])
        if text_vector is not None:
            text_sim = float(texts[item_id] @ text_vector) if item_id in texts else 0
            score = IMAGE_WEIGHT * score + TEXT_WEIGHT * text_sim
        hits.append(Hit(item_id, candidates[item_id].title, score, candidates[item_id].metadata))
    hits.sort(key=lambda h: -h.score)
    return hits, looks


def _words_against_photos(
    index: CatalogIndex, encoder: ImageEncoder, query: str, k: int, where: dict | None, exclude: Iterable[str]
) -> list[Hit]:
    """Photos closest to the words; with attribute heads, a colour or kind the words name outright ("red
    t-shirt") also counts as weight * log p(that value | the photo)."""
    vector = encoder.embed_texts([query])[0]
    if not encoder.named_field_values(query):
        return index.search_images(vector, k=k, where=where, exclude=exclude, encoder_key=encoder.key)
    pool = index.search_images(vector, k=max(POOL, k), where=where, exclude=exclude, encoder_key=encoder.key)
    photos = index.vectors([h.id for h in pool], images=True)
    pool = [h for h in pool if h.id in photos]
    if not pool:
        return []
    terms = encoder.text_facet_terms(query, np.stack([photos[h.id] for h in pool]))
    hits = [Hit(h.id, h.title, h.score + float(t), h.metadata) for h, t in zip(pool, terms)]
    return sorted(hits, key=lambda h: -h.score)[:k]


def _source_first(image: Image.Image, hits: list[Hit], lookalikes: list[Hit]) -> list[Hit]:
    """Move the candidate that is the query's own source photo, if one is, to the front of `hits` (checked
    among the first VERIFY of `lookalikes`: the same hits ordered by how they look)."""
    checked, photos = [], []
    for hit in lookalikes[:VERIFY]:
        path = hit.metadata.get("_image")
        if not path:
            continue
        try:
            photos.append(load_image(path))
            checked.append(hit)
        except ImageError:
            continue
    if not checked:
        return hits
    scores = duplicate_scores(image, photos)
    best = int(np.argmax(scores))
    if scores[best] < DUPLICATE_THRESHOLD:
        return hits
    source = checked[best]
    return [source] + [h for h in hits if h.id != source.id]


def cosine_top(matrix: np.ndarray, vector: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k rows of an L2-normalised matrix closest to a vector (exact; for evaluations)."""
    sims = matrix @ vector
    k = min(k, len(sims))
    top = np.argpartition(-sims, k - 1)[:k]
    return top[np.argsort(-sims[top])]
