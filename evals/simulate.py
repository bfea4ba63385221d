"""`recagent eval simulate`: simulated users, each with a hidden target item, talk to the agent.

The user is a deterministic rule-based one built from the catalog's metadata: it describes the target without
naming it, reveals one more attribute each turn, and turns down what it was shown ("none of those"). It stops when
the target is among the items the agent lists, or after a number of turns. Targets: for movies, films that
ReDial dev recommenders suggested (mapped to MovieLens); for fashion, products of the 1,000 held out of the image
encoder's training (tools/datasets/splits.py). Modes: text; voice (each user turn spoken by espeak-ng and
transcribed by Whisper); image (the first turn shows the photo of a similar item, never the target's own). Every
user turn is checked for leaks of the target's title; there must be none.
"""

from __future__ import annotations

import hashlib
import random
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from recagent.agent.llm import LLM, Completion, OnToken
from recagent.agent.loop import Agent
from recagent.tools.catalog import Item, load_catalog, singular
from recagent.tools.datasets.redial import default_mapping, load_dialogues, redial_dir
from recagent.tools.datasets.splits import fashion_holdout_ids
from recagent.tools.errors import AudioError, ConfigError
from recagent.tools.settings import Settings
from recagent.tools.text import plain_words, strip_year

from .common import percentile, rate, wilson_interval
from .recording import Transcripts, recorded_run, start_recording

MODES = ("text", "voice", "image")
MAX_TURNS = 5
REJECT = ("None of those.", "Not those either.", "Still not it.", "No, none of these.")
GENRE_WORDS = {"Sci-Fi": "science fiction", "Children": "children's", "Film-Noir": "film noir", "IMAX": "IMAX"}


# ---- targets -------------------------------------------------------------------------------------------------


def title_plain(item: Item) -> str:
    """The title without its "(Year)", as plain words: what the leak check compares."""
    return plain_words(strip_year(item.title))


def describable(item: Item) -> bool:
    """A target the user can describe and the leak check can test: genres and a year, a title of 4+ letters."""
    if item.metadata.get("articleType"):
        return bool(item.metadata.get("baseColour") and item.image)
    return bool(item.metadata.get("genres") and item.metadata.get("year")) and len(title_plain(item)) >= 4


def movie_targets(settings: Settings, n: int, seed: int = 0) -> list[Item]:
    """n films that recommenders suggested in ReDial dev, mapped to MovieLens (a seeded sample)."""
    mapping = default_mapping(settings)
    suggested = []
    for dialogue in load_dialogues(redial_dir(settings) / "dev.jsonl"):
        questions = dialogue.get("respondentQuestions") or {}
        for movie, answers in questions.items() if isinstance(questions, dict) else []:
            if (answers or {}).get("suggested") == 1 and movie in mapping:
                suggested.append(mapping[movie])
    items = {it.id: it for it in load_catalog("movies", settings).items}
    pool = [items[i] for i in dict.fromkeys(suggested) if i in items and describable(items[i])]
    return random.Random(seed).sample(pool, min(n, len(pool)))


def fashion_targets(settings: Settings, n: int, seed: int = 0) -> list[Item]:
    """n of the 1,000 fashion products held out of the image encoder's training (a seeded sample)."""
    items = load_catalog("fashion", settings).items
    held = fashion_holdout_ids(items)
    pool = sorted((it for it in items if it.id in held and describable(it)), key=lambda it: it.id)
    return random.Random(seed).sample(pool, min(n, len(pool)))


# ---- the user's words ----------------------------------------------------------------------------------------


def title_words(item: Item) -> set[str]:
    """The title's words of 3+ letters: clues must not use them (a tag like "star wars" would give it away)."""
    return {w for w in title_plain(item).split() if len(w) >= 3}


def movie_clues(item: Item) -> list[str]:
    """What a user who has this film in mind would say, one more thing per turn, never its title."""
    meta = item.metadata
    genres = [GENRE_WORDS.get(g, g.lower()) for g in meta.get("genres", [])]
    banned = title_words(item)
    tags = [
        t
        for t in meta.get("tags", [])
        if len(t) <= 30 and not (set(plain_words(t).split()) & banned) and not re.search(r"\d", t)
    ]
    decade = meta["year"] // 10 * 10
    clues = [
        f"I'm looking for a {' '.join(genres[:2])} movie.",
        f"It's from the {decade}s." + (f" Something with {tags[0]}." if tags else ""),
        (
            f"Think {', '.join(tags[1:3])}."
            if len(tags) > 1
            else f"It is also {' and '.join(genres[2:4])}."
            if len(genres) > 2
            else "It's a well-known one."
        ),
        f"It came out in {meta['year']}.",
        (f"It has {', '.join(tags[3:5])}." if len(tags) > 3 else f"It's a {', '.join(genres)} film."),
    ]
    return clues


def fashion_clues(item: Item) -> list[str]:
    """A shopper's description of this product, one more attribute per turn, never its full name."""
    meta = item.metadata
    kind = singular(meta.get("articleType", "item")).lower()
    who = {"Men": "men's", "Women": "women's", "Boys": "boys'", "Girls": "girls'", "Unisex": "unisex"}.get(
        meta.get("gender", ""), ""
    )
    known = set(plain_words(" ".join(str(v) for v in meta.values())).split()) | {"men", "women", "boys", "girls"}
    name_words = [w for w in plain_words(item.title).split() if w not in known and len(w) >= 3]
    brand = item.title.split()[0]
    details = [w for w in name_words[1:] if w != plain_words(brand)][:2]
    return [
        f"I'm looking for a {who} {kind}.".replace("  ", " "),
        f"In {meta.get('baseColour', '').lower()}.",
        f"For {meta.get('usage', 'everyday').lower()} wear"
        + (f", for {meta['season'].lower()}." if meta.get("season") else "."),
        f"Ideally by {brand}.",
        f"It's {' '.join(details)}." if details else f"A {meta.get('subCategory', kind).lower()} piece.",
    ]


def user_turns(item: Item, max_turns: int = MAX_TURNS) -> list[str]:
    """The user's messages: the first clue, then "none of those" and one more clue each turn."""
    clues = fashion_clues(item) if item.metadata.get("articleType") else movie_clues(item)
    turns = [clues[0]]
    for n in range(1, len(clues[1:max_turns]) + 1):
        turns.append(f"{REJECT[(n - 1) % len(REJECT)]} {' '.join(clues[1 : n + 1])}")
    return turns


def leaks(text: str, item: Item) -> bool:
    """Whether the user's words name the target (its whole title, as words)."""
    return f" {title_plain(item)} " in f" {plain_words(text)} "


def similar_photo(item: Item, items: list[Item]) -> Item | None:
    """Another item that looks like the target, for the image mode: same type, colour and gender (fashion), or
    same first genre and decade (movies); never the target itself. The lowest md5 of the id decides."""
    meta = item.metadata
    fashion = bool(meta.get("articleType"))

    def same(m: dict) -> bool:
        if fashion:
            return all(m.get(k) == meta.get(k) for k in ("articleType", "baseColour", "gender"))
        return m.get("genres", [""])[:1] == meta["genres"][:1] and m.get("year", 0) // 10 == meta["year"] // 10

    pool = [it for it in items if it.id != item.id and it.image and same(it.metadata)]
    return min(pool, key=lambda it: hashlib.md5(it.id.encode()).hexdigest()) if pool else None


# ---- running -------------------------------------------------------------------------------------------------


class PlannerOnly:
    """Passes the planner's calls to the LLM and answers the reply-writing ones with a fixed sentence: the sentence
    never changes which items are listed, and writing it is half of a turn's time on a CPU (--no-writer)."""

    SENTENCE = "Here are some picks."

    def __init__(self, llm: LLM):
        self.inner = llm
        self.name = llm.name

    def complete(
        self,
        messages: list[dict],
        *,
        schema: dict | None = None,
        max_tokens: int = 256,
        on_token: OnToken | None = None,
    ) -> Completion:
        if schema is not None:
            return self.inner.complete(messages, schema=schema, max_tokens=max_tokens, on_token=on_token)
        if on_token:
            on_token(self.SENTENCE)
        return Completion(self.SENTENCE)


def simulate_user(
    agent: Agent, item: Item, mode: str, transcripts: Transcripts, photo: Item | None, max_turns: int = MAX_TURNS
) -> dict:
    """One simulated user's dialogue with the agent: its turns, what was shown, when (if) the target was listed."""
    conversation = agent.new_conversation()
    turns: list[dict] = []
    record = {
        "target": item.id,
        "title": item.title,
        "mode": mode,
        "photo": photo.id if photo else None,
        "turns": turns,
        "success_turn": None,
        "leaks": 0,
    }
    leaked = 0
    for n, said in enumerate(user_turns(item, max_turns), 1):
        leaked += leaks(said, item)
        text, transcript, heard = said, None, None
        if mode == "voice":
            try:
                transcript, heard = transcripts.transcribe(
                    f"speak:{said}", transcripts.render(said), agent.catalog_name
                )
            except AudioError as exc:
                turns.append({"said": said, "error": str(exc)})
                continue
            leaked += leaks(transcript, item)
            text = transcript
        image = photo.image if mode == "image" and n == 1 and photo else None
        reply = agent.turn(conversation, text, image=image)
        if heard is not None:  # heard before the agent's turn: its total counts the listening too
            reply.timings["transcription"] = heard
            reply.timings["total"] = round(reply.timings.get("total", 0.0) + heard, 3)
        ids = [i["id"] for i in reply.items]
        turns.append(
            {
                "said": said,
                "transcript": transcript,
                "items": ids,
                "clarifying": reply.clarifying,
                "error": reply.error,
                "timings": reply.timings,
            }
        )
        if item.id in ids:
            record["success_turn"] = n
            break
    record["leaks"] = leaked
    return record


def run_simulation(
    settings: Settings,
    llm: LLM,
    catalog: str,
    n: int,
    modes: list[str],
    *,
    k: int = 10,
    max_turns: int = MAX_TURNS,
    seed: int = 0,
    record: str | Path | None = None,
    replay: str | None = None,
    writer: bool = True,
    resume: bool = False,
    progress: bool = True,
) -> dict:
    """n simulated users per mode against the agent on one catalog (listing k items a turn); success@k within
    max_turns, per mode."""
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ConfigError(f"unknown mode(s) {', '.join(bad)}: use {', '.join(MODES)}")
    targets = movie_targets(settings, n, seed) if catalog == "movies" else fashion_targets(settings, n, seed)
    items = load_catalog(catalog, settings).items if "image" in modes else []
    recorder, finished = start_recording(
        llm, record, resume, "user", {"catalog": catalog, "n": n, "modes": modes, "k": k, "writer": writer}
    )
    done = {(d["mode"], d["target"]): d for d in finished}
    model = recorder or llm
    agent = Agent(model if writer else PlannerOnly(model), catalog, settings, shown=k)
    started = time.perf_counter()
    dialogues: list[dict] = []
    with recorded_run(recorder), tempfile.TemporaryDirectory(prefix="recagent-sim-") as tmp:
        transcripts = Transcripts(settings, Path(tmp), recorder, replay)
        bar = tqdm(
            total=len(targets) * len(modes),
            desc=f"simulated users ({catalog})",
            unit="user",
            disable=not progress,
            file=sys.stderr,
        )
        for mode in modes:
            for item in targets:
                if (mode, item.id) in done:  # finished before the run was interrupted (--resume)
                    dialogues.append(done[(mode, item.id)])
                else:
                    photo = similar_photo(item, items) if mode == "image" else None
                    dialogues.append(simulate_user(agent, item, mode, transcripts, photo, max_turns))
                    if recorder:
                        recorder.write({"kind": "user", "result": dialogues[-1]})
                bar.update(1)
                bar.set_postfix_str(f"{mode}: {sum(d['success_turn'] is not None for d in dialogues)} found")
        bar.close()
    targets_are = "ReDial dev suggestions mapped to MovieLens" if catalog == "movies" else "held-out fashion products"
    return {
        "catalog": catalog,
        "n": len(targets),
        "k": k,
        "max_turns": max_turns,
        "seed": seed,
        "model": llm.name,
        "writer": writer,
        "targets": targets_are,
        "leaks": sum(d["leaks"] for d in dialogues),
        "modes": {m: summarise_mode([d for d in dialogues if d["mode"] == m], max_turns) for m in modes},
        "seconds": round(time.perf_counter() - started, 1),
        "recording": str(record) if record else None,
        "dialogues": dialogues,
    }


def summarise_mode(dialogues: list[dict], max_turns: int) -> dict:
    """Success rate, turns needed, success by turn, latency and errors of one mode's dialogues."""
    found = [d["success_turn"] for d in dialogues if d["success_turn"]]
    totals = [t["timings"]["total"] for d in dialogues for t in d["turns"] if t.get("timings") and not t["error"]]
    return {
        "n": len(dialogues),
        "successes": len(found),
        "success_rate": rate(len(found), len(dialogues)),
        "success_ci95": wilson_interval(len(found), len(dialogues)),
        "mean_turns_success": round(float(np.mean(found)), 2) if found else None,
        "mean_turns": round(float(np.mean([d["success_turn"] or len(d["turns"]) for d in dialogues])), 2)
        if dialogues
        else None,
        "success_by_turn": [rate(sum(1 for f in found if f <= t), len(dialogues)) for t in range(1, max_turns + 1)],
        "latency_p50": percentile(totals, 50),
        "latency_p95": percentile(totals, 95),
        "turn_errors": sum(1 for d in dialogues for t in d["turns"] if t.get("error")),
        "leaks": sum(d["leaks"] for d in dialogues),
    }


def format_simulation(figures: dict) -> str:
    """The headline figures per mode, for the terminal."""
    lines = [
        f"{figures['catalog']}: {figures['n']} users per mode, success@{figures['k']} within "
        f"{figures['max_turns']} turns; title leaks in user turns: {figures['leaks']}"
    ]
    for mode, m in figures["modes"].items():
        lines.append(
            f"  {mode:6} success {m['success_rate']:.0%} ({m['successes']}/{m['n']}; 95% CI "
            f"{_percent_range(m.get('success_ci95'))}), mean turns to success "
            f"{m['mean_turns_success']}, turn p50 {m['latency_p50']} s"
        )
    return "\n".join(lines)


def _percent_range(interval: list[float] | None) -> str:
    return f"{interval[0]:.0%}-{interval[1]:.0%}" if interval else "-"
