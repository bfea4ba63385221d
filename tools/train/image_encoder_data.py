"""The image tower's training data: the catalogs' photos (decoded once, cached) paired with the locked MiniLM vectors
of their items' documents, the attribute heads' labels, and the pixels the tower sees (augmented or plain).

Held out of training, always: the fashion products of the evaluation and validation splits
(tools/datasets/splits.py); the validation ones choose the heads' weights (image_encoder_calibration.py).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from tqdm import tqdm

from recagent.tools.catalog import Item, load_catalog
from recagent.tools.datasets.splits import fashion_holdout_ids, fashion_validation_ids
from recagent.tools.errors import ImageError
from recagent.tools.images import load_image, value_indices
from recagent.tools.models import embed_texts
from recagent.tools.settings import Settings

if TYPE_CHECKING:
    import torch

    from recagent.tools.image_encoder import ImageTower

CACHE_SIZE = 112  # decoded photos are cached at this side; training crops them down to the input size
# The kind of thing and its colour: what someone showing a photo of a product asks about. A field becomes
# a head when the training items carry it; its values are those seen at least HEAD_MIN_COUNT times.
DEFAULT_HEADS = ("articleType", "baseColour")
HEAD_MIN_COUNT = 20


def decoded_photos(
    catalog: str, items: list[Item], settings: Settings, size: int = CACHE_SIZE, progress: bool = True
) -> np.ndarray:
    """uint8 (N, size, size, 3) photos of the given items, decoded once and cached on disk."""
    if not items:
        return np.zeros((0, size, size, 3), np.uint8)
    key = hashlib.sha1("\n".join(f"{it.id}:{it.image}" for it in items).encode()).hexdigest()[:12]
    path = settings.cache / "photos" / f"{catalog}-{size}-{key}.npy"
    if path.is_file():
        return np.load(path, mmap_mode="r")
    out = np.full((len(items), size, size, 3), 255, np.uint8)
    for i, item in enumerate(tqdm(items, desc=f"decoding {catalog} photos", disable=not progress, unit="img")):
        try:
            out[i] = np.asarray(load_image(item.image or "").resize((size, size), Image.Resampling.BILINEAR))
        except ImageError:
            pass  # an unreadable photo stays white; the catalog checks report it elsewhere
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, out)
    os.replace(tmp, path)
    return np.load(path, mmap_mode="r")


@dataclass
class TrainingSet:
    """Image-text pairs: items, their decoded photos and the locked text tower's vectors of their documents."""

    items: list[Item]
    photos: np.ndarray  # (N, 112, 112, 3) uint8
    texts: np.ndarray  # (N, 384) float32, locked text tower
    catalogs: list[str] = field(default_factory=list)


def training_sets(
    catalogs: list[str], settings: Settings, progress: bool = True, limit: int | None = None
) -> tuple[TrainingSet, TrainingSet]:
    """(train, validation) image-text pairs of the given catalogs; held-out fashion products left out."""
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
        decoded = [
            decoded_photos(name, [it for n, it in rows if n == name], settings, progress=progress) for name in catalogs
        ]
        photos = (
            np.concatenate([p for p in decoded if len(p)])
            if rows
            else np.zeros((0, CACHE_SIZE, CACHE_SIZE, 3), np.uint8)
        )
        # rows are grouped by catalog in the same order as decoded, so photos line up with items
        items = [it for name in catalogs for n, it in rows if n == name]
        texts = embed_texts([it.document() for it in items], settings) if items else np.zeros((0, 384), np.float32)
        out.append(TrainingSet(items, photos, texts, list(catalogs)))
    return out[0], out[1]


def head_values(items: list[Item], fields: tuple[str, ...] = DEFAULT_HEADS) -> dict[str, list[str]]:
    """{field: its values seen at least HEAD_MIN_COUNT times} for the fields the items carry."""
    heads = {}
    for name in fields:
        counts = Counter(v for it in items if isinstance(v := it.metadata.get(name), str))
        values = sorted(v for v, n in counts.items() if n >= HEAD_MIN_COUNT)
        if len(values) >= 2:
            heads[name] = values
    return heads


def head_labels(items: list[Item], heads: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """{field: int64 (N,) index of each item's value, NO_VALUE (ignored) when it has none of the head's values}."""
    return {name: value_indices((it.metadata.get(name) for it in items), values) for name, values in heads.items()}


def augment(batch: np.ndarray, size: int, generator: torch.Generator) -> torch.Tensor:
    """uint8 (B, S, S, 3) -> float (B, 3, size, size): random resized crop, flip, blur, slight colour jitter."""
    # torch takes seconds to import, and the command line imports this module at startup
    import torch  # noqa: PLC0415
    import torch.nn.functional as F  # noqa: PLC0415

    x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float() / 255.0
    b = x.shape[0]

    def u(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, generator=generator)

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
    x = grey + (x - grey) * u(0.85, 1.15).view(b, 1, 1, 1)  # saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = mean + (x - mean) * u(0.85, 1.15).view(b, 1, 1, 1)  # contrast
    return (x * u(0.9, 1.1).view(b, 1, 1, 1)).clamp(0, 1)  # brightness


def plain(batch: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (B, S, S, 3) -> float (B, 3, size, size), the inference-time squash."""
    # torch takes seconds to import, and the command line imports this module at startup
    import torch  # noqa: PLC0415
    import torch.nn.functional as F  # noqa: PLC0415

    x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float() / 255.0
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def embed_photos(model: ImageTower, photos: np.ndarray, size: int) -> np.ndarray:
    """The model's (N, D) image vectors of cached photos, plain view (computed in eval mode; the model is left in
    training mode)."""
    import torch  # noqa: PLC0415  (torch takes seconds to import, and the command line imports this module)

    model.eval()
    with torch.inference_mode():
        out = [model(plain(photos[lo : lo + 256], size)).numpy() for lo in range(0, len(photos), 256)]
    model.train()
    return np.concatenate(out) if out else np.zeros((0, model.config.embed_dim), np.float32)


def adapted_texts(model: ImageTower, texts: np.ndarray) -> np.ndarray:
    """Locked text vectors (N, 384) through the model's text adapter: comparable with its image vectors."""
    import torch  # noqa: PLC0415  (torch takes seconds to import, and the command line imports this module)

    with torch.no_grad():
        return model.adapt_texts(torch.from_numpy(np.asarray(texts))).numpy()
