"""What the user's words mean, read by plain code where a 1.5B planner cannot be trusted: years, decades and eras;
time relative to what was shown ("older", "newer"); negations put on the field that holds the value ("not animated"
-> genres!=Animation, "anything but black" -> baseColour!=Black); a constraint dropped ("actually, horror is fine");
and the items named as references ("something like The Matrix", "I loved Heat and Ronin").

Everything here is pure: a message, the catalog's fields and what was shown in, filters and names out. The planner
still chooses the tool and the query; `apply_reading` (toolbox) makes the filters agree with what is read here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from recagent.tools.text import GENRE_HINTS, GENRE_NAMES, plain_words

_DECADE_WORDS = {
    "twenties": 1920,
    "thirties": 1930,
    "forties": 1940,
    "fifties": 1950,
    "sixties": 1960,
    "seventies": 1970,
    "eighties": 1980,
    "nineties": 1990,
    "two thousands": 2000,
    "noughties": 2000,
    "aughts": 2000,
}
_PART = r"(?:(?P<part>early|mid|late)[\s-]*)?"
_DECADE = re.compile(
    r"(?<![\d])"
    + _PART
    + r"(?:(?P<century>19|20)(?P<d4>\d)0\s*'?s|'?(?P<d2>\d)0\s*'?s|(?P<word>"
    + "|".join(_DECADE_WORDS)
    + r"))\b"
)
_YEAR = r"(1[89]\d\d|20\d\d)"
_BETWEEN = re.compile(rf"\bbetween\s+{_YEAR}\s+(?:and|&|-)\s+{_YEAR}\b|\b{_YEAR}\s*(?:-|to|–)\s*{_YEAR}\b")
_BEFORE = re.compile(rf"\b(?:before|until|up to|pre|older than)\s+{_YEAR}\b")
_AFTER = re.compile(rf"\b(?:after|post|newer than|later than)\s+{_YEAR}\b")
_SINCE = re.compile(rf"\b(?:since|from)\s+{_YEAR}\s+(?:on(?:wards?)?|or (?:later|after|newer))\b|\bsince\s+{_YEAR}\b")
_IN_YEAR = re.compile(rf"\b(?:in|from|of)\s+{_YEAR}\b")
_OLDER = re.compile(r"\b(older|earlier|less recent|not as (?:new|recent)|before (?:these|those|them|that))\b")
_NEWER = re.compile(r"\b(newer|more recent|later ones|not as old|after (?:these|those|them|that)|more modern)\b")

# "not animated", "no musicals", "anything but black", "without heels", "nothing with sandals"
_NEGATION = re.compile(
    r"\b(?:not|no|non|without|anything but|except|nothing|never|avoid|skip|hate|dislike|don'?t want|"
    r"do not want|don'?t like|do not like|other than|instead of|but not|none of)\s+"
    r"(?:any\s+|an?\s+|the\s+|too\s+|more\s+|with\s+|in\s+|that are\s+|that is\s+|it\s+|one\s+)*"
    r"(?P<words>[a-z][a-z'-]*(?:\s+[a-z][a-z'-]*){0,2})"
)
# "actually, horror is fine", "I don't mind horror", "romance is ok after all", "forget the year", "any year"
_DROP = re.compile(
    r"\b(?P<a>[a-z][a-z'-]*(?:\s+[a-z][a-z'-]*)?)\s+(?:is|are|would be|'s|s)\s+"
    r"(?:fine|ok|okay|alright|all right|good)\b"
    r"|\b(?:don'?t|do not|wouldn'?t) mind\s+(?:an?\s+|some\s+)?(?P<b>[a-z][a-z'-]*(?:\s+[a-z][a-z'-]*)?)"
    r"|\b(?:forget|never mind|ignore|drop)\s+(?:about\s+)?(?:the\s+)?(?P<c>[a-z][a-z'-]*)"
    r"|\bany (?P<d>year|decade|era|time|colou?r|genre)\b"
)
# What introduces a reference to items the user knows: "something like X", "similar to X", "I loved X"
_REFERENCE = re.compile(
    r"\b(?:(?:something|anything|movies?|films?|ones?|stuff|more)\s+)?(?:like|similar to|in the vein of|"
    r"along the lines of|the same as|reminds? me of|i (?:really |just )?(?:loved|liked|enjoyed|adored)|"
    r"i(?: am|'m) a fan of|fans? of|i love|i like|i enjoy)\s+(?P<span>.+)",
    re.IGNORECASE,
)
_NOT_A_TITLE = re.compile(
    r"^(?:this|that|these|those|it|them|one|ones|the (?:first|second|third|last|photo|picture|one)|something|"
    r"anything|a |an |some |movies?\b|films?\b|to |watching|it |what|how|when|horror|comedy|comedies|action)",
)
_SPAN_END = re.compile(r"\s*(?:[.;!?:]|\s(?:but|with|only|except|though|although|please|because|that is|which)\s)")
_TIME_FIELD_WORDS = ("year", "years", "decade", "era", "time", "date", "old", "new", "age")


@dataclass
class Reading:
    """What code read in one message: filters to apply, constraints to drop, referenced item ids."""

    time: list[str] = field(default_factory=list)  # e.g. ["year=1990..1999"] or ["year<1975"]
    negations: list[str] = field(default_factory=list)  # e.g. ["genres!=Animation"]
    dropped: list[str] = field(default_factory=list)  # constraints (as they stand) that the user takes back
    references: list[str] = field(default_factory=list)  # item ids named as references ("like X")

    @property
    def filters(self) -> list[str]:
        return self.time + self.negations


def decade_range(said: str) -> tuple[int, int] | None:
    """'the 1990s' / 'the nineties' / "'90s" / 'early 2000s' -> (first year, last year); None when none is named."""
    match = _DECADE.search(said)
    if not match:
        return None
    if match["word"]:
        start = _DECADE_WORDS[match["word"]]
    elif match["century"]:
        start = int(match["century"]) * 100 + int(match["d4"]) * 10
    else:
        digit = int(match["d2"])
        start = (2000 if digit in (0, 1) else 1900) + digit * 10
    part = match["part"]
    if part == "early":
        return start, start + 3
    if part == "mid":
        return start + 3, start + 6
    if part == "late":
        return start + 6, start + 9
    return start, start + 9


def time_filters(said: str, shown_years: list[int], time_field: str = "year") -> list[str]:
    """The time constraint the message asks for, as filters on the catalog's time field, or [] when it names none.

    Decades and eras become a range; "before 1990" / "after 2000" / "since 2010" a bound; "older" and "newer"
    are relative to the items shown last: older than the oldest of them, newer than the newest."""
    text = said.lower()
    if match := _BETWEEN.search(text):
        years = sorted(int(y) for y in match.groups() if y)
        return [f"{time_field}={years[0]}..{years[-1]}"]
    if match := _BEFORE.search(text):
        return [f"{time_field}<{match.group(1)}"]
    if match := _AFTER.search(text):
        return [f"{time_field}>{match.group(1)}"]
    if match := _SINCE.search(text):
        return [f"{time_field}>={next(y for y in match.groups() if y)}"]
    if span := decade_range(text):
        return [f"{time_field}={span[0]}..{span[1]}"]
    if match := _IN_YEAR.search(text):
        return [f"{time_field}={match.group(1)}..{match.group(1)}"]
    if shown_years and _OLDER.search(text):
        return [f"{time_field}<{min(shown_years)}"]
    if shown_years and _NEWER.search(text):
        return [f"{time_field}>{max(shown_years)}"]
    return []


def value_words(fields: dict) -> dict[str, tuple[str, str]]:
    """Every way a message can name a value of a categorical field: word -> (field, value). Values as the catalog
    writes them ("Sandals", "Navy Blue"), their singular, and the genre vocabulary ("animated" -> Animation)."""
    words: dict[str, tuple[str, str]] = {}
    for key, info in fields.items():
        if info.get("type") not in ("str", "list") or key in ("title", "tags"):
            continue
        for value in info.get("values") or []:
            plain = plain_words(value)
            if len(plain) < 3:
                continue
            for word in (plain, plain.rstrip("s"), plain_words(value, drop="-")):
                words.setdefault(word, (key, value))
            vocabulary = f"{GENRE_NAMES.get(value, '')} {GENRE_HINTS.get(value, '')}".split()
            for word in vocabulary:
                words.setdefault(plain_words(word), (key, value))
    return words


def _value_in(phrase: str, words: dict[str, tuple[str, str]], anywhere: bool = False) -> tuple[str, str] | None:
    """The field value a short phrase names ("animated", "musicals", "black", "sports shoes"), longest words first;
    at the phrase's start only, unless `anywhere` ("not sure, maybe a comedy" turns nothing down)."""
    tokens = plain_words(phrase).split()
    for n in range(min(3, len(tokens)), 0, -1):
        for start in range(len(tokens) - n + 1 if anywhere else 1):
            chunk = " ".join(tokens[start : start + n])
            for candidate in (chunk, chunk.rstrip("s"), chunk.replace(" ", "")):
                if candidate in words:
                    return words[candidate]
            for word, found in words.items():  # word beginnings: "animat" names "animated", "comed" "comedies"
                if len(word) >= 5 and chunk.startswith(word) and len(chunk) - len(word) <= 3:
                    return found
    return None


def negation_filters(said: str, fields: dict) -> list[str]:
    """Filters for the values the message turns down, each on the field that holds the value."""
    words = value_words(fields)
    out: list[str] = []
    for match in _NEGATION.finditer(said.lower()):
        found = _value_in(match["words"], words)
        if found:
            key, value = found
            if f"{key}!={value}" not in out:
                out.append(f"{key}!={value}")
    return out


def dropped_constraints(said: str, standing: list[str], fields: dict, time_field: str = "year") -> list[str]:
    """The standing constraints the message takes back ("actually, horror is fine" drops genres!=Horror; "any
    year" drops the year bounds)."""
    words = value_words(fields)
    out: list[str] = []
    for match in _DROP.finditer(said.lower()):
        phrase = re.sub(r"^(?:the|a|an|any|actually|ok|okay|well)\s+", "", next(g for g in match.groups() if g))
        if phrase in _TIME_FIELD_WORDS:
            out += [c for c in standing if c.split("<")[0].split(">")[0].split("=")[0].strip() == time_field]
            continue
        found = _value_in(phrase, words, anywhere=True)
        if found:
            key, value = found
            out += [c for c in standing if c.lower() in (f"{key}!={value}".lower(), f"{key}={value}".lower())]
    return list(dict.fromkeys(out))


def reference_spans(said: str) -> list[str]:
    """The phrases that may name items the user knows, up to the end of the clause: 'something like The Matrix,
    but funnier' -> ['The Matrix,']; 'I loved Heat, Ronin and Toy Story' -> ['Heat, Ronin and Toy Story']."""
    spans = []
    for match in _REFERENCE.finditer(said):
        span = _SPAN_END.split(match["span"], maxsplit=1)[0].strip(" \"'")
        if span and not _NOT_A_TITLE.match(span.lower()):
            spans.append(span)
    return spans


def referenced_items(said: str, find_title: Callable[[str], str | None]) -> list[str]:
    """The ids of the catalog items the message names as references ("I loved Heat and Ronin" -> both). A span is
    read as one title if it is one, else as a list (commas, "and", "or") up to the first part that is no title:
    "The Matrix, mind-bending science fiction" names The Matrix only."""
    ids: list[str] = []
    for span in reference_spans(said):
        whole = find_title(span.strip(" ,"))
        found = [whole] if whole else []
        if not whole:
            for part in re.split(r"\s*,\s*(?:and\s+|or\s+)?|\s+(?:and|or|&)\s+", span):
                item = find_title(part.strip()) if part.strip() else None
                if not item:
                    break
                found.append(item)
        ids += [i for i in found if i not in ids]
    return ids


def read_message(
    said: str,
    fields: dict,
    standing: list[str],
    shown_years: list[int],
    find_title: Callable[[str], str | None] | None = None,
    time_field: str = "year",
) -> Reading:
    """Everything code reads in one message (see the module's docstring)."""
    has_time = time_field in fields
    return Reading(
        time=time_filters(said, shown_years, time_field) if has_time else [],
        negations=negation_filters(said, fields),
        dropped=dropped_constraints(said, standing, fields, time_field),
        references=referenced_items(said, find_title) if find_title else [],
    )
