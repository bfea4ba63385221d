"""`recagent eval redial`: recommendation quality on ReDial dialogues, under a protocol of
tools/datasets/redial.py (--protocol new-items, the default, or all-mentions, that of the published tables).

Each sample (new-items): the messages before a recommender turn that suggests a movie (mapped to MovieLens, not
mentioned earlier); the system ranks the whole MovieLens catalog (9,742 movies) with the movies mentioned earlier
left out; Recall@1/10/20/50 of the suggested movie over all samples, each with a 95% bootstrap interval (whole
dialogues resampled). Systems, side by side (the ablation):

  popularity       MovieLens rating counts (a floor)
  retrieval        the pipeline without the head: the conversation's text searched in the catalog index
                   (top 40, ordered by the simple scorer of tools/ranking/simple.py), then the rest by popularity
  ranking head     the learned head over the whole catalog (tools/ranking/), the default configuration
  + LLM planner    with --planner local|openai: the full agent takes the last seeker message as its turn
                   (earlier messages as history, mentioned movies as liked/shown); the items it shows come
                   first, then the head's ranking of the rest
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from recagent.agent import Agent, Conversation, make_llm
from recagent.agent.toolbox import CANDIDATES
from recagent.evals.common import bootstrap_interval
from recagent.evals.simulate import PlannerOnly
from recagent.tools.catalog import load_catalog
from recagent.tools.datasets.ranking_signals import Signals, prepare_signals
from recagent.tools.datasets.redial import Sample, default_mapping, load_dialogues, protocol_samples
from recagent.tools.errors import StoreError
from recagent.tools.index import CatalogIndex, Hit
from recagent.tools.models import embed_texts
from recagent.tools.ranking import Context, conversation_context, load_ranker, rank_candidates
from recagent.tools.settings import Settings

# Published figures under each protocol (tools/datasets/redial.py). They rank ReDial's 6,924 movies and train on the
# whole ReDial train split (about 10,000 dialogues); recagent ranks 9,742 and trains on 600.
PUBLISHED = {
    "new-items": [
        {"system": "UniCRS (new items only)", "recall@1": None, "recall@10": 0.180, "recall@50": 0.335},
        {"system": "ReFICR (new items only)", "recall@1": None, "recall@10": 0.213, "recall@50": 0.465},
    ],
    "all-mentions": [
        {"system": "UniCRS (Wang et al., 2022)", "recall@1": 0.050, "recall@10": 0.224, "recall@50": 0.428},
        {"system": "MESE (Yang et al., 2022)", "recall@1": 0.056, "recall@10": 0.256, "recall@50": 0.455},
        {"system": "ReFICR", "recall@1": None, "recall@10": 0.305, "recall@50": 0.532},
        {"system": "GPT-4 zero-shot (He et al., 2023)", "recall@1": None, "recall@10": 0.201, "recall@50": None},
    ],
}
KS = (1, 10, 20, 50)


def ranks_of(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of each target in its row of scores (ties count against the target)."""
    tv = scores[np.arange(len(targets)), targets]
    return (scores >= tv[:, None]).sum(1) - 1


def recalls(ranks: np.ndarray, groups: list[str] | None = None) -> dict:
    """Recall@1/10/20/50, each with its 95% bootstrap interval (whole dialogues resampled when groups are given)."""
    hits = np.stack([ranks < k for k in KS], axis=1) if len(ranks) else np.zeros((0, len(KS)))
    out: dict = {f"recall@{k}": round(float(hits[:, j].mean()), 4) if len(ranks) else 0.0 for j, k in enumerate(KS)}
    out["interval"] = dict(zip((f"recall@{k}" for k in KS), bootstrap_interval(hits, groups)))
    return out


def _contexts(samples: list[Sample]) -> list[Context]:
    return [conversation_context(s.messages, [m.item for m in s.mentions], s.exclude) for s in samples]


def run_redial_eval(
    settings: Settings,
    data: str | Path,
    limit: int | None = None,
    planner: str = "none",
    model: str | None = None,
    base_url: str | None = None,
    timeout: float = 120.0,
    checkpoint: str | None = None,
    protocol: str = "new-items",
    progress: bool = True,
    log: Callable[[str], object] = print,
) -> dict:
    """Evaluate every system on the samples of `data` (the first `limit` dialogues) under a protocol (PROTOCOLS);
    returns the figures."""
    started = time.perf_counter()
    catalog = load_catalog("movies", settings)
    titles = {it.id: it.title for it in catalog.items}
    dialogues = load_dialogues(data, limit)
    samples = protocol_samples(dialogues, default_mapping(settings), titles, protocol)
    groups = [s.dialogue for s in samples]
    t0 = time.perf_counter()  # the head and its prepared signals (the default ones without a head)
    ranker = load_ranker(settings, path=Path(checkpoint) if checkpoint else None)
    signals = ranker.signals if ranker else Signals.load(prepare_signals(settings, catalog, log=log))
    setup = time.perf_counter() - t0
    pos = signals.pos
    targets = np.array([pos[s.target] for s in samples])
    contexts = _contexts(samples)
    excluded = np.zeros((len(samples), signals.n), bool)
    for k, s in enumerate(samples):
        excluded[k, [pos[i] for i in s.exclude if i in pos]] = True
    systems: dict[str, dict] = {}

    # popularity
    t0 = time.perf_counter()
    pop = np.broadcast_to(signals.popularity, (len(samples), signals.n)).copy()
    pop[excluded] = -np.inf
    systems["popularity (MovieLens)"] = {**recalls(ranks_of(pop, targets), groups), "seconds": time.perf_counter() - t0}

    # retrieval only: the index (or exact search over the same vectors when no index is built)
    t0 = time.perf_counter()
    ret = _retrieval_scores(settings, signals, contexts, excluded, progress)
    systems["retrieval only (MiniLM search + simple scorer)"] = {
        **recalls(ranks_of(ret, targets), groups),
        "seconds": time.perf_counter() - t0,
    }

    # the ranking head
    head_scores = None
    if ranker is None:
        log(
            "no ranking-head checkpoint found (train one with `recagent train-ranker`): the pipeline uses the "
            "simple scorer, so the head rows are left out"
        )
    else:
        t0 = time.perf_counter()
        ranker.embed(contexts, settings)
        head_scores = (
            np.concatenate(
                [
                    ranker.score(contexts[lo : lo + 32], settings)
                    for lo in tqdm(range(0, len(contexts), 32), desc="ranking head", disable=not progress, leave=False)
                ]
            )
            if contexts
            else np.zeros((0, signals.n))
        )
        systems["retrieval + ranking head (default)"] = {
            **recalls(ranks_of(head_scores, targets), groups),
            "seconds": time.perf_counter() - t0,
        }

    if planner != "none":
        t0 = time.perf_counter()
        base = head_scores if head_scores is not None else ret
        scores, failures = _planner_scores(
            settings, samples, base, signals, planner, model, base_url, timeout, progress
        )
        systems[f"+ LLM planner ({planner})"] = {
            **recalls(ranks_of(scores, targets), groups),
            "seconds": time.perf_counter() - t0,
            "failed_turns": failures,
        }

    main_name = (
        f"+ LLM planner ({planner})"
        if planner != "none"
        else "retrieval + ranking head (default)"
        if ranker is not None
        else "retrieval only (MiniLM search + simple scorer)"
    )
    seconds = time.perf_counter() - started
    main = systems[main_name]
    return {
        "data": str(data),
        "dialogues": len(dialogues),
        "samples": len(samples),
        "planner": planner,
        "system": main_name,
        "protocol": protocol,
        **{f"recall@{k}": main[f"recall@{k}"] for k in KS},
        "interval": main["interval"],
        "systems": systems,
        "published": PUBLISHED[protocol],
        "catalog_size": signals.n,
        "checkpoint": ranker.meta.get("path") if ranker else None,
        "timings": {
            "total_seconds": round(seconds, 2),
            "setup_seconds": round(setup, 2),
            "per_sample_ms": round(1000 * main["seconds"] / max(1, len(samples)), 2),
        },
        "protocol_text": (
            "every movie in a recommender message with respondentQuestions[id].suggested == 1 that maps "
            "to MovieLens (redial_to_movielens.csv) and was not mentioned in an earlier message is one "
            "sample; the messages before it (mentions as 'Title (Year)') are the input; the whole "
            f"MovieLens catalog ({signals.n:,} movies) is ranked, earlier-mentioned movies left out"
            if protocol == "new-items"
            else "every movie mentioned in a recommender message that maps to MovieLens is one sample, repeats "
            "included; the messages before it are the input; the whole MovieLens catalog "
            f"({signals.n:,} movies) is ranked, nothing left out"
        ),
    }


def _retrieval_scores(
    settings: Settings, signals: Signals, contexts: list[Context], excluded: np.ndarray, progress: bool
) -> np.ndarray:
    """The agent's pipeline without the head: text search (top 40), simple scorer, the rest by popularity."""
    vectors = embed_texts([c.text for c in contexts], settings) if contexts else np.zeros((0, 384), np.float32)
    out = np.broadcast_to(signals.popularity, (len(contexts), signals.n)).astype(np.float32).copy()
    try:
        index = CatalogIndex("movies", settings)
        use_index = index.count() > 0
    except StoreError:
        use_index = False
    for k, (ctx, vec) in enumerate(zip(contexts, vectors)):
        if use_index:
            hits = index.search(None, k=CANDIDATES, vector=vec, exclude=ctx.exclude)
        else:
            sims = signals.content @ vec
            sims[excluded[k]] = -np.inf
            top = np.argsort(-sims)[:CANDIDATES]
            hits = [Hit(signals.ids[j], signals.ids[j], float(sims[j]), {}) for j in top]
        for n, r in enumerate(rank_candidates(hits)):
            out[k, signals.pos[r.id]] = 10.0 + (CANDIDATES - n)  # above every popularity score, in order
    out[excluded] = -np.inf
    return out


def _planner_scores(
    settings: Settings,
    samples: list[Sample],
    base: np.ndarray,
    signals: Signals,
    planner: str,
    model: str | None,
    base_url: str | None,
    timeout: float,
    progress: bool,
) -> tuple[np.ndarray, int]:
    """The full agent on each sample: its shown items first, then `base` for the rest. The reply sentence is not
    written (PlannerOnly): it never changes which items are shown, and it is half of a turn's time on a CPU."""
    llm = make_llm(planner, settings, model=model, base_url=base_url, timeout=timeout)
    agent = Agent(PlannerOnly(llm), "movies", settings)
    scores = base.copy()
    failures = 0
    for k, s in enumerate(tqdm(samples, desc="agent", disable=not progress, leave=False)):
        conv = Conversation(catalog="movies")
        seeker = [n for n, (role, _) in enumerate(s.messages) if role == "seeker"]
        last = seeker[-1] if seeker else None
        for n, (role, text) in enumerate(s.messages):
            if n == last:
                break
            if role == "seeker":
                conv.add_user(text)
            else:
                conv.add_assistant(text, [])
        conv.liked = [m.item for m in s.mentions if m.by_seeker]
        conv.shown = [m.item for m in s.mentions if not m.by_seeker]
        text = s.messages[last][1] if last is not None else "Can you recommend a movie?"
        reply = agent.turn(conv, text)
        if reply.error:
            failures += 1
            continue
        shown = [it["id"] for it in reply.items if it.get("id") in signals.pos and it["id"] not in s.exclude]
        top = np.nanmax(np.where(np.isfinite(scores[k]), scores[k], np.nan)) if np.isfinite(scores[k]).any() else 0
        for n, item in enumerate(shown):
            scores[k, signals.pos[item]] = top + 1.0 + (len(shown) - n)
    return scores, failures


def format_table(figures: dict) -> str:
    """The figures as a Markdown table with 95% bootstrap intervals, published systems below (their protocols
    differ: see the notes)."""
    head = " | ".join(f"Recall@{k}" for k in KS)
    lines = [f"| system | {head} | seconds |", "| --- |" + " ---: |" * (len(KS) + 1)]
    keys = [f"recall@{k}" for k in KS]
    for name, row in figures["systems"].items():
        cells = [f"{row[key]:.3f} ({row['interval'][key][0]:.3f}-{row['interval'][key][1]:.3f})" for key in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {row['seconds']:.1f} |")
    for row in figures["published"]:
        cells = [f"{row[f'recall@{k}']:.3f}" if row.get(f"recall@{k}") is not None else "-" for k in KS]
        lines.append(f"| {row['system']} (published, {figures['protocol']}) | " + " | ".join(cells) + " | - |")
    return "\n".join(lines)
