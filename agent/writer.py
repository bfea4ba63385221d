"""Writing the reply: one short sentence from the LLM, streamed and grounded sentence by sentence, then the numbered
list of items with a reason drawn from each item's own fields (so every item named exists in the catalog)."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable

from recagent.prompts import load_prompt
from recagent.tools.catalog import CatalogProfile
from recagent.tools.ranking.simple import Ranked
from recagent.tools.text import title_key

from .catalog_view import CatalogView
from .llm import Completion

WRITER_TOKENS = 40
FALLBACK_INTRO = "Here are some picks:"
_TITLE_WITH_YEAR = re.compile(r"([A-Z0-9][^.!?\n\"]{1,80}?) \((\d{4})\)")
_QUOTED = re.compile(r"[\"“]([^\"”]{2,80})[\"”]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def writer_messages(request: str, items: list[Ranked], profile: CatalogProfile | None = None) -> list[dict]:
    """The writer's prompt: the request and what the picks have in common, not their titles: a small model shown
    the titles lists them ("Try Jaws, Scary Movie, Poltergeist, ...") however it is told. Short, too: prompt
    tokens are the slow part on a CPU."""
    profile = profile or CatalogProfile()
    traits = shared_traits(items, profile.traits)
    return [
        {"role": "system", "content": load_prompt("reply")},
        {"role": "user", "content": f"Request: {request}\nPicks: {len(items)} {profile.noun}s; {traits}"},
    ]


def shared_traits(items: list[Ranked], fields: tuple[str, ...] = CatalogProfile.traits) -> str:
    """What the picks have in common, from their own fields (the catalog profile's `traits`): 'genres: comedy (5),
    romance (2); years 1986-1989'."""
    parts = []
    for field in (f for f in fields if f != "year"):
        counts: dict[str, int] = {}
        for r in items:
            value = r.metadata.get(field)
            for v in value if isinstance(value, list) else [value] if value else []:
                counts[str(v)] = counts.get(str(v), 0) + 1
        common = sorted(counts.items(), key=lambda kv: -kv[1])[:3]
        if common:
            parts.append(f"{field}: " + ", ".join(f"{v.lower()} ({n})" for v, n in common))
    years = sorted(y for r in items if "year" in fields and isinstance(y := r.metadata.get("year"), int) and y > 1800)
    if years:
        parts.append(f"years {years[0]}-{years[-1]}" if years[0] != years[-1] else f"year {years[0]}")
    return "; ".join(parts) or "from the catalog"


class GroundedStream:
    """Takes the writer's tokens as they come and emits each complete sentence once it is grounded: a sentence that
    names a title which is not allowed (the items shown now, liked or shown before) is dropped.

    allowed: title_keys that may be named; catalog_keys: the title_keys of every catalog item (a sentence naming
    one of them by its words, without quotes or a year, names it too)."""

    def __init__(
        self,
        allowed: set[str],
        catalog_keys: Iterable[str],
        emit: Callable[[str], None],
        listed: Iterable[str] = (),
    ):
        self.allowed, self.catalog_keys, self.emit = allowed, catalog_keys, emit
        self.listed = [k for k in listed if len(k) >= 4]  # the shown items' title_keys: the list below names them
        self.pending = ""
        self.kept: list[str] = []
        self.removed: list[str] = []

    def add(self, token: str) -> None:
        """One more token; every sentence it completes is checked and shown."""
        self.pending += token
        cut = max(self.pending.rfind(". "), self.pending.rfind("! "), self.pending.rfind("? "))
        if cut >= 0:
            done, self.pending = self.pending[: cut + 1], self.pending[cut + 2 :]
            self._show(done)

    def close(self) -> str:
        """The end of the answer: the rest is checked (a sentence cut off by the token limit goes); the intro."""
        self._show(self.pending)
        self.pending = ""
        return " ".join(self.kept).strip()

    def _show(self, text: str) -> None:
        good, bad = ground_text(text, self.allowed, self.catalog_keys)
        good = " ".join(s for s in _SENTENCE_END.split(good) if s and not names_any(s, self.listed))
        self.removed.extend(bad)
        if good:
            self.kept.append(good)
            self.emit(good)


def write_intro(
    complete: Callable[..., Completion],
    request: str,
    items: list[Ranked],
    view: CatalogView,
    allowed_ids: list[str],
    emit: Callable[[str], None],
) -> tuple[str, list[str]]:
    """The reply's grounded opening sentence, streamed through `emit`, and the titles taken out of it.
    `complete` is the LLM's complete method."""
    allowed = {title_key(r.title) for r in items} | {title_key(view.title(i)) for i in allowed_ids if i in view.meta}
    banned = [title_key(r.title) for r in items] + asked_titles(request, allowed)
    stream = GroundedStream(allowed, view.by_title, emit, listed=banned)
    complete(writer_messages(request, items, view.profile), max_tokens=WRITER_TOKENS, on_token=stream.add)
    intro = stream.close()
    if not intro:
        intro = FALLBACK_INTRO
        emit(intro)
    return intro, stream.removed


def ground_text(text: str, allowed: set[str], catalog_keys: Iterable[str]) -> tuple[str, list[str]]:
    """Remove the sentences that name a title whose title_key is not in `allowed`; a sentence cut off by the token
    limit goes too. Returns the text and the titles taken out."""
    removed = []
    text = text.strip().strip('"')
    if text and text[-1] not in ".!?":
        text = text[: max(text.rfind("."), text.rfind("!"), text.rfind("?")) + 1]
    kept = []
    for sentence in (s for s in _SENTENCE_END.split(text) if s):
        bad = [t for t in named_titles(sentence, catalog_keys) if title_key(t) not in allowed]
        if bad:
            removed += bad
        else:
            kept.append(sentence)
    return " ".join(kept), removed


def named_titles(sentence: str, catalog_keys: Iterable[str]) -> list[str]:
    """Titles a sentence names: 'X (1999)' patterns, quoted names, and catalog titles (title_keys) of two or more
    words and eight or more letters."""
    found = [f"{m.group(1).strip()} ({m.group(2)})" for m in _TITLE_WITH_YEAR.finditer(sentence)]
    found += _QUOTED.findall(sentence)
    lowered = " " + re.sub(r"[^a-z0-9]+", " ", sentence.lower()) + " "
    for key in catalog_keys:
        if key.count(" ") >= 1 and len(key) >= 8 and f" {key} " in lowered:
            found.append(key)
    return found


def asked_titles(request: str, allowed: set[str]) -> list[str]:
    """The title_keys of titles the request names (quoted, or with a year) that may not be named: one the catalog
    lacks ('Recommend me "The Glorbnax Chronicles" (2031)') is never echoed as if it were a pick, even by its
    words alone ("Glorbnax Chronicles fans will love these")."""
    return [key for t in named_titles(request, ()) if (key := title_key(t)) and key not in allowed]


def names_any(sentence: str, keys: Iterable[str]) -> bool:
    """Whether the sentence names one of these titles (title_keys) by its words: the intro must not read as the list
    of titles that follows it ("Check out A Simple Plan, Out of Sight, ...")."""
    lowered = " " + re.sub(r"[^a-z0-9]+", " ", sentence.lower()) + " "
    return any(f" {key} " in lowered for key in keys)


# A user-written tag is shown only when it reads as a tag: a few plain words, no markup, link or instruction.
_TAG = re.compile(r"^[\w][\w '&.,:-]{0,28}$")
_NOT_A_TAG = re.compile(
    r"https?:|www\.|\.(?:com|org|net)\b|[<>{}\[\]`|\\]|\b(?:ignore|system|instruction|prompt|password|assistant|"
    r"call|click|visit|note|important|override|tool)\b",
    re.IGNORECASE,
)


def shown_tags(tags: Iterable[str], limit: int = 3) -> list[str]:
    """The tags fit to show in a reason line: short, plain words (user-written tags may hold anything)."""
    fit = [t for t in tags if isinstance(t, str) and _TAG.match(t) and len(t.split()) <= 4 and not _NOT_A_TAG.search(t)]
    return fit[:limit]


def reason(metadata: dict, profile: CatalogProfile) -> str:
    """A one-line reason drawn from the item's own fields, as the catalog's profile says to speak of them."""
    parts = []
    for field in profile.reason_lists:
        if metadata.get(field):
            parts.append(", ".join(metadata[field][:3]).lower())
    if profile.reason_phrase and metadata.get(profile.reason_phrase_needs):
        parts.append(profile.reason_phrase.format_map(defaultdict(str, metadata)).strip().lower())
    tags = shown_tags(metadata.get(profile.tags) or []) if profile.tags else []
    if tags:
        parts.append("known for " + ", ".join(tags))
    count = metadata.get(profile.rating_count, 0)
    if metadata.get(profile.rating) and isinstance(count, int) and count >= 10:
        parts.append(f"rated {metadata[profile.rating]:.1f}/5 by {count} {profile.rating_source}")
    return "; ".join(parts) or "matches your request"


def item_list(items: list[Ranked], profile: CatalogProfile) -> str:
    """The numbered list under the intro: 'N. Title: reason'."""
    return "\n".join(f"{n}. {r.title}: {reason(r.metadata, profile)}" for n, r in enumerate(items, 1))
