"""The filter grammar, in one place: `FIELD=VALUE`, `FIELD!=VALUE`, `FIELD>=N`, `FIELD<N`, `FIELD=A..B`.

The same strings are typed after `recagent search --where`, written by the planner as tool arguments, and kept
in a conversation as standing constraints. `parse_filter` reads one; `parse_where` turns a list into a Chroma
`where` for one catalog's fields; `merge_constraints` keeps a conversation's constraints up to date.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import ConfigError

_FILTER = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(>=|<=|!=|=|>|<|~)\s*(.+?)\s*$")
_CHROMA_OPS = {"=": "$eq", "!=": "$ne", ">=": "$gte", "<=": "$lte", ">": "$gt", "<": "$lt"}
# Words people use for a field under another name (fashion: colour -> baseColour, type -> articleType).
FIELD_ALIASES = {"color": "basecolour", "colour": "basecolour", "type": "articletype", "category": "mastercategory"}


@dataclass(frozen=True)
class Filter:
    """One filter as written: 'genre!=Horror' -> Filter('genre', '!=', 'Horror')."""

    field: str
    op: str
    value: str

    @property
    def negative(self) -> bool:
        return self.op == "!="


def parse_filter(expr: str) -> Filter | None:
    """The parts of one filter string, or None when it does not follow the grammar."""
    match = _FILTER.match(expr) if isinstance(expr, str) else None
    return Filter(*match.groups()) if match else None


def field_name(key: str, fields: dict) -> str:
    """The catalog's own name of a field, matched case-insensitively, singular or plural, or by an alias."""
    lowered = {k.lower(): k for k in fields}
    for candidate in (key.lower(), key.lower() + "s", key.lower().rstrip("s"), FIELD_ALIASES.get(key.lower(), "")):
        if candidate in lowered:
            return lowered[candidate]
    raise ConfigError(f"unknown filter field '{key}'; this catalog has: {', '.join(sorted(fields)) or 'no fields'}")


def parse_where(expressions: Iterable[str], fields: dict) -> dict | None:
    """Filters as a Chroma `where`: 'genre=Comedy', 'year>=1990', 'year=1990..1999', 'colour!=Black'.

    Field names match case-insensitively and singular or plural ('genre' finds 'genres'); text values
    match the catalog's own spelling case-insensitively ('red' finds 'Red'); for list fields '='
    means "contains".
    """
    clauses: list[dict] = []
    for expr in expressions:
        flt = parse_filter(expr)
        if flt is None:
            raise ConfigError(f"cannot read filter '{expr}': use FIELD=VALUE, FIELD>=N, FIELD<N or FIELD=A..B")
        key = field_name(flt.field, fields)
        info, op, raw = fields[key], flt.op, flt.value
        if op == "=" and ".." in raw and info["type"] in ("int", "float"):
            lo, hi = (_number(v, key) for v in raw.split("..", 1))
            clauses += [{key: {"$gte": lo}}, {key: {"$lte": hi}}]
            continue
        value = _number(raw, key) if info["type"] in ("int", "float") else _text(raw, info, key)
        if info["type"] == "list":
            if op not in ("=", "!="):
                raise ConfigError(f"filter '{expr}': '{key}' is a list, use = (contains) or != (does not contain)")
            clauses.append({key: {"$contains" if op == "=" else "$not_contains": value}})
        else:
            chroma_op = _CHROMA_OPS.get(op)
            if chroma_op is None or (
                chroma_op in ("$gte", "$lte", "$gt", "$lt") and info["type"] not in ("int", "float")
            ):
                raise ConfigError(f"filter '{expr}': operator '{op}' does not apply to text field '{key}'")
            clauses.append({key: {chroma_op: value}})
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def matches(meta: dict, where: dict | None) -> bool:
    """Whether an item's metadata passes a `where` from parse_where, as Chroma would decide it (the ranking head
    filters the whole catalog in memory with this)."""
    if not where:
        return True
    if "$and" in where:
        return all(matches(meta, part) for part in where["$and"])
    [(key, cond)] = where.items()
    value = meta.get(key)
    (op, want), *_ = cond.items() if isinstance(cond, dict) else [("$eq", cond)]
    if op in ("$contains", "$not_contains"):
        found = want in value if isinstance(value, list) else want in str(value or "").split("|")
        return found == (op == "$contains")
    if value is None:
        return op == "$ne"
    try:
        return {
            "$eq": value == want,
            "$ne": value != want,
            "$gte": value >= want,
            "$lte": value <= want,
            "$gt": value > want,
            "$lt": value < want,
        }[op]
    except TypeError:  # a number compared with text: the item's field is malformed, so it does not pass
        return False


def where_fields(where: dict | None) -> set[str]:
    """The metadata fields a Chroma `where` names ({"$and": [{"baseColour": "Black"}, ...]} too)."""
    if not where:
        return set()
    names: set[str] = set()
    for key, value in where.items():
        if key.startswith("$"):
            for part in value if isinstance(value, list) else [value]:
                names |= where_fields(part) if isinstance(part, dict) else set()
        else:
            names.add(key)
    return names


def merge_constraints(current: list[str], new: list[str]) -> list[str]:
    """current plus new, where a new constraint on the same field and operator replaces the old one."""
    merged = list(current)
    for constraint in new:
        key = constraint_key(constraint)
        merged = [c for c in merged if constraint_key(c) != key] + [constraint]
    return merged


def constraint_key(constraint: str) -> tuple[str, str, str]:
    """'genre!=Horror' -> ('genre', '!=', 'horror'); list constraints differ by value, scalar ones by op only."""
    flt = parse_filter(constraint)
    if flt is None:
        return (constraint, "", "")
    name = flt.field.lower().rstrip("s")
    return (name, flt.op, flt.value.lower() if flt.op in ("=", "!=") and name in ("genre", "tag") else "")


def _number(raw: str, key: str) -> int | float:
    try:
        return int(raw) if re.fullmatch(r"-?\d+", raw.strip()) else float(raw)
    except ValueError:
        raise ConfigError(f"filter on '{key}' needs a number, got '{raw}'") from None


def _text(raw: str, info: dict, key: str) -> str:
    values = info.get("values")
    if values:
        by_lower = {v.lower(): v for v in values}
        if raw.lower() in by_lower:
            return by_lower[raw.lower()]
        raise ConfigError(
            f"'{raw}' is not a value of '{key}'; known values: {', '.join(values[:40])}"
            + (" ..." if len(values) > 40 else "")
        )
    return raw
