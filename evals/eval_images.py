"""`recagent eval images`: how well photos retrieve, measured on the fashion products held out of training.

Figures (all precision@10 unless said, the query item itself never counted):
- image -> image on the 1,000 held-out photos against the whole fashion index: share of the top 10 with
  the query's articleType, and with its baseColour; beside a random baseline, an 8x8x8 RGB colour
  histogram, and text-only retrieval from the photo's own product name;
- text -> image: "<colour> <type>" queries against the held-out photos only (never trained on), both
  attributes must match, scored as retrieval scores words against photos (cosine, plus the attribute heads'
  say on the colour and kind the words name); cosine alone, and the same queries against every photo in the
  catalog (retrieve_candidates), are printed too;
- near-duplicate lookup: held-out photos perturbed (random 70-90% crop, resize back, JPEG quality 50,
  slight colour jitter) used as queries against the whole index: top-1 and top-10 hit rates.
"""

from __future__ import annotations

import io
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageEnhance
from tqdm import tqdm

from recagent.tools.catalog import Item, load_catalog
from recagent.tools.datasets.splits import fashion_holdout, fashion_holdout_ids
from recagent.tools.images import attribute_phrase, image_encoder, load_image
from recagent.tools.index import CatalogIndex
from recagent.tools.models import embed_texts
from recagent.tools.retrieval import cosine_top, retrieve_candidates
from recagent.tools.settings import Settings

TARGETS = {"articleType": 0.75, "baseColour": 0.65, "text_to_image": 0.65, "near_duplicate_top1": 0.90}
ATTRIBUTES = ("articleType", "baseColour")


def held_out_items(settings: Settings, n: int | None = None, **attributes: str) -> list[Item]:
    """Held-out fashion products (lowest md5 of id first), optionally with given field values."""
    items = fashion_holdout([it for it in load_catalog("fashion", settings).items if it.image])
    chosen = [it for it in items if all(it.metadata.get(k) == v for k, v in attributes.items())]
    return chosen[:n] if n else chosen


def perturb(image: Image.Image, rng: random.Random) -> Image.Image:
    """A near-duplicate: random 70-90% crop, resized back, slight colour jitter, saved as JPEG quality 50."""
    w, h = image.size
    side = rng.uniform(0.7, 0.9)
    cw, ch = int(w * side), int(h * side)
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    out = image.crop((x, y, x + cw, y + ch)).resize((w, h), Image.Resampling.BICUBIC)
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        out = enhancer(out).enhance(rng.uniform(0.9, 1.1))
    buffer = io.BytesIO()
    out.save(buffer, "JPEG", quality=50)
    return load_image(buffer.getvalue())


def colour_histograms(images: Sequence[Image.Image]) -> np.ndarray:
    """The baseline: 8x8x8 RGB histograms, L2-normalised (cosine similarity)."""
    out = []
    for image in images:
        a = np.asarray(image.resize((64, 64))).reshape(-1, 3) // 32
        h = np.bincount(a[:, 0] * 64 + a[:, 1] * 8 + a[:, 2], minlength=512).astype(np.float32)
        out.append(h / np.linalg.norm(h))
    return np.stack(out)


def precision(labels: Sequence[object], query: int, top: Sequence[int] | np.ndarray) -> float:
    """The share of `top` whose label is the query's."""
    return float(np.mean([labels[j] == labels[query] for j in top]))


def both_match(labels: dict[str, list], found: Sequence[int] | np.ndarray, wanted: tuple[str, str]) -> float:
    """The share of `found` whose (baseColour, articleType) is the wanted pair."""
    return float(np.mean([(labels["baseColour"][j], labels["articleType"][j]) == wanted for j in found]))


def evaluate_images(
    settings: Settings,
    near_duplicates: int = 500,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], object] = print,
) -> dict:
    """Run every measurement; returns the figures (also what --json writes)."""
    started = time.perf_counter()
    catalog = load_catalog("fashion", settings)
    items = [it for it in catalog.items if it.image]
    index = CatalogIndex("fashion", settings)
    encoder = image_encoder(settings, "fashion")
    index.index(catalog, progress=progress)
    index.index_images(catalog, encoder, progress=progress)
    holdout = fashion_holdout_ids(catalog.items)
    image_vecs = index.vectors([it.id for it in items], images=True)
    items = [it for it in items if it.id in image_vecs]  # a photo that could not be read is not in the gallery
    ids = [it.id for it in items]
    pos = {i: n for n, i in enumerate(ids)}
    held = [n for n, i in enumerate(ids) if i in holdout]
    photos = np.stack([image_vecs[i] for i in ids])
    text_vecs = index.vectors(ids)
    labels = {a: [it.metadata.get(a) for it in items] for a in ATTRIBUTES}
    rng = random.Random(seed)
    log(f"{len(ids)} photos indexed with encoder {encoder.key}; {len(held)} held-out queries")

    def p_at_10(ranker: Callable[[int], Sequence[int] | np.ndarray]) -> dict[str, float]:
        scores: dict[str, list[float]] = {a: [] for a in ATTRIBUTES}
        for q in held:
            top = [j for j in ranker(q) if j != q][:10]
            for a in ATTRIBUTES:
                scores[a].append(precision(labels[a], q, top))
        return {a: round(float(np.mean(v)), 4) for a, v in scores.items()}

    # image -> image through the real index (HNSW) and retrieve_candidates; exact cosine for the baselines
    def photo_search(q: int) -> list[int]:
        hits = retrieve_candidates(index, photo=items[q].image, photo_vector=photos[q], k=10, exclude={ids[q]})
        return [pos[h.id] for h in hits if h.id in pos]

    def photos_only(q: int) -> list[int]:
        hits = index.search_images(photos[q], k=11, encoder_key=encoder.key)
        return [pos[h.id] for h in hits if h.id in pos]

    hist = colour_histograms(
        [load_image(it.image or "") for it in tqdm(items, desc="colour histograms", disable=not progress, unit="img")]
    )
    name_vecs = embed_texts([items[q].title for q in held], settings)
    name_of = {q: v for q, v in zip(held, name_vecs)}
    texts = np.stack([text_vecs[i] for i in ids])
    image_to_image = {
        "recagent photo search": p_at_10(photo_search),
        "recagent, photos only": p_at_10(photos_only),
        "colour histogram 8x8x8": p_at_10(lambda q: cosine_top(hist, hist[q], 11)),
        "text only (product name)": p_at_10(lambda q: cosine_top(texts, name_of[q], 11)),
        "random": p_at_10(lambda q: rng.sample(range(len(ids)), 11)),
    }

    # text -> image: "<colour> <type>" queries, both must match
    combos = Counter((labels["baseColour"][q], labels["articleType"][q]) for q in held)
    queries = [(c, t) for (c, t), n in combos.most_common() if n >= 10 and c and t]
    held_set = np.array(held)

    phrases = [attribute_phrase(c, t) for c, t in queries]
    query_vecs = encoder.embed_texts(phrases)
    rows: list[dict] = []
    for (colour, kind), phrase, vec in zip(queries, phrases, query_vecs):
        # as retrieve_candidates scores words against photos: cosine plus the heads' say on named values
        cosine = photos[held_set] @ vec
        local = held_set[np.argsort(-(cosine + encoder.text_facet_terms(phrase, photos[held_set])))[:10]]
        plain = held_set[np.argsort(-cosine)[:10]]
        whole = [pos[h.id] for h in retrieve_candidates(index, query=phrase, by="image", k=10) if h.id in pos]
        wanted = (colour, kind)
        rows.append(
            {
                "query": phrase,
                "held_out_gallery": both_match(labels, local, wanted),
                "held_out_gallery_cosine_only": both_match(labels, plain, wanted),
                "whole_catalog": both_match(labels, whole, wanted),
            }
        )
    text_to_image: dict = {"queries": rows}
    for key in ("held_out_gallery", "held_out_gallery_cosine_only", "whole_catalog"):
        text_to_image[key] = round(float(np.mean([r[key] for r in rows])), 4)

    # near-duplicates: the photo search (with its source-photo check), the photos-only nearest neighbour,
    # and the colour histogram
    chosen = held[:near_duplicates]
    found = {"recagent photo search": [0, 0], "recagent, photos only": [0, 0], "colour histogram 8x8x8": [0, 0]}
    for q in tqdm(chosen, desc="near-duplicates", disable=not progress, unit="img"):
        query = perturb(load_image(items[q].image or ""), rng)
        vec = encoder.embed_images([query])[0]
        buffer = io.BytesIO()
        query.save(buffer, "PNG")
        ranked = {
            "recagent photo search": [
                h.id for h in retrieve_candidates(index, photo=buffer.getvalue(), photo_vector=vec, k=10)
            ],
            "recagent, photos only": [h.id for h in index.search_images(vec, k=10, encoder_key=encoder.key)],
            "colour histogram 8x8x8": [ids[j] for j in cosine_top(hist, colour_histograms([query])[0], 10)],
        }
        for name, got in ranked.items():
            found[name][0] += got[:1] == [ids[q]]
            found[name][1] += ids[q] in got
    n = max(1, len(chosen))
    near = {name: {"top1": round(a / n, 4), "top10": round(b / n, 4)} for name, (a, b) in found.items()}

    figures = {
        "encoder": encoder.key,
        "gallery": len(ids),
        "held_out_queries": len(held),
        "near_duplicate_queries": n,
        "image_to_image_p@10": image_to_image,
        "text_to_image_p@10": text_to_image,
        "near_duplicate": near,
        "targets": TARGETS,
        "seconds": round(time.perf_counter() - started, 1),
    }
    ours = image_to_image["recagent photo search"]
    figures["meets_targets"] = {
        "articleType": ours["articleType"] >= TARGETS["articleType"],
        "baseColour": ours["baseColour"] >= TARGETS["baseColour"],
        "text_to_image": text_to_image["held_out_gallery"] >= TARGETS["text_to_image"],
        "near_duplicate_top1": near["recagent photo search"]["top1"] >= TARGETS["near_duplicate_top1"],
    }
    return figures


def format_table(figures: dict) -> str:
    """The figures as a Markdown table (printed, and pasted into docs/benchmarks.md)."""
    i2i, near, t2i = figures["image_to_image_p@10"], figures["near_duplicate"], figures["text_to_image_p@10"]
    rows = [
        "| method | type p@10 | colour p@10 | text->image p@10 | near-dup top-1 | near-dup top-10 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, p in i2i.items():
        nd = near.get(name, {})
        t = {
            "recagent photo search": f"{t2i['held_out_gallery']:.3f}",
            "recagent, photos only": f"{t2i.get('held_out_gallery_cosine_only', float('nan')):.3f}",
        }.get(name, "-")
        rows.append(
            f"| {name} | {p['articleType']:.3f} | {p['baseColour']:.3f} | {t} | "
            f"{nd.get('top1', float('nan')):.3f} | {nd.get('top10', float('nan')):.3f} |".replace("nan", "-")
        )
    targets = figures["targets"]
    rows.append(
        f"| target | {targets['articleType']:.2f} | {targets['baseColour']:.2f} | "
        f"{targets['text_to_image']:.2f} | {targets['near_duplicate_top1']:.2f} | - |"
    )
    return "\n".join(rows)
