"""Train the offline image tower (image_encoder.py) on the catalogs' own image-text pairs, LiT-style.

Each item's photo is pulled towards the MiniLM vector of the item's own document (the text retrieval
indexes) with open_clip's contrastive loss (ClipLoss: symmetric InfoNCE, learned temperature); the text
tower is locked, so those vectors are computed once and cached. Two augmented views of each photo are
also pulled together (the same loss, fixed temperature), which makes the vectors robust to crops,
re-encoding and colour shifts: near-duplicate lookup needs that.

A learned linear text adapter (on the locked text vectors) and attribute heads (catalog fields such as
articleType and baseColour, cross-entropy on the image vector) are trained with it; after training, the
weight of each head's term in photo retrieval is chosen on the validation photos (image_encoder_calibration.py).

Held out of training, always: the 1,000 fashion products with the lowest md5 of their id (evaluation,
evals/eval_images.py) and the next 500 (validation, printed after each epoch); the data, its augmentation and
the splits: image_encoder_data.py.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from recagent.tools.images import NO_VALUE
from recagent.tools.settings import Settings

from .image_encoder_calibration import calibrate
from .image_encoder_data import (
    DEFAULT_HEADS,
    TrainingSet,
    augment,
    embed_photos,
    head_labels,
    head_values,
    training_sets,
)

if TYPE_CHECKING:
    from recagent.tools.image_encoder import ImageEncoderConfig, ImageTower

HEAD_WEIGHT = 0.5  # weight of the attribute heads' cross-entropy beside the contrastive loss


def validate(model: ImageTower, data: TrainingSet, size: int) -> dict[str, float]:
    """Image->text recall@1 and same-type/colour precision@10 (image->image) on the validation pairs."""
    import torch  # noqa: PLC0415  (torch takes seconds to import, and the command line imports this module)

    if not data.items:
        return {}
    vecs = torch.from_numpy(embed_photos(model, data.photos, size))
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


def train_image_encoder(
    catalogs: list[str],
    settings: Settings,
    out: Path,
    epochs: int = 14,
    batch_size: int = 256,
    lr: float = 2e-3,
    instance_weight: float = 0.5,
    seed: int = 0,
    limit: int | None = None,
    progress: bool = True,
    log: Callable[[str], object] = print,
    config: ImageEncoderConfig | None = None,
    heads: tuple[str, ...] = DEFAULT_HEADS,
) -> dict:
    """Train (or resume) and write `out` (fp16 weights + config + metadata); checkpoints each epoch.

    The state after each epoch is kept beside `out` (.state.pt); a run with the same settings (the epoch count
    included: it shapes the learning-rate schedule) resumes from it, a run with other settings starts afresh.
    """
    # torch and open_clip take seconds to import, and the command line imports this module at startup
    import torch  # noqa: PLC0415
    from open_clip.loss import ClipLoss  # noqa: PLC0415

    from recagent.tools.image_encoder import ImageEncoderConfig, ImageTower, count_parameters  # noqa: PLC0415

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
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / max(1, warmup)) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total)))
    )
    state_path = out.with_suffix(".state.pt")
    meta = {
        "catalogs": catalogs,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "heads": list(heads),
        "instance_weight": instance_weight,
        "limit": limit,
        "config": config.to_dict(),
    }
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
    log(
        f"training on {len(train.items)} image-text pairs ({', '.join(catalogs)}), validating on "
        f"{len(val.items)}; {count_parameters(model) / 1e6:.1f}M parameters, {epochs} epochs"
    )
    clip_loss = ClipLoss()
    generator = torch.Generator().manual_seed(seed)
    texts_all = torch.from_numpy(np.asarray(train.texts))
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        order = torch.randperm(len(train.items), generator=torch.Generator().manual_seed(seed * 1000 + epoch))
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{epochs}", disable=not progress, unit="step")
        running = None
        for step in bar:
            idx = order[step * batch_size : (step + 1) * batch_size].sort().values.numpy()
            photos = train.photos[idx]
            text = model.adapt_texts(texts_all[idx])  # (B, 384), locked + adapter
            scale = logit_scale.exp().clamp(max=100)
            if instance_weight:  # two views: each against the text, and against each other
                a, b = model(
                    torch.cat(
                        [augment(photos, config.image_size, generator), augment(photos, config.image_size, generator)]
                    )
                ).chunk(2)
                loss = 0.5 * (clip_loss(a, text, scale) + clip_loss(b, text, scale)) + instance_weight * clip_loss(
                    a, b, torch.tensor(10.0)
                )
            else:
                a = model(augment(photos, config.image_size, generator))
                loss = clip_loss(a, text, scale)
            for name, logits in model.head_logits(a).items():  # the catalog fields, where the item has one
                target = labels_all[name][idx]
                if (target >= 0).any():
                    loss = loss + HEAD_WEIGHT * torch.nn.functional.cross_entropy(logits, target, ignore_index=NO_VALUE)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
            bar.set_postfix(loss=f"{running:.3f}", T=f"{1 / scale.item():.3f}")
        elapsed += time.perf_counter() - t0
        record = {
            "epoch": epoch + 1,
            "loss": round(running or 0.0, 4),
            "seconds": round(elapsed, 1),
            **validate(model, val, config.image_size),
        }
        history.append(record)
        log("  ".join(f"{k} {v}" for k, v in record.items()))
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = state_path.with_suffix(".tmp")
        torch.save(
            {
                "meta": meta,
                "model": model.state_dict(),
                "logit_scale": logit_scale.item(),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "epoch": epoch + 1,
                "history": history,
                "seconds": elapsed,
                "rng": torch.get_rng_state(),
            },
            tmp,
        )
        os.replace(tmp, state_path)
    weights = calibrate(model, train, val, config.image_size, settings, log)
    export(
        model,
        config,
        out,
        {
            **meta,
            "train_pairs": len(train.items),
            "history": history,
            "train_seconds": round(elapsed, 1),
            "holdout": "fashion: 1,000 lowest md5(id)",
            **weights,
        },
    )
    return {"checkpoint": str(out), "history": history, "seconds": elapsed, **weights}


def recalibrate(
    path: Path, settings: Settings, progress: bool = True, log: Callable[[str], object] = print
) -> dict[str, dict[str, float]]:
    """Choose a trained checkpoint's head weights again (same data, same rule as after training); rewrites it."""
    # torch takes seconds to import, and the command line imports this module at startup
    import torch  # noqa: PLC0415

    from recagent.tools.image_encoder import ImageEncoderConfig, ImageTower  # noqa: PLC0415

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    config = ImageEncoderConfig.from_dict(checkpoint["config"])
    model = ImageTower(config)
    model.load_state_dict({k: v.float() for k, v in checkpoint["model"].items()})
    model.eval()
    train, val = training_sets(checkpoint["meta"]["catalogs"], settings, progress, checkpoint["meta"].get("limit"))
    weights = calibrate(model, train, val, config.image_size, settings, log)
    export(model, config, path, {**checkpoint["meta"], **weights})
    return weights


def export(model: ImageTower, config: ImageEncoderConfig, out: Path, meta: dict) -> None:
    """The shippable checkpoint: fp16 weights (half the size; vectors agree to ~1e-3), config, metadata."""
    import torch  # noqa: PLC0415  (torch takes seconds to import, and the command line imports this module)

    weights = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    tmp = out.with_suffix(".tmp")
    torch.save({"config": config.to_dict(), "model": weights, "meta": json.loads(json.dumps(meta))}, tmp)
    os.replace(tmp, out)
