"""The ranking head as a torch module, its input tensors and its checkpoint file.

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
  w_f  learned weights, one set per kind of context (0: conversation, 1: rating history), on the features
       (tools/ranking/features.py).

For a conversation the default score is the feature mixture alone, sum_f w_f * feature_f(u, i)
(RankerConfig.conversation_embeddings = False): <u, v_i> and b_i then serve rating histories only. With a few
hundred training dialogues a learned mixture over strong signals transfers to new dialogues better than the
projections (measured on ReDial dev, see docs/benchmarks.md).

The checkpoint holds only the learned weights and metadata (config, item ids); the data behind the features is
prepared apart (tools/datasets/ranking_signals.py). This module imports torch: the agent imports it only once a
head is loaded (tools/ranking/ranker.py), and training (tools/train/ranker.py) uses it directly.
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from recagent.tools.datasets.ranking_signals import Signals
from recagent.tools.errors import MissingModelError

from .config import CONVERSATION, FEATURES, HISTORY, UNTRAINED, RankerConfig
from .features import Context, context_items, exclusion_mask, features

Inputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # RankingHead.forward's


class RankingHead(nn.Module):
    """The learned part of the ranking head, for a catalog of n_items (see the formula above)."""

    def __init__(self, n_items: int, config: RankerConfig):
        super().__init__()
        self.config = config
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
        self.learned: torch.Tensor
        self.register_buffer(
            "learned", torch.tensor([[f not in UNTRAINED for f in FEATURES]] * 2, dtype=torch.float32), persistent=False
        )

    def item_vectors(self, content: torch.Tensor) -> torch.Tensor:  # content [N, 384] -> [N, d]
        return self.item_id.weight + self.item_content(content)

    @torch.no_grad()
    def history_space(self, content: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """v_i [N, d] and b_i [N] as the head scores a rating history: u . v_i + b_i, u the mean of the history's
        item vectors (tools/ranking/taste.py builds a user's u from their feedback)."""
        c = torch.from_numpy(content)  # [N, 384]
        bias = self.item_bias.weight[:, 0] + self.content_bias(c)[:, HISTORY]  # [N]
        return self.item_vectors(c).numpy(), bias.numpy()

    def forward(
        self,
        hist: torch.Tensor,
        hist_w: torch.Tensor,
        text: torch.Tensor,
        kind: torch.Tensor,
        feats: torch.Tensor,
        content: torch.Tensor,
    ) -> torch.Tensor:
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
        if not self.config.conversation_embeddings:  # conversations: the feature mixture alone
            dot, bias = dot * ~conv, bias * ~conv
        w = (self.feature_weights * self.learned)[kind]  # [B, F]
        return dot + bias + torch.einsum("bnf,bf->bn", feats, w)

    @torch.no_grad()
    def rank(self, signals: Signals, contexts: list[Context], batch: int = 32) -> np.ndarray:
        """Scores [B, N] of the contexts over the whole catalog (signals.ids order), `batch` contexts at a time;
        excluded items get -inf. The contexts' text vectors must be set (features.embed_contexts)."""
        content = torch.from_numpy(signals.content)  # [N, 384]
        out = []
        for lo in range(0, len(contexts), batch):
            part = contexts[lo : lo + batch]
            scores = self(*batch_inputs(signals, part, self.config), content).numpy()
            scores[exclusion_mask(signals, part)] = -np.inf
            out.append(scores)
        return np.concatenate(out) if out else np.zeros((0, signals.n), np.float32)


def batch_inputs(signals: Signals, contexts: list[Context], config: RankerConfig) -> Inputs:
    """Tensors for RankingHead.forward from contexts (text vectors must be set): hist, hist_w, text, kind, feats."""
    L = max(1, max(len(context_items(signals, c, config)[0]) for c in contexts))
    hist = np.zeros((len(contexts), L), np.int64)  # [B, L]
    hist_w = np.zeros((len(contexts), L), np.float32)  # [B, L]
    for k, ctx in enumerate(contexts):
        idx, w = context_items(signals, ctx, config)
        hist[k, : len(idx)] = idx
        hist_w[k, : len(idx)] = w
    text = np.stack(
        [c.text_vector if c.text_vector is not None else np.zeros(config.content_dim, np.float32) for c in contexts]
    )  # [B, 384]
    kind = np.array([c.kind for c in contexts], np.int64)  # [B]
    feats = features(signals, contexts, config)  # [B, N, F]
    return (
        torch.from_numpy(hist),
        torch.from_numpy(hist_w),
        torch.from_numpy(text.astype(np.float32)),
        torch.from_numpy(kind),
        torch.from_numpy(feats),
    )


def remap_head(head: RankingHead, old_ids: list[str], new_ids: list[str]) -> RankingHead:
    """A head for a changed catalog: the learned rows of the items that are still there, new items at their
    initial values."""
    new = RankingHead(len(new_ids), head.config)
    state = head.state_dict()
    old_pos = {i: n for n, i in enumerate(old_ids)}
    keep = [(n, old_pos[i]) for n, i in enumerate(new_ids) if i in old_pos]
    with torch.no_grad():
        new.load_state_dict(
            {k: v for k, v in state.items() if not k.startswith(("item_id", "item_bias"))}, strict=False
        )
        if keep:
            dst, src = map(list, zip(*keep))
            new.item_id.weight[dst] = state["item_id.weight"][src]
            new.item_bias.weight[dst] = state["item_bias.weight"][src]
    return new


# ---- the checkpoint file ------------------------------------------------------------------------


def save_checkpoint(path: Path, head: RankingHead, config: RankerConfig, meta: dict, ids: list[str]) -> None:
    """Write atomically (a temporary file, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    state = {k: v.detach().cpu() for k, v in head.state_dict().items()}
    torch.save({"state_dict": state, "config": asdict(config), "meta": meta, "ids": ids}, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's contents (state_dict, config, meta, ids); one that cannot be read raises
    MissingModelError."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        raise MissingModelError(
            f"ranking-head checkpoint {path} cannot be read ({exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no details'})"
        ) from None
    if not isinstance(ckpt, dict) or not {"state_dict", "config", "ids"} <= ckpt.keys():
        raise MissingModelError(
            f"ranking-head checkpoint {path} is not one: it lacks the state_dict, config or "
            "ids (write one with `recagent train-ranker`)"
        )
    return ckpt


def head_from_checkpoint(ckpt: dict[str, Any], path: Path) -> tuple[RankingHead, RankerConfig]:
    """The head and its config from a loaded checkpoint; one that does not fit raises MissingModelError."""
    try:
        config = RankerConfig.from_dict(ckpt["config"])
        head = RankingHead(len(ckpt["ids"]), config)
        head.load_state_dict(ckpt["state_dict"])
    except (TypeError, KeyError, RuntimeError) as exc:
        raise MissingModelError(
            f"ranking-head checkpoint {path} does not fit this version of recagent "
            f"({exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    return head, config
