"""`recagent eval redial-curve`: how the ranking head's ReDial recall grows with the number of training dialogues.

For each size n, the first n of a seeded shuffle of ReDial train.jsonl (plus valid.jsonl, which picks the epoch) is
all the head learns from: the ReDial counts behind its features (tools/datasets/ranking_signals.py; each training
dialogue's own counts left out of its features, as in training) and the conversation weights. A conversation's
score in the head is the feature mixture alone, sum_f w_f * feature_f (tools/ranking/model.py,
conversation_embeddings False), so only those weights are fitted here, with the trainer's loss (softmax over the
whole catalog, earlier mentions masked) and the epoch of the best valid Recall@10 + Recall@50. Dev Recall@1/10/20/50
under the new-items protocol, with 95% intervals over dialogues, per n, and the share of the dev targets that the n
dialogues saw suggested (with Recall@50 of those and of the others apart); then a least-squares line
R(n) = a + b * log2(dialogues) and, at that rate, how many dialogues each acceptance target of issue 15 would take.
The MovieLens signals are the shipped head's (the training ratings, the feedback evaluation's users left out).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from recagent.evals.common import log_linear_fit, pyplot, save_figure
from recagent.evals.eval_redial import KS, ranks_of, recalls
from recagent.tools.catalog import load_catalog
from recagent.tools.datasets.ranking_signals import Signals, build_signals
from recagent.tools.datasets.redial import load_dialogues, protocol_samples, redial_dir, redial_mapping
from recagent.tools.ranking.config import FEATURES, UNTRAINED, RankerConfig
from recagent.tools.ranking.features import Context, embed_contexts, exclusion_mask, features
from recagent.tools.settings import Settings
from recagent.tools.train.ranker import redial_contexts, training_ratings

SIZES = (60, 125, 250, 500)
TARGETS = {"recall@1": 0.05, "recall@10": 0.22, "recall@50": 0.45}  # issue 15's acceptance, new-items protocol


class Split:
    """One split's features [S, N, F] (float16), targets [S], masks [S, N] and dialogue ids, for fixed signals."""

    def __init__(
        self, signals: Signals, examples: list[tuple[Context, str]], dialogues: list[str], config: RankerConfig
    ):
        contexts = [c for c, _ in examples]
        empty = np.zeros((0, signals.n, len(FEATURES)), np.float16)  # so that no contexts is no special case
        chunks = [
            features(signals, contexts[lo : lo + 64], config).astype(np.float16) for lo in range(0, len(contexts), 64)
        ]
        self.F = np.concatenate([empty, *chunks])
        self.y = np.array([signals.pos[t] for _, t in examples], np.int64)
        self.mask = exclusion_mask(signals, contexts)
        self.dialogues = dialogues

    def scores(self, w: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        """[len(rows), N] feature-mixture scores, masked items at -1e9."""
        s = torch.from_numpy(self.F[rows].astype(np.float32)) @ w
        return s.masked_fill(torch.from_numpy(self.mask[rows]), -1e9)

    def ranks(self, w: torch.Tensor) -> np.ndarray:
        """[S] 0-based rank of each target under the weights w, 64 samples at a time."""
        out = [np.zeros(0, np.int64)]
        with torch.no_grad():
            for lo in range(0, len(self.y), 64):
                rows = np.arange(lo, min(lo + 64, len(self.y)))
                out.append(ranks_of(self.scores(w, rows).numpy(), self.y[rows]))
        return np.concatenate(out)


def fit_conversation_weights(
    train: Split, valid: Split, epochs: int, lr: float = 0.01, batch: int = 32, seed: int = 0
) -> tuple[torch.Tensor, int]:
    """The conversation feature weights w [F] with the best valid Recall@10 + Recall@50, and that epoch (1-based)."""
    torch.manual_seed(seed)
    learned = torch.tensor([f not in UNTRAINED for f in FEATURES], dtype=torch.float32)  # as RankingHead.learned
    w = torch.zeros(len(FEATURES), requires_grad=True)
    opt = torch.optim.Adam([w], lr=lr)
    best, best_w, best_epoch = -1.0, w.detach().clone(), 0
    for epoch in range(epochs):
        order = np.random.RandomState(seed * 1000 + epoch).permutation(len(train.y))
        for lo in range(0, len(order), batch):
            rows = np.sort(order[lo : lo + batch])
            loss = torch.nn.functional.cross_entropy(train.scores(w * learned, rows), torch.from_numpy(train.y[rows]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        r = valid.ranks((w * learned).detach())
        metric = float((r < 10).mean() + (r < 50).mean()) if len(r) else 0.0
        if metric > best:
            best, best_w, best_epoch = metric, (w * learned).detach().clone(), epoch + 1
    return best_w, best_epoch


def run_redial_curve(
    settings: Settings,
    sizes: tuple[int, ...] = SIZES,
    epochs: int = 15,
    limit: int | None = None,
    seed: int = 7,
    progress: bool = True,
    log: Callable[[str], object] = print,
) -> dict:
    """Dev recall of the feature mixture fitted on n ReDial train dialogues, for each n in sizes."""
    started = time.perf_counter()
    config = RankerConfig()
    if config.conversation_embeddings:  # then a conversation's score is more than the feature mixture
        raise ValueError("eval redial-curve fits the feature mixture; this config also scores embeddings")
    catalog = load_catalog("movies", settings)
    ids = [it.id for it in catalog.items]
    titles = {it.id: it.title for it in catalog.items}
    train_rows, _val, _seqs = training_ratings(settings, ids)
    folder = redial_dir(settings)
    train_d = load_dialogues(folder / "train.jsonl")
    valid_d = load_dialogues(folder / "valid.jsonl", limit)
    dev_d = load_dialogues(folder / "dev.jsonl", limit)
    if any(n > len(train_d) for n in sizes):
        log(f"train.jsonl holds {len(train_d)} dialogues: larger sizes are read as {len(train_d)}")
    sizes = tuple(sorted({min(n, len(train_d)) for n in sizes if n > 0}))
    random.Random(seed).shuffle(train_d)
    mapping = redial_mapping(settings, config.mapping, catalog.items)
    train_s = protocol_samples(train_d[: sizes[-1]], mapping, titles)
    valid_s = protocol_samples(valid_d, mapping, titles)
    dev_s = protocol_samples(dev_d, mapping, titles)
    # The contexts do not depend on n: one set, its text vectors computed once.
    train_x, valid_x = redial_contexts(train_s), redial_contexts(valid_s)
    dev_x = redial_contexts(dev_s, leave_out=False)
    embed_contexts([c for c, _ in train_x + valid_x + dev_x], settings)
    order = {str(d.get("conversationId", "")): k for k, d in enumerate(train_d)}
    log(
        f"{len(train_s)} train samples from {sizes[-1]} dialogues, {len(valid_s)} valid, {len(dev_s)} dev samples; "
        f"sizes {', '.join(map(str, sizes))}"
    )
    rows = []
    for n in tqdm(sizes, desc="sizes", disable=not progress):
        t0 = time.perf_counter()
        signals = build_signals(
            settings, catalog, config.sources(), ratings_rows=train_rows, dialogues=train_d[:n] + valid_d
        )
        picked = [k for k, s in enumerate(train_s) if order[s.dialogue] < n]
        train = Split(signals, [train_x[k] for k in picked], [train_s[k].dialogue for k in picked], config)
        valid = Split(signals, valid_x, [s.dialogue for s in valid_s], config)
        dev = Split(signals, dev_x, [s.dialogue for s in dev_s], config)
        w, epoch = fit_conversation_weights(train, valid, epochs)
        ranks = dev.ranks(w)
        figures = recalls(ranks, dev.dialogues)
        # What limits it: a movie the dialogues never saw suggested is rarely found (no count lifts it).
        seen = signals.suggested[dev.y] > 0
        rows.append(
            {
                "train_dialogues": n,
                "dialogues": n + len(valid_d),
                "train_samples": len(picked),
                "epoch": epoch,
                **figures,
                "targets_suggested": round(float(seen.mean()), 4) if len(seen) else 0.0,
                "recall@50_suggested": round(float((ranks[seen] < 50).mean()), 4) if seen.any() else None,
                "recall@50_never_suggested": round(float((ranks[~seen] < 50).mean()), 4) if (~seen).any() else None,
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
        log(
            f"{n} train dialogues ({len(picked)} samples): dev "
            + " / ".join(f"R@{k} {figures[f'recall@{k}']:.3f}" for k in KS)
            + f"; {seen.mean():.0%} of the targets suggested in those dialogues (epoch {epoch}, "
            f"{rows[-1]['seconds']:.0f} s)"
        )
    fits = (  # a line needs two sizes
        {key: log_linear_fit([r["dialogues"] for r in rows], [r[key] for r in rows], t) for key, t in TARGETS.items()}
        if len(rows) > 1
        else {}
    )
    return {
        "sizes": rows,
        "fits": fits,
        "dev_samples": len(dev_s),
        "dev_dialogues": len(dev_d),
        "valid_dialogues": len(valid_d),
        "catalog_size": len(ids),
        "epochs": epochs,
        "seed": seed,
        "protocol": "new-items",
        "seconds": round(time.perf_counter() - started, 1),
    }


def format_table(figures: dict) -> str:
    """Markdown: dev recall per number of training dialogues, then the log-linear fits."""
    lines = [
        "| train dialogues | samples | Recall@1 | Recall@10 | Recall@20 | Recall@50 | Recall@50 95% interval | "
        "targets suggested in them | Recall@50 of those / of the others |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in figures["sizes"]:
        low, high = r["interval"]["recall@50"]
        lines.append(
            f"| {r['train_dialogues']} | {r['train_samples']} | "
            + " | ".join(f"{r[f'recall@{k}']:.3f}" for k in KS)
            + f" | {low:.3f}-{high:.3f} | {r['targets_suggested']:.0%} | "
            + " / ".join(
                "-" if r[key] is None else f"{r[key]:.3f}"
                for key in ("recall@50_suggested", "recall@50_never_suggested")
            )
            + " |"
        )
    lines.append("")
    if not figures["fits"]:
        lines.append("(one size: no line fitted; give two or more with --sizes)")
    for key, fit in figures["fits"].items():
        need = (
            f"reached at about {fit['needed']:,} dialogues"
            if fit["needed"] is not None
            else "never reached at this rate"
        )
        lines.append(f"{key}: {fit['per_doubling']:+.4f} per doubling of the dialogues; {fit['target']} {need}")
    return "\n".join(lines)


def plot_curve(figures: dict, path: str | Path) -> Path:
    """Dev Recall@10 and @50 over the number of dialogues (log scale), the fitted lines and the targets, as a PNG."""
    plt = pyplot()
    xs = [r["dialogues"] for r in figures["sizes"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, colour in (("recall@10", "tab:blue"), ("recall@50", "tab:orange")):
        ys = [r[key] for r in figures["sizes"]]
        err = np.array([[r[key] - r["interval"][key][0], r["interval"][key][1] - r[key]] for r in figures["sizes"]]).T
        ax.errorbar(xs, ys, yerr=err, fmt="o", color=colour, capsize=3, label=f"dev {key.replace('recall', 'Recall')}")
        fit = figures["fits"].get(key)
        if fit is None:
            continue
        top = max(xs[-1] * 4, fit["needed"] or 0)
        line = np.geomspace(xs[0], min(top, 20000), 50)
        ax.plot(line, fit["a"] + fit["per_doubling"] * np.log2(line), "--", color=colour, alpha=0.7)
        ax.axhline(fit["target"], color=colour, linestyle=":", alpha=0.7)
    ax.set_xscale("log")
    ax.minorticks_off()
    lo, hi = ax.get_xlim()
    ticks = [t for t in (25, 50, 100, 200, 400, 800, 1600, 3200, 6400, 12800) if lo <= t <= hi]
    ticks = ticks if len(ticks) > 1 else xs
    ax.set_xticks(ticks, [f"{t:,}" for t in ticks])
    ax.set_xlabel(f"ReDial dialogues behind the head (train + {figures['valid_dialogues']} valid)")
    ax.set_ylabel("ReDial dev recall (new-items)")
    ax.set_title("Recall over training dialogues; dashed: log fit, dotted: targets")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


__all__ = ["SIZES", "TARGETS", "fit_conversation_weights", "format_table", "plot_curve", "run_redial_curve"]
