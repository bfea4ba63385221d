"""The tools the planner can call: typed methods whose docstrings are their descriptions (the schema comes from the
type hints, see planner.tool_schemas). Plain code runs them: retrieval never returns an item already shown or
disliked, the guards keep only the filters the user asked for, and the ranking orders the candidates.
Results given back to the LLM are compact: titles and a few fields."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from recagent.tools.errors import ConfigError, ToolError
from recagent.tools.filters import field_name, matches, merge_constraints, parse_filter, parse_where
from recagent.tools.index import Hit
from recagent.tools.models import embed_texts
from recagent.tools.ranking import Context, Ranked, Ranker, rank_candidates
from recagent.tools.ranking.taste import WEIGHT as TASTE_WEIGHT
from recagent.tools.ranking.taste import Taste, taste_space
from recagent.tools.retrieval import retrieve_candidates
from recagent.tools.text import plain_words, strip_year, title_key

from .catalog_view import CatalogView
from .conversation import Conversation
from .guards import allowed_filters, rejected_positions
from .understanding import Reading

CANDIDATES = 40  # retrieved before ranking
NEIGHBOURS = 20  # added to them when the user names favourites: the items their fans liked too
# words that only introduce a reference ("something like X"), left out of what the rest of a request says
_REFERENCE_WORDS = set(
    "something anything movie movies film films one ones like similar to i loved liked love the a".split()
)
SHOWN = 5  # recommended per turn


@dataclass
class ToolResult:
    """What a tool returned: items for the user, a text for the LLM, and bookkeeping."""

    items: list[Ranked] = field(default_factory=list)
    text: str = ""
    question: str | None = None  # ask_user
    notes: list[str] = field(default_factory=list)  # e.g. a filter that was dropped
    retrieval_seconds: float = 0.0
    ranking_seconds: float = 0.0

    @property
    def final(self) -> bool:
        """Whether the turn can be answered from this result (a details lookup asks the planner again)."""
        return bool(self.question or self.items)


def compact(items: list[Ranked], fields: tuple[str, ...], limit: int = SHOWN) -> str:
    """Items as short lines for the LLM: 'Title (Year) | Animation, Children | pixar, fun'."""
    lines = []
    for n, item in enumerate(items[:limit], 1):
        bits = [item.title]
        for key in fields:
            value = item.metadata.get(key)
            if value and key != "year":
                bits.append(", ".join(value[:4]) if isinstance(value, list) else str(value))
        lines.append(f"{n}. " + " | ".join(bits))
    return "\n".join(lines)


class CatalogTools:
    """The planner's tools over one catalog, for one conversation (cheap: create one per turn).

    ranker: the learned head, or None for the simple scorer; shown: how many items a turn lists; use_photo: a
    photo came with this turn, so searches go by it too; reading: what code read in the user's message (its time,
    negations, constraints taken back and referenced items win over the planner's filters); taste: the user's
    taste from their feedback (tools/ranking/taste.py), added to the head's scores."""

    SEARCHES = ("search_catalog", "similar_items", "refine_last")

    def __init__(
        self,
        view: CatalogView,
        conversation: Conversation,
        ranker: Ranker | None = None,
        shown: int = SHOWN,
        use_photo: bool = False,
        reading: Reading | None = None,
        taste: Taste | None = None,
    ):
        self.view = view
        self.conversation = conversation
        self.ranker = ranker
        self.taste = taste
        self.shown = shown
        self.use_photo = use_photo and bool(conversation.photo)
        self.reading = reading or Reading()

    def planner_tools(self) -> dict[str, Callable[..., ToolResult]]:
        """name -> bound method, for the planner."""
        return {
            f.__name__: f
            for f in (self.search_catalog, self.similar_items, self.refine_last, self.item_details, self.ask_user)
        }

    # -- the tools (their docstrings are what the planner reads) ---------------------------------------
    def search_catalog(self, query: str, filters: list[str] | None = None) -> ToolResult:
        """Find items matching a description. filters narrow it, e.g. "genre=Animation", "genre!=Horror", "year<1990", "colour=Black"."""  # noqa: E501 (the planner reads it)
        self.conversation.last_search = {"tool": "search_catalog", "args": {"query": query}}
        if self.reading.references:  # "something like X": kept for refinements ("something older")
            self.conversation.last_search["like"] = list(self.reading.references)
        if self.use_photo:
            self.conversation.last_search["photo"] = True
            return self._retrieve(
                query=query,
                filters=filters or [],
                photo_vector=np.asarray(self.conversation.photo["vector"], dtype=np.float32),
            )
        return self._retrieve(query=query, filters=filters or [])

    def similar_items(self, titles: list[str], filters: list[str] | None = None) -> ToolResult:
        """Find items like the given titles (ones the user liked or mentioned), optionally filtered."""
        self.conversation.last_search = {"tool": "similar_items", "args": {"titles": list(titles)}}
        ids = [i for i in (self.view.find_title(t) for t in titles) if i]
        if not ids:
            return self._retrieve(
                query=" ".join(titles),
                filters=filters or [],
                note=f"none of {titles} is in the catalog; searched by text",
            )
        for item_id in ids:
            self.conversation.like(item_id)
        vector = self.view.vectors(ids).mean(axis=0)
        return self._retrieve(vector=vector / (np.linalg.norm(vector) or 1.0), filters=filters or [], also_exclude=ids)

    def refine_last(
        self, filters: list[str] | None = None, reject: list[int] | None = None, words: str | None = None
    ) -> ToolResult:
        """Redo the last search with added filters ("older": year<N, "no horror": genre!=Horror), without the items the user turned down (reject: their 1-based positions in the last list), and with words the user adds about what they want."""  # noqa: E501
        last = self.conversation.last_search
        if not last:
            raise ToolError("there is no earlier search to refine; use search_catalog")
        shown = self.conversation.last_items()
        for position in rejected_positions(self._said(), reject or [], len(shown)):
            self.conversation.dislike(shown[position - 1])
        self.use_photo = bool(last.get("photo")) and bool(self.conversation.photo)  # "like this but cheaper"
        if last.get("like") and not self.reading.references:
            self.reading = replace(self.reading, references=list(last["like"]))
        merged = merge_constraints(self.conversation.constraints, [f for f in filters or [] if isinstance(f, str)])
        args = dict(last["args"])
        if words and isinstance(words, str) and "query" in args:  # "none of those; it is set in space"
            args["query"] = f"{args['query']} {words.strip()}".strip()
        return getattr(self, last["tool"])(**args, filters=merged)

    def item_details(self, title: str) -> ToolResult:
        """Details of one item, found by its title."""
        item_id = self.view.find_title(title)
        if not item_id:
            raise ToolError(f"'{title}' is not in the catalog")
        # Sorted: the store gives the keys in a different order in each process, and the planner's prompt must
        # not change with it (recorded evaluation runs replay only if every prompt is the same).
        fields = {k: v for k, v in sorted(self.view.meta[item_id].items()) if not k.startswith("_")}
        return ToolResult(
            text="; ".join(f"{k}: {', '.join(v) if isinstance(v, list) else v}" for k, v in fields.items())
        )

    def ask_user(self, question: str) -> ToolResult:
        """Ask one short clarifying question, only when the request is too vague to search."""
        return ToolResult(question=question.strip())

    # -- running a search ---------------------------------------------------------------------------
    def _said(self) -> str:
        return self.conversation.messages[-1].content.lower() if self.conversation.messages else ""

    def _retrieve(
        self,
        query: str | None = None,
        vector: np.ndarray | None = None,
        filters: Sequence[str] = (),
        also_exclude: Sequence[str] = (),
        note: str | None = None,
        photo_vector: np.ndarray | None = None,
    ) -> ToolResult:
        notes = [note] if note else []
        reading = self.reading
        standing = [c for c in self.conversation.constraints if c not in reading.dropped]
        good, dropped = allowed_filters(
            list(filters),
            self._said(),
            self.view.fields,
            standing,
            photo_turn=self.use_photo,
            time_field=self.view.profile.time_field,
        )
        notes += dropped
        good = self._with_reading(good + self._persisting(good, standing))
        self.conversation.constraints = good
        where = parse_where(good, self.view.fields)
        c = self.conversation
        exclude = set(c.shown) | set(c.disliked) | set(also_exclude) | set(c.liked)
        exclude |= self._franchise(reading.references)
        if reading.references and vector is None and photo_vector is None:  # "something like X": search by X
            vector = self._like_vector(reading.references, self._said())
        started = time.perf_counter()

        def search(where: dict | None) -> list[Hit]:
            if photo_vector is not None:
                return retrieve_candidates(
                    self.view.index, query, photo_vector=photo_vector, k=CANDIDATES, where=where, exclude=exclude
                )
            return self.view.index.search(query, k=CANDIDATES, where=where, vector=vector, exclude=exclude)

        hits = search(where)
        if not hits and where is not None:
            # Nothing passes every filter: say so and show the closest items without them.
            notes.append(f"nothing matches all of {self.conversation.constraints}; showing the closest items")
            where = None
            hits = search(None)
        favourites = list(reading.references) or list(also_exclude)  # "I loved X and Y", similar_items(X, Y)
        if self.ranker is not None and favourites and photo_vector is None:
            hits += self._neighbours(favourites, where, exclude | {h.id for h in hits})
        retrieval = time.perf_counter() - started
        started = time.perf_counter()
        if self.ranker is not None and hits:
            ranked = distinct(self._rank_with_head(hits, query, exclude))[: self.shown]
        else:
            ranked = distinct(rank_candidates(hits, set(self.conversation.disliked)))[: self.shown]
        ranking = time.perf_counter() - started
        text = compact(ranked, self.view.profile.compact, self.shown) if ranked else "no matching items"
        return ToolResult(items=ranked, text=text, notes=notes, retrieval_seconds=retrieval, ranking_seconds=ranking)

    def _with_reading(self, good: list[str]) -> list[str]:
        """The plan's filters made to agree with what code read in the message: a time it names replaces every
        other time filter ("something newer" after "older"); its negations stand on the right field, and over a
        plan that asked for the same value; a constraint taken back is gone."""
        reading, time_field = self.reading, self.view.profile.time_field
        if reading.time:
            good = [g for g in good if not _on_field(g, time_field)]
        key = self._key
        negated = {key(n)[::2] for n in reading.negations}  # (field, value) turned down
        dropped = {key(d) for d in reading.dropped}
        good = [g for g in good if key(g) not in dropped and not (key(g)[1] == "=" and key(g)[::2] in negated)]
        keys = {key(g) for g in good}
        return good + [f for f in reading.time + reading.negations if key(f) not in keys]

    def _persisting(self, good: list[str], standing: list[str]) -> list[str]:
        """The standing constraints that hold in a new search too: negations, and the profile's `persist` fields
        (a value the new request names wins)."""
        keys = {self._key(g) for g in good}
        named_fields = {k[0] for k in keys if k[1] == "="}
        persist = {name.lower() for name in self.view.profile.persist}
        out = []
        for constraint in standing:
            name, op, value = self._key(constraint)
            if op == "!=" and (name, "=", value) not in keys and (name, op, value) not in keys:
                out.append(constraint)
            elif op == "=" and name in persist and name not in named_fields:
                out.append(constraint)
        return out

    def _key(self, constraint: str) -> tuple[str, str, str]:
        """A filter as (field as the catalog names it, operator, value): "colour!=black" is "baseColour!=Black"."""
        parsed = parse_filter(constraint)
        if parsed is None:
            return (constraint, "", "")
        try:
            name = field_name(parsed.field, self.view.fields)
        except ConfigError:
            name = parsed.field
        return (name.lower(), parsed.op, parsed.value.strip().lower())

    def _franchise(self, ids: Sequence[str]) -> set[str]:
        """The referenced items and the others of their series ("The Matrix" -> The Matrix Reloaded, Revolutions):
        a person asking for something like X knows X."""
        keys = [title_key(self.view.title(i)) for i in ids]
        keys = [k for k in keys if k]
        if not keys:
            return set()
        return set(ids) | {
            item_id
            for key, found in self.view.by_title.items()
            if any(key == k or key.startswith(k + " ") for k in keys)
            for item_id in found
        }

    def _like_vector(self, ids: Sequence[str], said: str) -> np.ndarray:
        """A search vector for "something like X, but ...": the referenced items' own vectors, blended with the
        rest of the user's words when they say more than the titles ("mind-bending science fiction")."""
        refs = self.view.vectors(list(ids))
        vector = refs.mean(axis=0) if len(refs) else np.zeros(384, np.float32)
        rest = f" {plain_words(said)} "
        for item_id in ids:
            rest = rest.replace(f" {plain_words(strip_year(self.view.title(item_id)))} ", " ")
        rest = " ".join(w for w in rest.split() if w not in _REFERENCE_WORDS)
        if len(rest.split()) >= 2 or not len(refs):
            words = embed_texts([rest], self.view.settings)[0]
            vector = vector / (np.linalg.norm(vector) or 1.0) + words / (np.linalg.norm(words) or 1.0)
        return vector / (np.linalg.norm(vector) or 1.0)

    def _neighbours(self, favourites: list[str], where: dict | None, exclude: set[str]) -> list[Hit]:
        """The items that the fans of the user's favourites rated too (MovieLens item-kNN cosine, summed over the
        favourites), within the filters. Text vectors alone find what shares the titles' words ("Ronin" -> "47
        Ronin", "Heat" -> "Body Heat"), not what the same people enjoyed."""
        assert self.ranker is not None
        signals, meta = self.ranker.signals, self.view.meta
        rows = [signals.pos[i] for i in favourites if i in signals.pos]
        if not rows:
            return []
        scores = np.asarray(signals.knn[rows].sum(axis=0)).ravel()  # [N]
        out: list[Hit] = []
        for j in np.argsort(-scores):
            if scores[j] <= 0 or len(out) == NEIGHBOURS:
                break
            item = signals.ids[j]
            if item not in exclude and item in meta and matches(meta[item], where):
                out.append(Hit(item, meta[item].get("title", item), 0.0, meta[item]))
        return out

    def _rank_with_head(self, hits: list[Hit], query: str | None, exclude: set[str]) -> list[Ranked]:
        """Order the retrieval hits by the learned head. The context: liked items, and the request (the tool's
        query, else the user's recent messages). Only the hits are ranked, not the whole catalog as `eval redial`
        does: the head, trained on ReDial's conversational suggestions, favours popular films over the literal
        request ("a shark attack movie" -> Die Hard above Jaws); within the hits it keeps to the topic."""
        assert self.ranker is not None
        users = [m.content for m in self.conversation.messages if m.role == "user"][-3:]
        ctx = Context(
            items=list(self.conversation.liked),
            text=query or " ".join(users),
            exclude=set(exclude),
            disliked=list(self.conversation.disliked),
            seeker_text=" ".join(users)[-1000:],
            last_text=users[-1] if users else "",
        )
        scores = self.ranker.score([ctx], self.view.settings)[0]
        if self.taste is not None:  # what the user liked and disliked before: r(u, i), tools/ranking/taste.py
            scores = scores + TASTE_WEIGHT * taste_space(self.ranker).scores(self.taste)
        pos = self.ranker.signals.pos
        ranked = [
            Ranked(h.id, h.title, float(scores[pos[h.id]]), self.view.meta.get(h.id) or h.metadata, h.score)
            for h in hits
            if h.id in pos
        ]  # h.title ("Title (Year)"), as the simple scorer shows it
        ranked.sort(key=lambda r: -r.score)
        return ranked


def distinct(items: list[Ranked]) -> list[Ranked]:
    """Items a person can tell apart: of several with the same title ("Basics Men Blue Striped T-shirt" three
    times), the first; the list then fills with the next distinct ones."""
    seen: set[str] = set()
    out = []
    for item in items:
        key = plain_words(item.title)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def _on_field(constraint: str, name: str) -> bool:
    parsed = parse_filter(constraint)
    return parsed is not None and parsed.field.lower() == name.lower()
