"""The figures of an `eval dialogues` run: pass rates, hit@k, off-catalog rate, turns to success, tool errors,
latency per stage and where failures happen; and their headline lines for the terminal."""

from __future__ import annotations

import numpy as np

from .common import percentile, rate

STAGES = ("total", "items_on_screen", "llm_prompt", "llm_generation", "retrieval", "ranking", "transcription", "image")


def summarise(results: list[dict]) -> dict:
    """Pass rates (per script, expectation kind, family), hit@k, off-catalog rate, turns to success, tool errors,
    latency p50/p95 per stage, and where failures happen."""
    turns = [t for s in results for t in s["turns"]]
    checks = [c for t in turns for c in t["checks"]]
    by_kind: dict[str, list[bool]] = {}
    for c in checks:
        by_kind.setdefault(c["kind"], []).append(c["passed"])
    hit_checks = [c for c in checks if c["kind"] == "hit"]
    items = sum(len(t["items"]) for t in turns)
    off = sum(not c["passed"] for c in checks if c["kind"] == "in_catalog")
    with_hit = [s for s in results if s["has_hit"]]
    reached = [s["turns_to_success"] for s in with_hit if s["turns_to_success"]]
    return {
        "n_scripts": len(results),
        "n_turns": len(turns),
        "n_checks": len(checks),
        "script_pass_rate": rate(sum(s["passed"] for s in results), len(results)),
        "check_pass_rate": rate(sum(c["passed"] for c in checks), len(checks)),
        "turn_pass_rate": rate(sum(t["passed"] for t in turns), len(turns)),
        "by_expectation": {
            k: {"passed": sum(v), "n": len(v), "rate": rate(sum(v), len(v))} for k, v in sorted(by_kind.items())
        },
        "by_family": _by_family(results),
        "hit_rate": rate(sum(c["passed"] for c in hit_checks), len(hit_checks)),
        "hit_at": _hit_at(hit_checks),
        "items_shown": items,
        "off_catalog_items": off,
        "off_catalog_rate": rate(off, items) if items else 0.0,
        "invented_titles_removed": sum(len(t["removed_mentions"]) for t in turns),
        "turns_to_success": {
            "scripts_with_hit": len(with_hit),
            "reached": len(reached),
            "mean": round(float(np.mean(reached)), 2) if reached else None,
        },
        "tool_errors": sum(1 for t in turns for c in t["tool_calls"] if c["error"]),
        "turn_errors": sum(1 for t in turns if t["error"]),
        "latency": _latency(turns),
        "failures_by_turn": _failures_by_turn(turns),
        "failures_by_kind": {k: len(v) - sum(v) for k, v in sorted(by_kind.items()) if len(v) - sum(v)},
    }


def _by_family(results: list[dict]) -> dict[str, dict]:
    families = {}
    for family in sorted({s["family"] for s in results}):
        mine = [s for s in results if s["family"] == family]
        fam_checks = [c for s in mine for t in s["turns"] for c in t["checks"]]
        families[family] = {
            "scripts": len(mine),
            "scripts_passed": sum(s["passed"] for s in mine),
            "script_pass_rate": rate(sum(s["passed"] for s in mine), len(mine)),
            "check_pass_rate": rate(sum(c["passed"] for c in fam_checks), len(fam_checks)),
        }
    return families


def _hit_at(hit_checks: list[dict]) -> dict[str, dict]:
    hit_at = {}
    for k in sorted({c["k"] for c in hit_checks}):
        at_k = [c["passed"] for c in hit_checks if c["k"] == k]
        hit_at[f"hit@{k}"] = {"rate": rate(sum(at_k), len(at_k)), "n": len(at_k)}
    return hit_at


def _latency(turns: list[dict]) -> dict[str, dict]:
    """p50 and p95 seconds per stage, over the turns that did not fail."""
    latency = {}
    for stage in STAGES:
        values = [t["timings"][stage] for t in turns if stage in t["timings"] and not t["error"]]
        if values:
            latency[stage] = {"p50": percentile(values, 50), "p95": percentile(values, 95), "n": len(values)}
    return latency


def _failures_by_turn(turns: list[dict]) -> dict[str, int]:
    """How many failed turns there are at each position in the dialogues."""
    failures: dict[str, int] = {}
    for t in turns:
        if not t["passed"]:
            failures[str(t["turn"])] = failures.get(str(t["turn"]), 0) + 1
    return failures


def format_summary(figures: dict) -> str:
    """The headline figures as a few lines of text for the terminal."""
    lines = [
        f"scripts passed {figures['script_pass_rate']:.0%} ({figures['n_scripts']} scripts, "
        f"{figures['n_turns']} turns); expectations passed {figures['check_pass_rate']:.0%} of "
        f"{figures['n_checks']}"
    ]
    for family, f in figures["by_family"].items():
        lines.append(
            f"  {family:12} scripts {f['scripts_passed']}/{f['scripts']}  expectations {f['check_pass_rate']:.0%}"
        )
    hits = ", ".join(f"{k} {v['rate']:.0%} (n={v['n']})" for k, v in figures["hit_at"].items())
    lines.append(
        f"{hits or 'no hit expectations'}; off-catalog items {figures['off_catalog_items']} of "
        f"{figures['items_shown']}; tool errors {figures['tool_errors']}; "
        f"failed turns {figures['turn_errors']}"
    )
    total = figures["latency"].get("total")
    if total:
        lines.append(f"turn latency p50 {total['p50']:.1f} s, p95 {total['p95']:.1f} s; run {figures['seconds']:.0f} s")
    replay = figures.get("replay")
    if replay:
        lines.append(
            f"replay of {replay['file']}: "
            + ("identical" if replay["identical"] else f"{len(replay['differences'])} differences")
        )
    return "\n".join(lines)
