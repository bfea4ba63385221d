"""The tools the planner can call: typed functions whose docstrings are their descriptions.

Schemas come from the type hints (through LangChain's StructuredTool, which also makes them usable by
any LangChain application). Results given back to the LLM are compact: ids, titles and a few fields.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field

import numpy as np

from recagent.tools.index import CatalogIndex, Hit, parse_where
from recagent.tools.ranking import Ranked, rank_candidates
from recagent.tools.retrieval import retrieve_candidates
from recagent.tools.settings import ConfigError

from .conversation import Conversation, merge_constraints

CANDIDATES = 40  # retrieved before ranking
log = logging.getLogger("recagent")
SHOWN = 5  # recommended per turn
MAX_LIST_ARGS = 4  # the most titles, filters or rejections in one tool call
COMPACT_FIELDS = ("year", "genres", "tags", "articleType", "baseColour", "gender", "usage")


class ToolError(Exception):
    """A tool could not do what was asked; the message is given back to the planner and the user."""


@dataclass
class ToolResult:
    """What a tool returned: items for the user, a text for the LLM, and bookkeeping."""

    items: list[Ranked] = field(default_factory=list)
    text: str = ""
    question: str | None = None  # ask_user
    notes: list[str] = field(default_factory=list)  # e.g. a filter that was dropped
    retrieval_seconds: float = 0.0
    ranking_seconds: float = 0.0


def norm_title(title: str) -> str:
    """'The Matrix (1999)' -> 'matrix': titles compared ignoring case, articles, punctuation and year."""
    title = re.sub(r"\s*\(\d{4}\)\s*$", "", title.lower())
    title = re.sub(r"^(the|a|an) ", "", title)
    return re.sub(r"[^a-z0-9]+", " ", title).strip()


class Catalog:
    """Shared, read-only view of one indexed catalog: the index plus a title lookup (no per-user state)."""

    def __init__(self, index: CatalogIndex):
        self.index = index
        self.fields = index.fields()
        col = index.collection()
        got = col.get(include=["metadatas"])
        self.meta = {i: (m or {}) for i, m in zip(got["ids"], got["metadatas"])}
        self.by_title: dict[str, list[str]] = {}
        for item_id, meta in self.meta.items():
            self.by_title.setdefault(norm_title(meta.get("title", "")), []).append(item_id)

    def find_title(self, title: str) -> str | None:
        """The id of the item with this title (ignoring case, articles and year); the most rated on ties."""
        ids = self.by_title.get(norm_title(title))
        if not ids:
            year = re.search(r"\((\d{4})\)", title)
            hits = self.index.search(title, k=1)
            if hits and hits[0].score > 0.8 and (not year or str(hits[0].metadata.get("year")) == year.group(1)):
                return hits[0].id
            return None
        year = re.search(r"\((\d{4})\)", title)
        if year:
            exact = [i for i in ids if str(self.meta[i].get("year")) == year.group(1)]
            ids = exact or ids
        return max(ids, key=lambda i: self.meta[i].get("ratings", 0))

    def vectors(self, ids: list[str]) -> np.ndarray:
        got = self.index.collection().get(ids=ids, include=["embeddings"])
        return np.asarray(got["embeddings"], dtype=np.float32)

    def ranker(self):
        """The learned ranking head for this catalog (tools/ranker.py), or None: then the simple scorer ranks,
        and a one-line notice says so (once)."""
        if not hasattr(self, "_ranker"):
            from recagent.tools.ranker import load_ranker

            try:
                self._ranker = load_ranker(self.index.settings, self.index.catalog)
            except Exception as exc:  # no data folder, a broken checkpoint: rank as before, and say why
                log.warning("ranking head not used (%s): using the simple scorer", exc)
                self._ranker = None
            else:
                if self._ranker is None:
                    log.warning("no ranking-head checkpoint for catalog '%s': using the simple scorer "
                                "(`recagent train-ranker` trains one for movies)", self.index.catalog)
        return self._ranker


_NEGATIVE = re.compile(r"\b(not|no|don't|dont|didn't|didnt|seen|hate|dislike|skip|other than|except|without)\b")
_ORDINALS = {"first": 1, "1st": 1, "second": 2, "2nd": 2, "third": 3, "3rd": 3, "fourth": 4, "4th": 4,
             "fifth": 5, "5th": 5}
# Words by which a user asks for a filter value without naming it.
_SYNONYMS = {
    "horror": "scary spooky frightening creepy terrifying", "comedy": "funny comedic laugh hilarious humor",
    "children": "kid kids family child children's", "animation": "animated cartoon pixar disney anime",
    "romance": "romantic love", "sci-fi": "science fiction space scifi future robot alien",
    "thriller": "suspense thrilling tense", "crime": "heist gangster mob police detective",
    "mystery": "detective whodunit", "documentary": "documentaries real story",
    "musical": "music musicals singing", "war": "soldier battle military", "western": "cowboy",
    "fantasy": "magic wizard dragon", "action": "explosions fight", "drama": "dramatic emotional",
    "adventure": "quest journey",
}
_YEAR_WORDS = re.compile(r"\b(older|old|newer|new|recent|latest|classic|before|after|since|until|decade|(?:\d\d)?\d0s|\d{4}|"
                         r"modern|vintage|era|century)\b")


def asked_for(flt: str, said: str) -> bool:
    """Whether the user's message asks for this filter: its value or a synonym is in it (year: a time word)."""
    match = re.match(r"^\s*([A-Za-z_][\w.]*)\s*(>=|<=|!=|=|>|<)\s*(.+?)\s*$", flt)
    if not match:
        return False
    field, op, value = match.groups()
    value = value.lower()
    if field.lower().startswith("year"):
        return bool(_YEAR_WORDS.search(said))
    if op == "!=" and not _NEGATIVE.search(said):  # "no horror", "without romance"
        return False
    words = [value, value.rstrip("s"), *_SYNONYMS.get(value, "").split()]
    return any(re.search(rf"\b{re.escape(w[:max(4, len(w) - 2)])}", said) for w in words if w)


def named_values(said: str, fields: dict, present: list[str]) -> list[str]:
    """Filters for facet values the user names outright ("like this but in black" -> baseColour=Black).

    Used on photo turns, where the words only say what to change; fields the planner already filtered,
    and negated requests ("not black"), are left to the planner.
    """
    if _NEGATIVE.search(said):
        return []
    taken = {re.split(r"[!<>=~]", f, maxsplit=1)[0].strip().lower() for f in present}
    out = []
    for key, info in fields.items():
        if key.lower() in taken or info.get("type") != "str" or key in ("title", "year"):
            continue
        for value in sorted(info.get("values", []), key=len, reverse=True):  # "Navy Blue" before "Blue"
            if len(value) > 2 and re.search(rf"\b{re.escape(value.lower())}\b", said):
                out.append(f"{key}={value}")
                break
    return out


def compact(items: list[Ranked], limit: int = SHOWN) -> str:
    """Items as short lines for the LLM: 'Title (Year) | Animation, Children | pixar, fun'."""
    lines = []
    for n, item in enumerate(items[:limit], 1):
        meta = item.metadata
        bits = [item.title]
        for key in COMPACT_FIELDS:
            value = meta.get(key)
            if value and key != "year":
                bits.append(", ".join(value[:4]) if isinstance(value, list) else str(value))
        lines.append(f"{n}. " + " | ".join(bits))
    return "\n".join(lines)


class CatalogTools:
    """The planner's tools over one catalog, for one conversation (cheap: create one per turn)."""

    def __init__(self, catalog: Catalog, conversation: Conversation, use_photo: bool = False):
        self.catalog = catalog
        self.conversation = conversation
        self.use_photo = use_photo and bool(conversation.photo)  # a photo came with this turn: search by it too

    # -- the tools (their docstrings are what the planner reads) ---------------------------------------
    def search_catalog(self, query: str, filters: list[str] | None = None) -> ToolResult:
        """Find items matching a description. filters narrow it, e.g. "genre=Animation", "genre!=Horror", "year<1990", "colour=Black"."""
        self.conversation.last_search = {"tool": "search_catalog", "args": {"query": query}}
        if self.use_photo:
            self.conversation.last_search["photo"] = True
            return self._retrieve(query=query, filters=filters or [],
                                  photo_vector=np.asarray(self.conversation.photo["vector"], dtype=np.float32))
        return self._retrieve(query=query, filters=filters or [])

    def similar_items(self, titles: list[str], filters: list[str] | None = None) -> ToolResult:
        """Find items like the given titles (ones the user liked or mentioned), optionally filtered."""
        self.conversation.last_search = {"tool": "similar_items", "args": {"titles": list(titles)}}
        ids = [i for i in (self.catalog.find_title(t) for t in titles) if i]
        if not ids:
            return self._retrieve(query=" ".join(titles), filters=filters or [],
                                  note=f"none of {titles} is in the catalog; searched by text")
        for item_id in ids:
            self.conversation.like(item_id)
        vector = self.catalog.vectors(ids).mean(axis=0)
        return self._retrieve(vector=vector / (np.linalg.norm(vector) or 1.0), filters=filters or [], also_exclude=ids)

    def refine_last(self, filters: list[str] | None = None, reject: list[int] | None = None) -> ToolResult:
        """Redo the last search with added filters ("older": year<N, "no horror": genre!=Horror) and without the items the user turned down (reject: their 1-based positions in the last list)."""
        last = self.conversation.last_search
        if not last:
            raise ToolError("there is no earlier search to refine; use search_catalog")
        self._reject(reject or [])
        self.use_photo = bool(last.get("photo")) and bool(self.conversation.photo)  # "like this but cheaper"
        merged = merge_constraints(self.conversation.constraints, [f for f in filters or [] if isinstance(f, str)])
        return getattr(self, last["tool"])(**last["args"], filters=merged)

    def item_details(self, title: str) -> ToolResult:
        """Details of one item, found by its title."""
        item_id = self.catalog.find_title(title)
        if not item_id:
            raise ToolError(f"'{title}' is not in the catalog")
        meta = self.catalog.meta[item_id]
        # Sorted: the store gives the keys in a different order in each process, and the planner's prompt must
        # not change with it (recorded evaluation runs replay only if every prompt is the same).
        fields = {k: v for k, v in sorted(meta.items()) if not k.startswith("_")}
        return ToolResult(text="; ".join(f"{k}: {', '.join(v) if isinstance(v, list) else v}" for k, v in fields.items()))

    def ask_user(self, question: str) -> ToolResult:
        """Ask one short clarifying question, only when the request is too vague to search."""
        return ToolResult(question=question.strip())

    # -- helpers ------------------------------------------------------------------------------------
    def _said(self) -> str:
        return self.conversation.messages[-1].content.lower() if self.conversation.messages else ""

    def _reject(self, positions: list[int]) -> None:
        # Small models copy the rejection example into plain refinements, or forget to reject: the
        # user's own words decide ("not the first one", "I've seen the second").
        said = self._said()
        if not _NEGATIVE.search(said):
            return
        positions = positions or [n for word, n in _ORDINALS.items() if re.search(rf"\b{word}\b", said)]
        last = self.conversation.last_items()
        if "last" in said.split() and last and not positions:
            positions = [len(last)]
        for pos in positions:
            if isinstance(pos, int) and 1 <= pos <= len(last):
                self.conversation.dislike(last[pos - 1])

    def _where(self, filters: list[str], notes: list[str]) -> dict | None:
        good = []
        said = self._said()
        wanted = list(dict.fromkeys(f for f in filters if isinstance(f, str)))
        if self.use_photo:
            wanted += named_values(said, self.catalog.fields, wanted)
        positive = {f.replace("!=", "=") for f in wanted if "!=" not in f}
        for flt in wanted:
            if "!=" in flt and flt.replace("!=", "=") in positive:
                notes.append(f"ignored filter {flt!r}: contradicts {flt.replace('!=', '=')!r}")
                continue
            try:
                parse_where([flt], self.catalog.fields)
            except ConfigError as exc:
                notes.append(f"ignored filter {flt!r}: {exc}")
                continue
            if flt not in self.conversation.constraints and not asked_for(flt, said):
                # Small models add filters from the examples or from thin air; keep what the user asked for.
                notes.append(f"ignored filter {flt!r}: not asked for")
                continue
            good.append(flt)
        self.conversation.constraints = good
        return parse_where(good, self.catalog.fields)

    def _retrieve(self, query: str | None = None, vector=None, filters: list[str] = (), also_exclude=(),
                  note: str | None = None, photo_vector=None) -> ToolResult:
        notes = [note] if note else []
        where = self._where(list(filters), notes)
        exclude = set(self.conversation.shown) | set(self.conversation.disliked) | set(also_exclude) \
            | set(self.conversation.liked)
        started = time.perf_counter()
        if photo_vector is not None:
            search = lambda where: retrieve_candidates(  # noqa: E731
                self.catalog.index, query, photo_vector=photo_vector, k=CANDIDATES, where=where, exclude=exclude)
        else:
            search = lambda where: self.catalog.index.search(  # noqa: E731
                query, k=CANDIDATES, where=where, vector=vector, exclude=exclude)
        hits: list[Hit] = search(where)
        if not hits and where is not None:
            # Nothing passes every filter: say so and show the closest items without them.
            notes.append(f"nothing matches all of {self.conversation.constraints}; showing the closest items")
            hits = search(None)
        retrieval = time.perf_counter() - started
        started = time.perf_counter()
        ranker = self.catalog.ranker() if hits else None
        if ranker is not None:
            ranked = self._rank_with_head(ranker, hits, query, exclude)[:SHOWN]
        else:
            ranked = rank_candidates(hits, set(self.conversation.disliked))[:SHOWN]
        ranking = time.perf_counter() - started
        text = compact(ranked) if ranked else "no matching items"
        return ToolResult(items=ranked, text=text, notes=notes, retrieval_seconds=retrieval, ranking_seconds=ranking)

    def _rank_with_head(self, ranker, hits: list[Hit], query: str | None, exclude: set) -> list[Ranked]:
        """Order the retrieval hits by the learned head. The context: liked items, and the request (the tool's
        query, else the user's recent messages). Only the hits are ranked, not the whole catalog as `eval redial`
        does: the head, trained on ReDial's conversational suggestions, favours popular films over the literal
        request ("a shark attack movie" -> Die Hard above Jaws); within the hits it keeps to the topic."""
        from recagent.tools.ranker import Context

        users = [m.content for m in self.conversation.messages if m.role == "user"][-3:]
        ctx = Context(items=list(self.conversation.liked), text=query or " ".join(users), exclude=set(exclude),
                      disliked=list(self.conversation.disliked), seeker_text=" ".join(users)[-1000:],
                      last_text=users[-1] if users else "")
        scores = ranker.score([ctx], self.catalog.index.settings)[0]
        pos = ranker.signals.pos
        ranked = []
        for hit in hits:
            if hit.id in pos:
                meta = self.catalog.meta.get(hit.id) or hit.metadata
                # hit.title ("Title (Year)"), as the simple scorer (tools/ranking.py) shows it
                ranked.append(Ranked(hit.id, hit.title, float(scores[pos[hit.id]]), meta, hit.score))
        ranked.sort(key=lambda r: -r.score)
        return ranked

    def planner_tools(self) -> dict:
        """name -> bound function, for the planner."""
        return {f.__name__: f for f in (self.search_catalog, self.similar_items, self.refine_last, self.item_details,
                                          self.ask_user)}


def tool_schemas(tools: dict) -> dict[str, dict]:
    """name -> JSON schema of the arguments, built from the type hints (via LangChain's StructuredTool)."""
    from langchain_core.tools import StructuredTool

    out = {}
    for name, func in tools.items():
        schema = StructuredTool.from_function(func).args_schema.model_json_schema()
        out[name] = _simplify(schema)
    return out


def _simplify(schema: dict) -> dict:
    """Drop titles and turn Optional[X] (anyOf X|null) into X: shorter prompts and grammars."""
    props = {}
    for key, prop in schema.get("properties", {}).items():
        prop = {k: v for k, v in prop.items() if k not in ("title", "default")}
        if "anyOf" in prop:
            non_null = [p for p in prop.pop("anyOf") if p.get("type") != "null"]
            prop.update(non_null[0] if non_null else {})
        if prop.get("type") == "array":
            prop["maxItems"] = MAX_LIST_ARGS  # small models can loop over every value; the grammar stops them
        props[key] = prop
    return {"type": "object", "properties": props, "required": schema.get("required", [])}


def langchain_tools(catalog: Catalog, conversation: Conversation | None = None) -> list:
    """The catalog tools as LangChain tools returning compact text, for use in any LangChain application."""
    from langchain_core.tools import StructuredTool

    tools = CatalogTools(catalog, conversation or Conversation(catalog=catalog.index.catalog))

    def as_text(func):
        def run(**kwargs) -> str:
            try:
                result = func(**kwargs)
            except ToolError as exc:
                return f"error: {exc}"
            if result.question:
                return result.question
            if result.items:
                tools.conversation.shown.extend(r.id for r in result.items if r.id not in tools.conversation.shown)
            return "\n".join([result.text, *result.notes])

        return StructuredTool.from_function(func=run, name=func.__name__, description=func.__doc__,
                                            args_schema=StructuredTool.from_function(func).args_schema)

    return [as_text(f) for name, f in tools.planner_tools().items() if name != "ask_user"]
