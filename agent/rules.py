"""Turns that plain code plans without the LLM: a request that only describes what the user wants (or starts over:
"let's switch to a light comedy"), a follow-up that only changes the time, turns something down, takes a
constraint back, rejects shown items or turns the list down and says more ("none of those; it is set in space"),
and a message with nothing to search for yet ("hi"), which gets a question.

The 1.5B planner costs 2 to 4 s a turn on a laptop CPU (its answer is 30 tokens of JSON) and, on these turns,
only copies the user's words into a query and the filters that code reads anyway (understanding.py). Every other
turn goes to the planner: a question, a title outside "something like X", a photo, and a follow-up that says
something new without saying it starts over ("something funnier"), where only the LLM can tell a new search from a
refinement. `RECAGENT_CODE_PLANS=0` sends every turn to the planner.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from recagent.tools.text import GENRE_NAMES, plain_words, strip_year

from .understanding import Reading, without_read_phrases

# Words that carry no request of their own: asking, pointing at the list, politeness, the items' kind.
FILLER = set(
    """
    a an the some any something anything nothing one ones other others else different more less even only just also
    too again still same this that these those them they it its their there here what which how about is are was be
    i im ive id me my we us you your he she his her our
    show give find get see want wanted would like need needs looking look for please pls thanks thank ok okay yes
    actually instead rather now then maybe perhaps but and or with without in on of to from than by at as so very
    really kind sort type stuff items item thing things movie movies film films can could let lets do does did
    don dont didn didnt t s d ll ve re m not no seen watched already have has had
    recommend recommendation recommendations suggest suggestion wear watch tonight today bored hi hello hey
    either neither none nope nor quite think came comes out released made
    first second third fourth fifth last two three 1st 2nd 3rd 4th 5th
    """.split()
)


def code_plan(
    text: str,
    reading: Reading,
    reference_titles: list[str],
    has_last_search: bool,
    fields: dict,
    facets: tuple[str, ...],
    kinds: tuple[str, ...],
    known: Callable[[str], bool] = lambda word: True,
    noun: str = "item",
) -> dict | None:
    """The tool call for a turn plain code can plan, {"tool": ..., "args": ...}; None when the planner decides.

    text: the message as understood (English, typos corrected); reading: what understanding.py read in it, with
    the titles of the items it names as references; has_last_search: a follow-up; facets/kinds: the profile's
    fields for named values (tools/catalog.py); known: whether a word is English or the catalog's ("qwzx blorp" is
    not: nothing to search for yet, so the user is asked); noun: what an item is called, for that question."""
    titled = {w for title in reference_titles for w in plain_words(strip_year(title)).split()}
    tokens = [w for w in plain_words(without_read_phrases(text, fields).replace("-", "")).split() if w not in titled]
    named, used = named_filters(tokens, fields, facets)
    rest = [w for n, w in enumerate(tokens) if n not in used and w not in FILLER]
    # nothing named, and at most half of the other words are words at all ("qwzx blorp fnargle 42")
    vague = not named and not reading.references and sum(map(known, rest)) * 2 <= len(rest)
    changes_kind = any(f.split("=")[0] in kinds for f in named)
    if has_last_search:
        if _NEW_SEARCH.search(text.lower()) and not vague and not has_name(text, titled):
            has_last_search = False  # "let's switch to a light comedy": a new search, planned below
        elif rest and _NOT_THESE.match(text.strip().lower()) and not has_name(text, titled) and not changes_kind:
            # "None of those. It's from the 1990s, something with the holocaust": the same request, told more
            return {"tool": "refine_last", "args": {"filters": named, "reject": [], "words": " ".join(rest)}}
        elif rest or changes_kind:  # says something new: the planner decides
            return None
        else:
            return {"tool": "refine_last", "args": {"filters": named, "reject": []}}
    if vague:  # "hi", "I need something to wear", "qwzx blorp": nothing to search for yet
        return {"tool": "ask_user", "args": {"question": f"Happy to help! What kind of {noun} are you looking for?"}}
    if "?" in text or has_name(text, titled):  # a question, or a title the reading did not resolve
        return None
    query = " ".join(w for n, w in enumerate(tokens) if n in used or w not in FILLER) or text
    return {"tool": "search_catalog", "args": {"query": query, "filters": named}}


# A follow-up that turns the whole list down: "None of those.", "Not these either", "Still not it", "No, none of them"
_NOT_THESE = re.compile(
    r"^(?:no[,.!]?\s+|nope[,.!]?\s+)?(?:none of (?:those|these|them)|not (?:those|these|them|it|quite)|still not|"
    r"neither|nothing (?:there|here))\b"
)
# A follow-up that starts over: "let's switch to a light comedy", "now a watch to go with them", "change completely"
_NEW_SEARCH = re.compile(
    r"\b(?:switch|change|let'?s try|how about|what about|now (?:a|an|some|something)|something (?:else|different) "
    r"(?:entirely|altogether)|this time|instead of that)\b"
)


def named_filters(tokens: list[str], fields: dict, facets: tuple[str, ...]) -> tuple[list[str], set[int]]:
    """Filters for the facet values that the message's words name outright, and the positions of those words:
    longest names first, one value per field but several genres ("white casual shoes for women" ->
    articleType=Casual Shoes, baseColour=White, gender=Women; "a scary comedy" -> genres=Horror, genres=Comedy).
    Genres are also named by their words ("funny" -> Comedy); hints ("love", "future") are not names."""
    names = _value_names(fields, facets)
    found: list[str] = []
    used: set[int] = set()
    for n in (3, 2, 1):
        for start in range(len(tokens) - n + 1):
            span = set(range(start, start + n))
            if span & used:
                continue
            chunk = " ".join(tokens[start : start + n])
            hit = names.get(chunk) or (_genre_word(chunk, names) if n == 1 else None)
            if not hit:
                continue
            key = hit.split("=")[0]
            if hit not in found and (key == "genres" or all(f.split("=")[0] != key for f in found)):
                found.append(hit)
            used |= span
    return found, used


def _value_names(fields: dict, facets: tuple[str, ...]) -> dict[str, str]:
    """Each way to write a facet value ("casual shoes", "casual shoe", "watch" for Watches) -> its filter; of two
    fields with the same value name, the one listed later in the facets (the more specific) wins."""
    names: dict[str, str] = {}
    for key in facets:
        for value in (fields.get(key) or {}).get("values") or []:
            plain = plain_words(value.replace("-", ""))
            if len(plain) < 3 or plain in ("na", "multi"):
                continue
            forms = {plain, plain.rstrip("s"), plain.replace(" ", "")}
            if plain.endswith("es"):
                forms.add(plain[:-2])
            for form in forms:
                names[form] = f"{key}={value}"
    return names


def _genre_word(token: str, names: dict[str, str]) -> str | None:
    """The genre filter a word names by the genre vocabulary ("funny" -> Comedy, "animated" -> Animation)."""
    for genre, words in GENRE_NAMES.items():
        if f"genres={genre}" not in names.values():
            continue
        for word in (plain_words(w, drop="-") for w in words.split()):
            if token in (word, word + "s", word + "es") or (
                len(word) >= 5 and token.startswith(word) and len(token) - len(word) <= 4
            ):
                return f"genres={genre}"
    return None


def has_name(text: str, known: set[str] | frozenset[str] = frozenset()) -> bool:
    """Whether a capitalised word stands where a sentence does not start ("Tell me about Jaws"): maybe a title.
    'I' and its forms ("I'm") are no names, nor the words of titles already resolved (`known`, plain words)."""
    words = re.findall(r"\S+", text)
    for n, word in enumerate(words):
        bare = word.strip("\"'(,;:")
        if n == 0 or words[n - 1].endswith((".", "!", "?")) or not bare[:1].isupper():
            continue
        if re.fullmatch(r"I(?:'\w+)?", bare) or plain_words(bare) in known:
            continue
        return True
    return False
