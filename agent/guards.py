"""Guards: what the user's own words allow the planner to do.

A 1.5B planner copies filters from its prompt's examples, adds filters from thin air, and forgets to reject
the item the user turned down. Each guard decides from the user's message alone, so a plan can only narrow
what the user asked for.
"""

from __future__ import annotations

import re

from recagent.tools.errors import ConfigError
from recagent.tools.filters import constraint_key, field_name, parse_filter, parse_where
from recagent.tools.text import GENRE_HINTS, GENRE_NAMES

NEGATIVE = re.compile(r"\b(not|no|don't|dont|didn't|didnt|seen|hate|dislike|skip|other than|except|without)\b")
ORDINALS = {
    "first": 1,
    "1st": 1,
    "second": 2,
    "2nd": 2,
    "third": 3,
    "3rd": 3,
    "fourth": 4,
    "4th": 4,
    "fifth": 5,
    "5th": 5,
}
TIME_WORDS = re.compile(
    r"\b(older|old|newer|new|recent|latest|classic|before|after|since|until|decade|(?:\d\d)?\d0s|"
    r"\d{4}|modern|vintage|era|century)\b"
)
# value (lower case) -> the words by which a user asks for it without naming it
_VALUE_WORDS = {genre.lower(): f"{GENRE_NAMES[genre]} {GENRE_HINTS.get(genre, '')}".split() for genre in GENRE_NAMES}


def is_negative(said: str) -> bool:
    """Whether the message turns something down ("no horror", "I've seen it", "not the first one")."""
    return bool(NEGATIVE.search(said))


def asked_for(flt: str, said: str, time_field: str = "year") -> bool:
    """Whether the user's message asks for this filter: its value or a word for it is in the message (the time
    field: any time word); a negative filter also needs a negative word."""
    parsed = parse_filter(flt)
    if parsed is None or parsed.op == "~":
        return False
    if parsed.field.lower().startswith(time_field):
        return bool(TIME_WORDS.search(said))
    if parsed.negative and not is_negative(said):  # "no horror", "without romance"
        return False
    value = parsed.value.lower()
    words = [value, value.rstrip("s"), *_VALUE_WORDS.get(value, [])]
    return any(re.search(rf"\b{re.escape(w[: max(4, len(w) - 2)])}", said) for w in words if w)


def named_values(said: str, fields: dict, present: list[str]) -> list[str]:
    """Filters for the field values the user names outright ("like this but in black" -> baseColour=Black).

    Used on photo turns, where the words only say what to change; fields the planner already filtered,
    and negated requests ("not black"), are left to the planner.
    """
    if is_negative(said):
        return []
    taken = {_field(p.field, fields) for p in map(parse_filter, present) if p}
    out = []
    for key, info in fields.items():
        if key.lower() in taken or info.get("type") != "str" or key in ("title", "year"):
            continue
        for value in sorted(info.get("values", []), key=len, reverse=True):  # "Navy Blue" before "Blue"
            if len(value) > 2 and re.search(rf"\b{re.escape(value.lower())}\b", said):
                out.append(f"{key}={value}")
                break
    return out


def _field(name: str, fields: dict) -> str:
    """A filter's field as the catalog names it, lower case ("colour" -> "basecolour"); the name itself if unknown."""
    try:
        return field_name(name, fields).lower()
    except ConfigError:
        return name.lower()


def rejected_positions(said: str, positions: list[int], shown: int) -> list[int]:
    """The 1-based positions of the last list the user turns down. The planner's list counts only when the
    message is negative; it may forget the positions ("not the first one"), which then come from the words."""
    if not is_negative(said):
        return []
    if not positions and (match := re.search(r"\b(first|last) (two|three|four)\b", said)):  # "not the first two"
        count = {"two": 2, "three": 3, "four": 4}[match[2]]
        positions = list(range(1, count + 1)) if match[1] == "first" else list(range(shown - count + 1, shown + 1))
    positions = positions or [n for word, n in ORDINALS.items() if re.search(rf"\b{word}\b", said)]
    if "last" in said.split() and shown and not positions:
        positions = [shown]
    return [p for p in positions if isinstance(p, int) and 1 <= p <= shown]


def allowed_filters(
    filters: list[str], said: str, fields: dict, standing: list[str], photo_turn: bool = False, time_field: str = "year"
) -> tuple[list[str], list[str]]:
    """The filters of a plan that the user's words allow, and a note for each one dropped.

    Kept: filters that parse for this catalog, do not contradict each other, and were either asked for in this
    message or already stand in the conversation. On a photo turn, values the user names are added.
    """
    notes: list[str] = []
    wanted = list(dict.fromkeys(f for f in filters if isinstance(f, str)))
    if photo_turn:
        wanted += named_values(said, fields, wanted)
    positive = {f.replace("!=", "=") for f in wanted if "!=" not in f}
    standing_keys = {constraint_key(c) for c in standing}  # "genre!=Musical" stands when "genres!=Musical" does
    good = []
    for flt in wanted:
        if "!=" in flt and flt.replace("!=", "=") in positive:
            notes.append(f"ignored filter {flt!r}: contradicts {flt.replace('!=', '=')!r}")
            continue
        try:
            parse_where([flt], fields)
        except ConfigError as exc:
            notes.append(f"ignored filter {flt!r}: {exc}")
            continue
        if constraint_key(flt) not in standing_keys and not asked_for(flt, said, time_field):
            notes.append(f"ignored filter {flt!r}: not asked for")
            continue
        good.append(flt)
    return good, notes
