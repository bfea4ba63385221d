"""Train the offline image tower (image_encoder.py) on the catalogs' own image-text pairs, LiT-style.

Each item's photo is pulled towards the MiniLM vector of the item's own document (the text retrieval
indexes) with open_clip's contrastive loss (ClipLoss: symmetric InfoNCE, learned temperature); the text
tower is locked, so those vectors are computed once and cached. Two augmented views of each photo are
also pulled together (the same loss, fixed temperature), which makes the vectors robust to crops,
re-encoding and colour shifts: near-duplicate lookup needs that.

A learned linear text adapter (on the locked text vectors) and attribute heads (catalog fields such as
articleType and baseColour, cross-entropy on the image vector) are trained with it; after training, the
weight of each head's term in photo retrieval is chosen on the validation photos (`calibrate_facets`).

Held out of training, always: the 1,000 fashion products with the lowest md5 of their id (evaluation,
evals/eval_images.py) and the next 500 (validation, printed after each epoch).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .catalog import Item, load_catalog
from .settings import Settings

CACHE_SIZE = 112  # decoded photos are cached at this side; training crops them down to the input size
HOLDOUT = 1000
VALIDATION = 500
# The kind of thing and its colour: what someone showing a photo of a product asks about. A field becomes
# a head when the training items carry it; its values are those seen at least HEAD_MIN_COUNT times.
DEFAULT_HEADS = ("articleType", "baseColour")
HEAD_MIN_COUNT = 20
HEAD_WEIGHT = 0.5
FACET_GRID = (0.0, 0.02, 0.05, 0.1, 0.2)  # weights tried for each head's term (calibrate_facets)
TEXT_FACET_GRID = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)  # ... in words-against-photos search


def md5_order(items: list[Item]) -> list[Item]:
    return sorted(items, key=lambda it: hashlib.md5(it.id.encode()).hexdigest())


def fashion_holdout_ids(items: list[Item]) -> set[str]:
    """The 1,000 fashion products with the lowest md5 of their id: never trained on, used to evaluate."""
    return {it.id for it in md5_order(items)[:HOLDOUT]}


def fashion_validation_ids(items: list[Item]) -> set[str]:
    return {it.id for it in md5_order(items)[HOLDOUT: HOLDOUT + VALIDATION]}


def decoded_photos(catalog: str, items: list[Item], settings: Settings, size: int = CACHE_SIZE,
                   progress: bool = True) -> np.ndarray:
    """uint8 (N, size, size, 3) photos of the given items, decoded once and cached on disk."""
    from PIL import Image
    from tqdm import tqdm

    from .images import ImageError, load_image

    if not items:
        return np.zeros((0, size, size, 3), np.uint8)
    key = hashlib.sha1("\n".join(f"{it.id}:{it.image}" for it in items).encode()).hexdigest()[:12]
    path = settings.cache / "photos" / f"{catalog}-{size}-{key}.npy"
    if path.is_file():
        return np.load(path, mmap_mode="r")
    out = np.full((len(items), size, size, 3), 255, np.uint8)
    for i, item in enumerate(tqdm(items, desc=f"decoding {catalog} photos", disable=not progress, unit="img")):
        try:
            out[i] = np.asarray(load_image(item.image).resize((size, size), Image.BILINEAR))
        except ImageError:
            pass  # an unreadable photo stays white; the catalog checks report it elsewhere
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, out)
    os.replace(tmp, path)
    return np.load(path, mmap_mode="r")


@dataclass
class TrainingSet:
    items: list[Item]
    photos: np.ndarray     # (N, 112, 112, 3) uint8
    texts: np.ndarray      # (N, 384) float32, locked text tower
    catalogs: list[str] = field(default_factory=list)


def training_sets(catalogs: list[str], settings: Settings, progress: bool = True,
                  limit: int | None = None) -> tuple[TrainingSet, TrainingSet]:
    """(train, validation) image-text pairs of the given catalogs; held-out fashion products left out."""
    from .models import embed_texts

    splits: dict[str, list[tuple[str, Item]]] = {"train": [], "val": []}
    for name in catalogs:
        items = [it for it in load_catalog(name, settings).items if it.image]
        held = fashion_holdout_ids(items) if name == "fashion" else set()
        val = fashion_validation_ids(items) if name == "fashion" else set()
        for it in items:
            if it.id not in held:
                splits["val" if it.id in val else "train"].append((name, it))
    if limit:  # a quick check: a few pairs of each split
        splits = {"train": splits["train"][:limit], "val": splits["val"][: max(16, limit // 4)]}
    out = []
    for split in ("train", "val"):
        rows = splits[split]
        photos = [decoded_photos(name, [it for n, it in rows if n == name], settings, progress=progress)
                  for name in catalogs]
        photos = np.concatenate([p for p in photos if len(p)]) if rows else np.zeros((0, CACHE_SIZE, CACHE_SIZE, 3), np.uint8)
        # rows are grouped by catalog in the same order as decoded, so photos line up with items
        items = [it for name in catalogs for n, it in rows if n == name]
        texts = embed_texts([it.document() for it in items], settings) if items else np.zeros((0, 384), np.float32)
        out.append(TrainingSet(items, photos, texts, list(catalogs)))
    return out[0], out[1]


def head_values(items: list[Item], fields=DEFAULT_HEADS) -> dict[str, list[str]]:
    """{field: its values seen at least HEAD_MIN_COUNT times} for the fields the items carry."""
    from collections import Counter

    heads = {}
    for name in fields:
        counts = Counter(it.metadata.get(name) for it in items if isinstance(it.metadata.get(name), str))
        values = sorted(v for v, n in counts.items() if n >= HEAD_MIN_COUNT)
        if len(values) >= 2:
            heads[name] = values
    return heads


def head_labels(items: list[Item], heads: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """{field: int64 (N,) index of each item's value, -100 (ignored) when it has none of the head's values}."""
    out = {}
    for name, values in heads.items():
        position = {v: n for n, v in enumerate(values)}
        out[name] = np.array([position.get(it.metadata.get(name), -100) for it in items], np.int64)
    return out


def augment(batch, size: int, generator):
    """uint8 (B, S, S, 3) -> float (B, 3, size, size): random resized crop, flip, blur, slight colour jitter."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float() / 255.0
    b = x.shape[0]
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(b, generator=generator)  # noqa: E731
    area, aspect = u(0.45, 1.0), torch.exp(u(math.log(3 / 4), math.log(4 / 3)))
    w, h = (area * aspect).sqrt().clamp(max=1), (area / aspect).sqrt().clamp(max=1)
    cx, cy = (1 - w) * u(-1, 1), (1 - h) * u(-1, 1)
    flip = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w * flip, cx, h, cy
    grid = F.affine_grid(theta, [b, 3, size, size], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    blur = torch.rand(b, generator=generator) < 0.3  # stands in for JPEG softening
    if blur.any():
        x[blur] = F.avg_pool2d(x[blur], 3, 1, 1, count_include_pad=False)
    grey = x.mean(dim=1, keepdim=True)
    x = grey + (x - grey) * u(0.85, 1.15).view(b, 1, 1, 1)                         # saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = mean + (x - mean) * u(0.85, 1.15).view(b, 1, 1, 1)                          # contrast
    return (x * u(0.9, 1.1).view(b, 1, 1, 1)).clamp(0, 1)                           # brightness


def plain(batch, size: int):
    """uint8 (B, S, S, 3) -> float (B, 3, size, size), the inference-time squash."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float() / 255.0
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def validate(model, data: TrainingSet, size: int) -> dict:
    """Image->text recall@1 and same-type/colour precision@10 (image->image) on the validation pairs."""
    import torch

    if not data.items:
        return {}
    model.eval()
    with torch.inference_mode():
        vecs = torch.cat([model(plain(data.photos[lo: lo + 256], size)) for lo in range(0, len(data.items), 256)])
    model.train()
    with torch.no_grad():
        texts = model.adapt_texts(torch.from_numpy(np.asarray(data.texts)))
    i2t = (vecs @ texts.T).argmax(dim=1) == torch.arange(len(vecs))
    sims = vecs @ vecs.T
    sims.fill_diagonal_(-2)
    top = sims.topk(10, dim=1).indices
    out = {"val_image_to_text_r1": round(i2t.float().mean().item(), 4)}
    for key in ("articleType", "baseColour"):
        labels = [it.metadata.get(key) for it in data.items]
        if all(labels):
            same = [np.mean([labels[j] == labels[i] for j in row]) for i, row in enumerate(top.tolist())]
            out[f"val_{key}_p@10"] = round(float(np.mean(same)), 4)
    return out


def embed_photos(model, photos: np.ndarray, size: int) -> np.ndarray:
    """The model's (N, D) image vectors of cached photos, plain view."""
    import torch

    model.eval()
    with torch.inference_mode():
        out = [model(plain(photos[lo: lo + 256], size)).numpy() for lo in range(0, len(photos), 256)]
    model.train()
    return np.concatenate(out) if out else np.zeros((0, model.config.embed_dim), np.float32)


def calibrate_facets(model, train: TrainingSet, val: TrainingSet, size: int, pool: int = 200) -> dict:
    """Each head's weight in photo retrieval, chosen on the validation photos against every training photo.

    Photo retrieval (tools/retrieval.py) scores a candidate by how its photo and its description match the
    query photo, plus, per head, weight * log p(candidate's catalog value | query photo). The weights are
    chosen here by coordinate ascent over FACET_GRID, maximising the mean precision@10 of the heads' fields.
    """
    import torch

    from .retrieval import FACET_FLOOR, PHOTO_SELF

    if not model.heads or not val.items:
        return {}
    gallery_photos = embed_photos(model, np.concatenate([train.photos, val.photos]), size)
    with torch.no_grad():
        gallery_texts = model.adapt_texts(torch.from_numpy(np.concatenate([train.texts, val.texts]))).numpy()
    queries = gallery_photos[len(train.items):]
    train_labels, val_labels = head_labels(train.items, model.config.heads), head_labels(val.items, model.config.heads)
    labels = {name: np.concatenate([train_labels[name], val_labels[name]]) for name in model.heads}
    with torch.no_grad():
        logp = {name: torch.log_softmax(x, -1).numpy() for name, x in model.head_logits(torch.from_numpy(queries)).items()}
    pools = []
    for q, vector in enumerate(queries):
        sims = PHOTO_SELF * (gallery_photos @ vector) + (1 - PHOTO_SELF) * (gallery_texts @ vector)
        sims[len(train.items) + q] = -9  # never the query itself
        top = np.argpartition(-sims, pool)[:pool]
        terms = {name: np.where(labels[name][top] >= 0,
                                np.maximum(logp[name][q][np.maximum(labels[name][top], 0)], FACET_FLOOR), FACET_FLOOR)
                 for name in model.heads}
        pools.append((len(train.items) + q, top, sims[top], terms))

    def precision(weights: dict) -> float:
        scores = []
        for query, top, base, terms in pools:
            order = top[np.argsort(-(base + sum(weights[n] * terms[n] for n in weights)))[:10]]
            scores.append(np.mean([np.mean(labels[n][order] == labels[n][query]) for n in weights
                                   if labels[n][query] >= 0] or [0.0]))
        return float(np.mean(scores))

    weights = {name: 0.0 for name in model.heads}
    for _ in range(2):
        for name in weights:
            weights[name] = max(FACET_GRID, key=lambda w: precision({**weights, name: w}))
    return weights


def calibrate_text_facets(model, val: TrainingSet, size: int, settings: Settings, min_count: int = 3) -> dict:
    """Each head's weight in words-against-photos search, chosen on the validation photos.

    The queries are "<colour> <type>" for every pair that at least min_count validation products share;
    a photo scores cos(adapted words, photo) plus, per head whose value the words name, weight * log p(value |
    photo) (tools/retrieval.py). Coordinate ascent over TEXT_FACET_GRID maximises precision@10 (both must match).
    """
    import torch

    from .images import FACET_FLOOR, attribute_phrase, named_head_values
    from .models import embed_texts

    heads = model.config.heads
    if not {"articleType", "baseColour"} <= set(heads) or not val.items:
        return {}
    photos = embed_photos(model, val.photos, size)
    with torch.no_grad():
        logp = {n: torch.log_softmax(x, -1).numpy() for n, x in model.head_logits(torch.from_numpy(photos)).items()}
    kinds = [(it.metadata.get("baseColour"), it.metadata.get("articleType")) for it in val.items]
    pairs = [pair for pair, n in Counter(kinds).items() if n >= min_count and all(pair)]
    phrases = [attribute_phrase(colour, kind) for colour, kind in pairs]
    with torch.no_grad():
        words = model.adapt_texts(torch.from_numpy(embed_texts(phrases, settings))).numpy()
    rows = []
    for pair, phrase, vector in zip(pairs, phrases, words):
        named = named_head_values(phrase, heads)
        terms = {n: np.maximum(logp[n][:, heads[n].index(v)], FACET_FLOOR) for n, v in named.items()}
        rows.append((pair, photos @ vector, terms))

    def precision(weights: dict) -> float:
        scores = []
        for pair, base, terms in rows:
            top = np.argsort(-(base + sum(weights[n] * t for n, t in terms.items())))[:10]
            scores.append(np.mean([kinds[j] == pair for j in top]))
        return float(np.mean(scores)) if scores else 0.0

    weights = {name: 0.0 for name in heads}
    for _ in range(2):
        for name in weights:
            weights[name] = max(TEXT_FACET_GRID, key=lambda w: precision({**weights, name: w}))
    return weights


def train_image_encoder(catalogs: list[str], settings: Settings, out: Path, epochs: int = 14,
                        batch_size: int = 256, lr: float = 2e-3, instance_weight: float = 0.5, seed: int = 0,
                        limit: int | None = None, progress: bool = True, log=print, config=None,
                        heads=DEFAULT_HEADS) -> dict:
    """Train (or resume) and write `out` (fp16 weights + config + metadata); checkpoints each epoch."""
    import torch
    from open_clip.loss import ClipLoss
    from tqdm import tqdm

    from .image_encoder import ImageEncoderConfig, ImageTower, count_parameters

    torch.manual_seed(seed), random.seed(seed), np.random.seed(seed)
    torch.set_num_threads(os.cpu_count() or 1)
    train, val = training_sets(catalogs, settings, progress, limit)
    config = config or ImageEncoderConfig(text_adapter=True, heads=head_values(train.items, heads))
    model = ImageTower(config)
    labels_all = {name: torch.from_numpy(v) for name, v in head_labels(train.items, config.heads).items()}
    logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    params = list(model.parameters()) + [logit_scale]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    steps_per_epoch = max(1, len(train.items) // batch_size)
    total = epochs * steps_per_epoch
    warmup = min(200, total // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(1, warmup))
                                                 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))))
    state_path = out.with_suffix(".state.pt")
    meta = {"catalogs": catalogs, "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed, "heads": list(heads),
            "instance_weight": instance_weight, "limit": limit, "config": config.to_dict()}
    start_epoch, history, elapsed = 0, [], 0.0
    if state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        if state["meta"] == meta:
            model.load_state_dict(state["model"])
            logit_scale.data.fill_(state["logit_scale"])
            optimizer.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
            start_epoch, history, elapsed = state["epoch"], state["history"], state["seconds"]
            torch.set_rng_state(state["rng"])
            log(f"resuming from epoch {start_epoch} of {epochs} ({state_path})")
        else:
            log(f"{state_path} was written with other settings: starting afresh")
    log(f"training on {len(train.items)} image-text pairs ({', '.join(catalogs)}), validating on "
        f"{len(val.items)}; {count_parameters(model) / 1e6:.1f}M parameters, {epochs} epochs")
    clip_loss = ClipLoss()
    generator = torch.Generator().manual_seed(seed)
    texts_all = torch.from_numpy(np.asarray(train.texts))
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        order = torch.randperm(len(train.items), generator=torch.Generator().manual_seed(seed * 1000 + epoch))
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{epochs}", disable=not progress, unit="step")
        running = None
        for step in bar:
            idx = order[step * batch_size: (step + 1) * batch_size].sort().values.numpy()
            photos = train.photos[idx]
            text = model.adapt_texts(texts_all[idx])                              # (B, 384), locked + adapter
            scale = logit_scale.exp().clamp(max=100)
            if instance_weight:  # two views: each against the text, and against each other
                a, b = model(torch.cat([augment(photos, config.image_size, generator),
                                        augment(photos, config.image_size, generator)])).chunk(2)
                loss = 0.5 * (clip_loss(a, text, scale) + clip_loss(b, text, scale)) \
                    + instance_weight * clip_loss(a, b, torch.tensor(10.0))
            else:
                a = model(augment(photos, config.image_size, generator))
                loss = clip_loss(a, text, scale)
            for name, logits in model.head_logits(a).items():  # the catalog fields, where the item has one
                target = labels_all[name][idx]
                if (target >= 0).any():
                    loss = loss + HEAD_WEIGHT * torch.nn.functional.cross_entropy(logits, target, ignore_index=-100)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
            bar.set_postfix(loss=f"{running:.3f}", T=f"{1 / scale.item():.3f}")
        elapsed += time.perf_counter() - t0
        record = {"epoch": epoch + 1, "loss": round(running or 0.0, 4), "seconds": round(elapsed, 1),
                  **validate(model, val, config.image_size)}
        history.append(record)
        log("  ".join(f"{k} {v}" for k, v in record.items()))
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = state_path.with_suffix(".tmp")
        torch.save({"meta": meta, "model": model.state_dict(), "logit_scale": logit_scale.item(),
                    "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "epoch": epoch + 1,
                    "history": history, "seconds": elapsed, "rng": torch.get_rng_state()}, tmp)
        os.replace(tmp, state_path)
    weights = calibrate(model, train, val, config.image_size, settings, log)
    export(model, config, out, {**meta, "train_pairs": len(train.items), "history": history,
                                "train_seconds": round(elapsed, 1), "holdout": "fashion: 1,000 lowest md5(id)",
                                **weights})
    return {"checkpoint": str(out), "history": history, "seconds": elapsed, **weights}


def calibrate(model, train: TrainingSet, val: TrainingSet, size: int, settings: Settings, log=print) -> dict:
    """The heads' weights in photo search and in words-against-photos search, chosen on the validation photos."""
    weights = {"facet_weights": calibrate_facets(model, train, val, size),
               "text_facet_weights": calibrate_text_facets(model, val, size, settings)}
    if any(weights.values()):
        log(f"head weights (chosen on the validation photos): {weights}")
    return weights


def recalibrate(path: Path, settings: Settings, progress: bool = True, log=print) -> dict:
    """Choose a trained checkpoint's head weights again (same data, same rule as after training); rewrites it."""
    import torch

    from .image_encoder import ImageEncoderConfig, ImageTower

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    config = ImageEncoderConfig.from_dict(checkpoint["config"])
    model = ImageTower(config)
    model.load_state_dict({k: v.float() for k, v in checkpoint["model"].items()})
    model.eval()
    train, val = training_sets(checkpoint["meta"]["catalogs"], settings, progress, checkpoint["meta"].get("limit"))
    weights = calibrate(model, train, val, config.image_size, settings, log)
    export(model, config, path, {**checkpoint["meta"], **weights})
    return weights


def export(model, config, out: Path, meta: dict) -> None:
    """The shippable checkpoint: fp16 weights (half the size; vectors agree to ~1e-3), config, metadata."""
    import torch

    weights = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    tmp = out.with_suffix(".tmp")
    torch.save({"config": config.to_dict(), "model": weights, "meta": json.loads(json.dumps(meta))}, tmp)
    os.replace(tmp, out)
