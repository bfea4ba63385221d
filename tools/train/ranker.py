"""Training the ranking head (tools/ranking/): `recagent train-ranker`.

Examples, each a context and the item to put first:
  - MovieLens ratings as implicit feedback, in time order: for each user, the last rating is the test item
    (`recagent eval movielens`), the one before it the validation item, and every earlier rating a training
    target with the up to `history` ratings before it as the context (kind HISTORY); the 90 users of the
    feedback evaluation (tools/datasets/splits.py: movielens_user_groups) are left out entirely;
  - ReDial train dialogues under the protocol of tools/datasets/redial.py: the movies mentioned so far and the text of
    the conversation -> the movie the recommender suggests (kind CONVERSATION); the ReDial counts behind the
    features leave the sample's own dialogue out;
  - optionally the feedback store (`--with-feedback`): a user's liked items in time order as more HISTORY
    examples, and each disliked item pushed below the liked one in the same context.
Loss: softmax cross-entropy over the whole catalog (the context's own items masked). Validation each epoch:
ReDial valid.jsonl Recall@10/@50 and MovieLens validation NDCG@10; the best epoch is kept, training stops
after `patience` epochs without improvement. A fixed seed makes runs reproducible; a `.state.pt` beside the
checkpoint lets the same command resume after an interruption.

The signals behind the features are built in memory from the training ratings split (tools/datasets/); the model
is tools/ranking/model.py. This module imports torch: the command line imports it only to train.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from recagent.tools.catalog import load_catalog
from recagent.tools.datasets.ranking_signals import Signals, build_signals
from recagent.tools.datasets.redial import Sample, load_dialogues, protocol_samples, redial_dir, redial_mapping
from recagent.tools.datasets.splits import movielens_split, movielens_user_groups
from recagent.tools.feedback import feedback_events
from recagent.tools.ranking.config import CONVERSATION, FEATURES, HISTORY, RankerConfig
from recagent.tools.ranking.features import Context, conversation_context, embed_contexts, exclusion_mask
from recagent.tools.ranking.model import RankingHead, batch_inputs, save_checkpoint
from recagent.tools.settings import Settings

Example = tuple[Context, str]  # a context and the item to put first


def redial_contexts(samples: list[Sample], kind: int = CONVERSATION, leave_out: bool = True) -> list[Example]:
    """(context, target) pairs from protocol samples."""
    return [
        (
            conversation_context(
                s.messages,
                [m.item for m in s.mentions],
                s.exclude,
                kind=kind,
                dialogue=s.dialogue if leave_out else None,
            ),
            s.target,
        )
        for s in samples
    ]


def history_contexts(
    seqs: dict[str, list[str]], user_rows: dict[str, int], history: int, targets: dict[str, str] | None = None
) -> list[Example]:
    """MovieLens examples. With targets: one per user (the whole sequence is the context); without: every
    position of every sequence (the items before it are the context)."""
    out: list[Example] = []
    for user, items in seqs.items():
        row = user_rows.get(user)
        if targets is not None:
            if user in targets:
                out.append(
                    (Context(items=items[-history:], kind=HISTORY, exclude=set(items), user_row=row), targets[user])
                )
            continue
        for t in range(1, len(items)):
            out.append(
                (
                    Context(items=items[max(0, t - history) : t], kind=HISTORY, exclude=set(items[:t]), user_row=row),
                    items[t],
                )
            )
    return out


def feedback_examples(settings: Settings, history: int) -> tuple[list[Example], list[tuple[Context, str, str]]]:
    """From the feedback store: (context, liked item) examples and (context, liked, disliked) pairs."""
    events = sorted(feedback_events(settings), key=lambda e: e.get("time", 0.0))
    liked: dict[str, list[str]] = defaultdict(list)
    disliked: dict[str, list[str]] = defaultdict(list)
    for e in events:
        if e.get("catalog", "movies") != "movies":
            continue
        (liked if e.get("signal", 0) > 0 else disliked)[e["user"]].append(str(e["item"]))
    positives: list[Example] = []
    pairs: list[tuple[Context, str, str]] = []
    for user, items in liked.items():
        for t, item in enumerate(items):
            ctx = Context(items=items[max(0, t - history) : t], kind=HISTORY, exclude=set(items[:t]))
            positives.append((ctx, item))
            for bad in disliked.get(user, []):
                pairs.append((ctx, item, bad))
    return positives, pairs


def recall_ndcg(scores: np.ndarray, targets: np.ndarray, ks: Iterable[int] = (1, 10, 50)) -> dict[str, float]:
    """Recall@k and NDCG@10 of the targets' positions (ties count against the target)."""
    tv = scores[np.arange(len(targets)), targets]
    rank = (scores >= tv[:, None]).sum(1) - 1  # 0-based, pessimistic on ties
    out = {f"recall@{k}": float((rank < k).mean()) if len(rank) else 0.0 for k in ks}
    out["ndcg@10"] = float(np.where(rank < 10, 1.0 / np.log2(rank + 2.0), 0.0).mean()) if len(rank) else 0.0
    return out


def evaluate(head: RankingHead, signals: Signals, examples: list[Example], batch: int = 64) -> dict[str, float]:
    """Recall@1/10/50 and NDCG@10 of the head on (context, target) examples."""
    head.eval()
    scores = head.rank(signals, [c for c, _ in examples], batch)
    return recall_ndcg(scores, np.array([signals.pos[t] for _, t in examples], np.int64))


def training_ratings(
    settings: Settings, ids: list[str]
) -> tuple[list[tuple[str, str]], dict[str, str], dict[str, list[str]]]:
    """The MovieLens ratings the head learns from: training rows, validation items and rating sequences. The
    feedback evaluation's users (test and validation) are never trained on: their ratings stay out of the head's
    examples and of the signals behind its features."""
    train_rows, ml_val, _ml_test, seqs = movielens_split(settings, ids)
    unseen = set().union(*movielens_user_groups(list(seqs)))
    train_rows = [(u, m) for u, m in train_rows if u not in unseen]
    seqs = {u: items for u, items in seqs.items() if u not in unseen}
    ml_val = {u: item for u, item in ml_val.items() if u not in unseen}
    return train_rows, ml_val, seqs


def train_ranker(
    settings: Settings,
    out: Path,
    epochs: int = 12,
    batch_size: int = 64,
    lr: float = 0.005,
    ml_per_epoch: int = 3000,
    redial_repeat: int = 2,
    patience: int = 3,
    seed: int = 0,
    limit: int | None = None,
    with_feedback: bool = False,
    config: RankerConfig | None = None,
    progress: bool = True,
    log: Callable[[str], object] = print,
) -> dict[str, Any]:
    """Train, validate each epoch, keep the best; write the checkpoint atomically. Returns a summary."""
    started = time.perf_counter()
    config = config or RankerConfig()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))

    catalog = load_catalog("movies", settings)
    ids = [it.id for it in catalog.items]
    titles = {it.id: it.title for it in catalog.items}
    train_rows, ml_val, seqs = training_ratings(settings, ids)
    train_d = load_dialogues(redial_dir(settings) / "train.jsonl", limit)
    valid_d = load_dialogues(redial_dir(settings) / "valid.jsonl", None if limit is None else max(10, limit // 5))
    signals = build_signals(settings, catalog, config.sources(), ratings_rows=train_rows, dialogues=train_d + valid_d)
    user_rows = signals.users
    mapping = redial_mapping(settings, config.mapping, catalog.items)  # the protocol's samples of train and valid
    redial_train = redial_contexts(protocol_samples(train_d, mapping, titles))
    redial_valid = redial_contexts(protocol_samples(valid_d, mapping, titles))
    if limit is not None:
        seqs = dict(list(seqs.items())[: max(20, limit)])
    ml_train = history_contexts(seqs, user_rows, config.history)
    ml_valid = history_contexts(seqs, user_rows, config.history, targets=ml_val)
    fb_pos: list[Example] = []
    fb_pairs: list[tuple[Context, str, str]] = []
    if with_feedback:
        fb_pos, fb_pairs = feedback_examples(settings, config.history)
        fb_pos = [(c, t) for c, t in fb_pos if t in signals.pos]
        fb_pairs = [(c, t, b) for c, t, b in fb_pairs if t in signals.pos and b in signals.pos]
        log(f"feedback store: {len(fb_pos)} liked examples, {len(fb_pairs)} liked/disliked pairs")
    embed_contexts([c for c, _ in redial_train + redial_valid], settings)
    log(
        f"examples: {len(redial_train)} ReDial train, {len(redial_valid)} ReDial valid, {len(ml_train):,} MovieLens "
        f"train ({ml_per_epoch:,} drawn per epoch), {len(ml_valid)} MovieLens valid"
    )

    torch.manual_seed(seed)  # again: loading the text model above may have drawn from the generator
    head = RankingHead(signals.n, config)
    # The few feature weights and the content bias move ten times faster than the embeddings.
    fast = [head.feature_weights, head.content_bias.weight]
    slow = [p for p in head.parameters() if all(p is not f for f in fast)]
    opt = torch.optim.Adam([{"params": slow, "lr": lr}, {"params": fast, "lr": 10 * lr}])
    content = torch.from_numpy(signals.content)
    state_path = out.with_suffix(".state.pt")
    out.parent.mkdir(parents=True, exist_ok=True)
    meta_base = {
        "catalog": "movies",
        "seed": seed,
        "lr": lr,
        "batch_size": batch_size,
        "ml_per_epoch": ml_per_epoch,
        "redial_repeat": redial_repeat,
        "limit": limit,
        "with_feedback": with_feedback,
        "trained_on": [
            "movielens/ratings.csv (all but each user's last two ratings; not the 90 feedback-evaluation users)",
            *[f"redial/{f}" for f in config.redial_files],
        ],
        "features": list(FEATURES),
    }
    first_epoch, best, bad_epochs = 0, -1.0, 0
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict[str, Any]] = []
    if state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        if state.get("meta_base") == meta_base and state.get("n") == signals.n:
            head.load_state_dict(state["head"])
            opt.load_state_dict(state["opt"])
            first_epoch, best, best_state = state["epoch"], state["best"], state["best_state"]
            bad_epochs, history = state["bad_epochs"], state["history"]
            random.setstate(state["py_rng"])
            np.random.set_state(state["np_rng"])
            torch.set_rng_state(state["torch_rng"])
            log(f"resuming after epoch {first_epoch} (best so far {best:.4f})")

    def step_loss(part: list[Example]) -> torch.Tensor:
        ctxs = [c for c, _ in part]
        hist, hist_w, text, kind, feats = batch_inputs(signals, ctxs, config)
        logits = head(hist, hist_w, text, kind, feats, content)
        mask = torch.from_numpy(exclusion_mask(signals, ctxs))
        target = torch.tensor([signals.pos[t] for _, t in part])
        mask[torch.arange(len(part)), target] = False
        return torch.nn.functional.cross_entropy(logits.masked_fill(mask, -1e9), target)

    epoch = first_epoch
    for epoch in range(first_epoch, epochs):
        if bad_epochs >= patience:
            break
        rng = random.Random(seed * 1000 + epoch)
        ml_part = rng.sample(ml_train, min(ml_per_epoch, len(ml_train)))
        examples = redial_train * redial_repeat + ml_part + fb_pos
        rng.shuffle(examples)
        head.train()
        total, batches = 0.0, range(0, len(examples), batch_size)
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{epochs}", disable=not progress, leave=False)
        for lo in bar:
            loss = step_loss(examples[lo : lo + batch_size])
            if fb_pairs and lo == 0:
                loss = loss + _pair_loss(head, signals, content, fb_pairs[:batch_size])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach())
            bar.set_postfix(loss=f"{total / (lo // batch_size + 1):.3f}")
        bar.close()
        rv = evaluate(head, signals, redial_valid)
        mv = evaluate(head, signals, ml_valid)
        metric = (rv["recall@10"] + rv["recall@50"]) / 2 + mv["ndcg@10"]
        history.append(
            {
                "epoch": epoch + 1,
                "loss": total / max(1, len(batches)),
                "redial_valid": rv,
                "movielens_valid": mv,
                "metric": metric,
            }
        )
        log(
            f"epoch {epoch + 1}: loss {total / max(1, len(batches)):.3f}, ReDial valid R@10 {rv['recall@10']:.3f} "
            f"R@50 {rv['recall@50']:.3f}, MovieLens valid NDCG@10 {mv['ndcg@10']:.4f}"
        )
        if metric > best:
            best, bad_epochs = metric, 0
            best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
        else:
            bad_epochs += 1
        torch.save(
            {
                "meta_base": meta_base,
                "n": signals.n,
                "head": head.state_dict(),
                "opt": opt.state_dict(),
                "epoch": epoch + 1,
                "best": best,
                "best_state": best_state,
                "bad_epochs": bad_epochs,
                "history": history,
                "py_rng": random.getstate(),
                "np_rng": np.random.get_state(),
                "torch_rng": torch.get_rng_state(),
            },
            state_path,
        )
    stopped_early = bad_epochs >= patience
    if best_state is not None:
        head.load_state_dict(best_state)
    seconds = time.perf_counter() - started
    best_epoch = max(history, key=lambda h: h["metric"])["epoch"] if history else 0
    meta = {
        **meta_base,
        "epochs_run": len(history),
        "best_epoch": best_epoch,
        "stopped_early": stopped_early,
        "history": history,
        "seconds": round(seconds, 1),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    save_checkpoint(out, head, config, meta, signals.ids)
    return {
        "checkpoint": str(out),
        "seconds": seconds,
        "epochs_run": len(history),
        "best_epoch": best_epoch,
        "stopped_early": stopped_early,
        "history": history,
    }


def _pair_loss(
    head: RankingHead, signals: Signals, content: torch.Tensor, pairs: list[tuple[Context, str, str]]
) -> torch.Tensor:
    """Disliked items below liked ones in the same context: mean softplus(score(disliked) - score(liked))."""
    ctxs = [c for c, _, _ in pairs]
    hist, hist_w, text, kind, feats = batch_inputs(signals, ctxs, head.config)
    logits = head(hist, hist_w, text, kind, feats, content)
    good = torch.tensor([signals.pos[t] for _, t, _ in pairs])
    bad = torch.tensor([signals.pos[b] for _, _, b in pairs])
    rows = torch.arange(len(pairs))
    return torch.nn.functional.softplus(logits[rows, bad] - logits[rows, good]).mean()
