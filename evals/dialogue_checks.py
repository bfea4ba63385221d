"""The checks of one scripted turn: each expectation the script states, and those every turn must meet (no error,
nothing outside the catalog, no item shown twice in the dialogue)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from recagent.agent.loop import Reply

from .dialogue_scripts import CatalogFacts, Turn, has_value

AUTO_CHECKS = ("no_error", "in_catalog", "no_repeat")  # every turn


@dataclass
class DialogueState:
    """What the checks remember between the turns of one dialogue."""

    shown: set[str] = field(default_factory=set)  # every item id listed so far
    previous_years: list[int] = field(default_factory=list)  # the years of the last list that had items

    def update(self, reply: Reply) -> None:
        """Remember the items of a turn once it has been checked."""
        self.shown |= {i["id"] for i in reply.items}
        if reply.items:
            self.previous_years = [i["year"] for i in reply.items if isinstance(i.get("year"), int)]


def check(kind: str, passed: bool, detail: str = "", **extra: Any) -> dict:
    """One check's result as the figures hold it."""
    return {"kind": kind, "passed": bool(passed), "detail": detail, **extra}


def check_turn(turn: Turn, reply: Reply, state: DialogueState, facts: CatalogFacts) -> list[dict]:
    """Each expectation of the turn, and the automatic ones, as {"kind", "passed", "detail"}."""
    items = reply.items
    checks = [check("no_error", reply.error is None, reply.error or "")]
    outside = [i["title"] for i in items if i["id"] not in facts.items or facts.items[i["id"]].title != i["title"]]
    checks.append(check("in_catalog", not outside, f"not in the catalog: {outside}" if outside else ""))
    repeated = [i["title"] for i in items if i["id"] in state.shown]
    checks.append(check("no_repeat", not repeated, f"shown before: {repeated}" if repeated else ""))
    exp = turn.expect
    if "hit" in exp:
        checks.append(_hit(exp["hit"], [i["id"] for i in items], facts))
    for key in ("require", "forbid"):
        checks += _field_values(key, dict(exp.get(key) or {}), items)
    years: list[int] = [m["year"] for m in items if isinstance(m.get("year"), int)]
    if "year" in exp:
        low, high = exp["year"].get("min", -(10**9)), exp["year"].get("max", 10**9)
        ok = bool(years) and len(years) == len(items) and all(low <= y <= high for y in years)
        checks.append(check("year", ok, f"years {sorted(years)} vs {low}..{high}"))
    for key, older in (("older", True), ("newer", False)):
        if exp.get(key):
            before = state.previous_years
            if older:
                ok = bool(years) and bool(before) and max(years) < min(before)
            else:
                ok = bool(years) and bool(before) and min(years) > max(before)
            checks.append(check(key, ok, f"years {sorted(years)} after {sorted(before)}"))
    checks += _reply_checks(exp, reply, facts)
    return checks


def _hit(spec: dict, ids: list[str], facts: CatalogFacts) -> dict:
    """Whether one of the expected items is among the first k."""
    k = int(spec.get("k", 5))
    wanted = [facts.resolve(r) for r in spec["items"]]
    found = [facts.items[w].title for w in wanted if w in ids[:k]]
    return check("hit", bool(found), f"in top {k}: {found}" if found else f"none of {spec['items']} in top {k}", k=k)


def _field_values(key: str, spec: dict, items: list[dict]) -> list[dict]:
    """require: at least a share of the items (all by default) hold one of the values; forbid: at most a share
    (none by default)."""
    share = float(spec.pop("share", 1.0 if key == "require" else 0.0))
    checks = []
    for name, values in spec.items():
        values = values if isinstance(values, list) else [values]
        matching = [m for m in items if any(has_value(m.get(name), v) for v in values)]
        if key == "require":
            ok = bool(items) and len(matching) >= share * len(items) - 1e-9
            detail = f"{len(matching)}/{len(items)} items have {name} in {values} (need {share:.0%})"
        else:
            ok = len(matching) <= share * len(items)
            detail = f"{len(matching)}/{len(items)} items have {name} in {values}"
        checks.append(check(key, ok, detail, field=name))
    return checks


def _reply_checks(exp: dict, reply: Reply, facts: CatalogFacts) -> list[dict]:
    """The expectations about what the reply did: a question, a tool, its words, the transcript, its items."""
    checks = []
    items = reply.items
    if "clarify" in exp:
        checks.append(
            check(
                "clarify",
                reply.clarifying == bool(exp["clarify"]),
                "asked a question" if reply.clarifying else f"showed {len(items)} items",
            )
        )
    if "tool" in exp:
        called = [c.name for c in reply.tool_calls]
        checks.append(check("tool", exp["tool"] in called, f"tools called: {called}"))
    if "reply_excludes" in exp:
        found = [s for s in exp["reply_excludes"] if s.lower() in reply.text.lower()]
        checks.append(check("reply_excludes", not found, f"reply contains {found}" if found else ""))
    if "transcript_has" in exp:
        heard = (reply.transcript or "").lower()
        missing = [w for w in exp["transcript_has"] if w.lower() not in heard]
        checks.append(check("transcript_has", not missing, f"heard {heard!r}"))
    if "exclude_items" in exp:
        banned = {facts.resolve(r) for r in exp["exclude_items"]}
        shown = [facts.items[i["id"]].title for i in items if i["id"] in banned]
        checks.append(check("exclude_items", not shown, f"shown: {shown}" if shown else ""))
    if "min_items" in exp:
        checks.append(check("min_items", len(items) >= int(exp["min_items"]), f"{len(items)} items"))
    return checks
