"""ReDial dialogues: reading them, rendering movie mentions, the ReDial -> MovieLens mapping, and the samples
of the recommendation protocols used by `recagent eval redial` and by `recagent train-ranker`.

The protocols (restricted to movies that exist in MovieLens); the system sees every message before the one that
holds the target (mentions rendered as "Title (Year)") and ranks the whole catalog:
  new-items (the default; iEvaLM, "LLMs as zero-shot CRS"): every movie in a recommender message whose
      `respondentQuestions[id].suggested` is 1 and that was not mentioned in an earlier message is one sample;
      the movies mentioned earlier are left out of the ranking.
  all-mentions (the published tables: CRSLab, KBRD, UniCRS, MESE): every movie mentioned in a recommender
      message is one sample, repeats included, and nothing is left out of the ranking (a movie the dialogue
      already named can be the answer, which is why these figures run higher).
"""

from __future__ import annotations

import csv
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recagent.tools.catalog import Item, load_catalog
from recagent.tools.settings import Settings
from recagent.tools.text import strip_year, title_key, title_year

MENTION = re.compile(r"@(\d+)")
PROTOCOLS = ("new-items", "all-mentions")


@dataclass
class Mention:
    """A movie mentioned before the turn to predict: its MovieLens id, who mentioned it, the message index."""

    item: str
    by_seeker: bool
    turn: int
    liked: int | None = None  # the seeker's answer after the dialogue: NOT used as input (it is the future)


@dataclass
class Sample:
    """One recommendation to predict: the dialogue so far, and the suggested movie (a MovieLens id)."""

    dialogue: str
    turn: int  # index of the recommender message that holds the target
    target: str
    messages: list[tuple[str, str]]  # (role "seeker"/"recommender", rendered text), all before the turn
    mentions: list[Mention] = field(default_factory=list)  # earlier mentions that map to MovieLens, in order
    protocol: str = "new-items"

    @property
    def exclude(self) -> set[str]:
        """What is left out of the ranking: the movies mentioned earlier (nothing under all-mentions)."""
        return {m.item for m in self.mentions} if self.protocol == "new-items" else set()

    def request(self, last: int = 6) -> str:
        """The text of the conversation, the last messages first-weighted as plain text (for the text encoder)."""
        return "\n".join(f"{role}: {text}" for role, text in self.messages[-last:])

    def seeker_text(self) -> str:
        return " ".join(text for role, text in self.messages if role == "seeker")


def redial_dir(settings: Settings) -> Path:
    return settings.require_data() / "redial"


def load_dialogues(path: str | Path, limit: int | None = None) -> list[dict]:
    """The dialogues of a ReDial JSON-lines file (the first `limit` of them)."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                out.append(json.loads(line))
                if limit is not None and len(out) >= limit:
                    break
    return out


def load_mapping(path: str | Path) -> dict[str, str]:
    """ReDial movie id -> MovieLens movieId (as str) from a CSV with columns redialMovieId, mlMovieId."""
    with open(path, newline="", encoding="utf-8") as fh:
        return {
            row["redialMovieId"].strip(): row["mlMovieId"].strip()
            for row in csv.DictReader(fh)
            if row.get("mlMovieId", "").strip()
        }


def redial_titles(path: str | Path) -> dict[str, str]:
    """ReDial movie id -> its name as ReDial writes it ("Police Academy  (1984)")."""
    with open(path, newline="", encoding="utf-8") as fh:
        return {row["movieId"].strip(): row["movieName"].strip() for row in csv.DictReader(fh)}


def default_mapping(settings: Settings) -> dict[str, str]:
    """The mapping shipped with the data (`redial_to_movielens.csv`), as checked in docs/benchmarks.md."""
    return load_mapping(redial_dir(settings) / "redial_to_movielens.csv")


def _clean_title(name: str) -> str:
    return re.sub(r"\s+", " ", name).strip()


def render(
    text: str,
    dialogue: dict,
    mapping: dict[str, str] | None = None,
    titles: dict[str, str] | None = None,
    names: dict[str, str] | None = None,
    spoken: bool = False,
) -> str:
    """A message with each "@id" replaced by the movie's title: the MovieLens "Title (Year)" when it maps (through
    `mapping` and `titles`), else the dialogue's own name for it, else its name in `names` (movies_with_mentions.csv).

    spoken=True gives the message as it is read aloud (`recagent eval voice`): titles without their "(Year)", a
    mention without a name left out, spaces tidied (none before punctuation); otherwise such a mention stays "@id".
    """
    mentions = dialogue.get("movieMentions") or {}

    def one(match: re.Match) -> str:
        rid = match.group(1)
        ml = (mapping or {}).get(rid)
        if ml and titles and ml in titles:
            name = titles[ml]
        else:
            name = mentions.get(rid) or (names or {}).get(rid) or ""
            if not name:
                return "" if spoken else match.group(0)
            name = _clean_title(name)
        return strip_year(name) if spoken else name

    rendered = MENTION.sub(one, text)
    if spoken:
        rendered = re.sub(r"\s+([.,!?])", r"\1", re.sub(r"\s+", " ", rendered)).strip()
    return rendered


def dialogue_samples(
    dialogue: dict, mapping: dict[str, str], titles: dict[str, str], protocol: str = "new-items"
) -> list[Sample]:
    """The samples of one dialogue under a protocol above."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown ReDial protocol {protocol!r}: one of {', '.join(PROTOCOLS)}")
    recommender = dialogue.get("respondentWorkerId")
    questions = dialogue.get("respondentQuestions") or {}
    seeker_answers = dialogue.get("initiatorQuestions") or {}
    cid = str(dialogue.get("conversationId", ""))
    samples: list[Sample] = []
    history: list[tuple[str, str]] = []
    mentions: list[Mention] = []
    seen_ids: set[str] = set()  # ReDial ids mentioned so far (mapped or not)
    for turn, message in enumerate(dialogue.get("messages", [])):
        text = message.get("text", "")
        by_recommender = message.get("senderWorkerId") == recommender
        ids = MENTION.findall(text)
        if by_recommender:
            # "Not mentioned earlier" means in an earlier message: a movie named twice in the same message
            # is two samples, as in the reference count (860 on dev.jsonl).
            for rid in ids:
                ml = mapping.get(rid)
                if not ml:
                    continue
                if protocol == "new-items" and (
                    rid in seen_ids or not isinstance(questions.get(rid), dict) or questions[rid].get("suggested") != 1
                ):
                    continue
                samples.append(Sample(cid, turn, ml, list(history), list(mentions), protocol))
        for rid in ids:
            seen_ids.add(rid)
            ml = mapping.get(rid)
            if ml and ml not in {m.item for m in mentions}:
                liked = (seeker_answers.get(rid) or {}).get("liked")
                mentions.append(Mention(ml, not by_recommender, turn, liked))
        history.append(("recommender" if by_recommender else "seeker", render(text, dialogue, mapping, titles)))
    return samples


def protocol_samples(
    dialogues: list[dict], mapping: dict[str, str], titles: dict[str, str], protocol: str = "new-items"
) -> list[Sample]:
    """Every sample of a protocol over these dialogues, in order."""
    out: list[Sample] = []
    for dialogue in dialogues:
        out.extend(dialogue_samples(dialogue, mapping, titles, protocol))
    return out


# ---- the mapping: a stricter title-and-year matcher ------------------------------------------------


def split_year(name: str) -> tuple[str, int | None]:
    """'Police Academy  (1984)' -> ('Police Academy', 1984); no year -> (name, None)."""
    return _clean_title(strip_year(name)), title_year(name.strip())


def match_titles(
    redial_names: dict[str, str], movies: list[Item] | list[tuple[str, str, int | None]]
) -> dict[str, tuple[str, str]]:
    """ReDial id -> (MovieLens id, rule) by normalised title and year.

    Rules, in order: the same title and year ("exact"); the same title, year one apart ("year±1", release
    years differ between sources); the same title, no year in ReDial, only one MovieLens movie with that title
    ("title-only"). Titles are compared by tools.text.title_key (accents, case, punctuation, a leading article), also
    without spaces ("WALL-E" = "WALL·E"), against MovieLens's title and its alternative titles in parentheses,
    and ReDial's title without a parenthesised subtitle. A ReDial name without a year that matches several
    MovieLens movies is left unmapped rather than guessed.
    `movies` holds catalog items (id, metadata["title"], metadata["year"]) or (id, title, year) tuples.
    """
    by_title: dict[str, list[tuple[str, int | None]]] = {}
    for movie in movies:
        if isinstance(movie, tuple):
            mid, title, year = movie
        else:
            mid, title, year = movie.id, movie.metadata.get("title", movie.title), movie.metadata.get("year")
        keys = {title_key(title)}
        head, _, alt = title.partition(" (")
        if alt:
            keys.add(title_key(head))
            keys.add(title_key(alt.rstrip(")")))
        keys |= {k.replace(" ", "") for k in keys}  # "WALL-E" and "WALL·E"
        for key in keys:
            if key:
                by_title.setdefault(key, []).append((str(mid), year))
    out: dict[str, tuple[str, str]] = {}
    for rid, name in redial_names.items():
        title, year = split_year(name)
        key = title_key(title)
        cands = by_title.get(key) or by_title.get(key.replace(" ", "")) or []
        if not cands and " (" in title:  # "The Meyerowitz Stories (New and Selected)"
            cands = by_title.get(title_key(title.partition(" (")[0]), [])
        if not cands:
            continue
        if year is None:
            if len({m for m, _ in cands}) == 1:
                out[rid] = (cands[0][0], "title-only")
            continue
        exact = [m for m, y in cands if y == year]
        if exact:
            out[rid] = (exact[0], "exact")
            continue
        near = [m for m, y in cands if y is not None and abs(y - year) == 1]
        if len(set(near)) == 1:
            out[rid] = (near[0], "year±1")
    return out


def write_mapping(
    path: str | Path, matched: dict[str, tuple[str, str]], redial_names: dict[str, str], ml_titles: dict[str, str]
) -> None:
    """Write a mapping CSV in the shipped format (plus the rule that matched)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["redialMovieId", "redialName", "mlMovieId", "mlTitle", "rule"])
        for rid in sorted(matched, key=int):
            ml, rule = matched[rid]
            writer.writerow([rid, redial_names.get(rid, ""), ml, ml_titles.get(ml, ""), rule])
    tmp.replace(path)


def redial_mapping(settings: Settings, name: str, catalog_items: list[Item] | None = None) -> dict[str, str]:
    """ReDial id -> MovieLens id by name: "redial_to_movielens.csv" (shipped with the data), another CSV in the
    redial folder, or "recagent" (match_titles against `catalog_items`, the movies catalog)."""
    if name == "recagent":
        names = redial_titles(redial_dir(settings) / "movies_with_mentions.csv")
        items = catalog_items if catalog_items is not None else load_catalog("movies", settings).items
        return {r: m for r, (m, _) in match_titles(names, items).items()}
    if name == "redial_to_movielens.csv":
        return default_mapping(settings)
    return load_mapping(redial_dir(settings) / name)


def compare_mappings(settings: Settings, sample: int = 100, seed: int = 5) -> dict[str, Any]:
    """The shipped ReDial -> MovieLens mapping beside recagent's matcher (`recagent eval redial-mapping`).

    Returns the counts (redial_movies, shipped, matched, same, only_shipped), the rows to check by eye
    (shipped_rows: `sample` random (ReDial name, MovieLens title) rows of the shipped mapping; added_rows:
    (name, title, rule) rows that the matcher adds; different: (name, shipped title, matcher's title)), and what
    write_mapping needs (matches, names, titles)."""
    movies = load_catalog("movies", settings)
    titles = {it.id: it.title for it in movies.items}
    names = redial_titles(redial_dir(settings) / "movies_with_mentions.csv")
    shipped = default_mapping(settings)
    mine = match_titles(names, movies.items)
    same = sum(1 for r, m in shipped.items() if r in mine and mine[r][0] == m)
    differ = [r for r, m in shipped.items() if r in mine and mine[r][0] != m]
    added = sorted((r for r in mine if r not in shipped), key=int)
    rng = random.Random(seed)
    shipped_rows = [
        (names.get(r, r), titles.get(shipped[r], shipped[r]))
        for r in rng.sample(sorted(shipped, key=int), min(sample, len(shipped)))
    ]
    added_rows = [
        (names.get(r, r), titles.get(mine[r][0]), mine[r][1]) for r in rng.sample(added, min(sample, len(added)))
    ]
    return {
        "redial_movies": len(names),
        "shipped": len(shipped),
        "matched": len(mine),
        "same": same,
        "different": [(names.get(r, r), titles.get(shipped[r]), titles.get(mine[r][0])) for r in differ],
        "only_shipped": len(shipped) - same - len(differ),
        "added": len(added),
        "shipped_rows": shipped_rows,
        "added_rows": added_rows,
        "matches": mine,
        "names": names,
        "titles": titles,
    }
