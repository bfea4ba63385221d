"""`recagent bench serve` for real, small: the scripted LLM through a real `recagent serve` process that the benchmark
starts, 1 then 2 simultaneous users replaying 2 short dialogues; the report's fields, and every completed turn stored.
Also the parts that decide a verdict, on made-up answers: the storage check catches a lost and a half-stored turn,
queue-wait quantiles from the histogram's buckets, and the acceptance targets."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from conftest import run_cli

from recagent.evals.bench_serve import (
    SCRIPTED_CALLS_PER_TURN,
    ClientTurn,
    Level,
    _bucket_quantile,
    acceptance,
    check_storage,
    format_table,
    merge_results,
)

DIALOGUES = {
    "heist.yaml": "name: heist\nfamily: refinement\ncatalog: movies\nturns:\n"
    "  - say: a heist movie with a clever twist\n  - say: something newer\n",
    "shark.yaml": "name: shark\nfamily: basic\ncatalog: movies\nturns:\n"
    "  - say: a scary movie about a shark\n  - say: not that one, an older one\n",
}
LEVEL_KEYS = {
    "users",
    "turns_sent",
    "turns_replied",
    "wall_s",
    "turns_per_min",
    "items_on_screen_s",
    "whole_turn_s",
    "service_overhead_ms",
    "queue_wait",
    "errors",
    "errors_other_than_503",
    "busy_503",
    "server_errors",
    "storage",
    "load",
}


@pytest.mark.server
def test_bench_serve_scripted_two_users(env, tmp_path, movies_index):
    folder = tmp_path / "dialogues"
    folder.mkdir()
    for name, text in DIALOGUES.items():
        (folder / name).write_text(text)
    out = tmp_path / "bench.json"
    cmd = ["bench", "serve", "--llm", "scripted", "--users", "1,2", "--turns", "2", "--min-turns", "2"]
    cmd += ["--dialogues", str(folder), "--overhead-turns", "4", "--label", "ci", "--json", str(out)]
    # Every turn asks the scripted LLM as planner and writer (code plans off), so its calls can be counted
    done = run_cli({**env, "RECAGENT_CODE_PLANS": "0"}, *cmd, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| ci | 2 | 4/4 |" in done.stdout and "service overhead" in done.stdout

    setups = json.loads(out.read_text())["setups"]
    assert len(setups) == 1 and setups[0]["setup"]["label"] == "ci"
    results = setups[0]
    assert sorted(results["dialogues"]) == ["heist", "shark"]
    assert [level["users"] for level in results["levels"]] == [1, 2]
    for level, turns in zip(results["levels"], (2, 4)):
        assert LEVEL_KEYS <= set(level)
        assert level["turns_sent"] == level["turns_replied"] == turns, level["errors"]
        assert level["errors"] == {} and level["errors_other_than_503"] == 0 and level["server_errors"] == {}
        assert level["whole_turn_s"]["n"] == turns and level["items_on_screen_s"]["n"] == turns
        assert 0 < level["items_on_screen_s"]["p50"] <= level["whole_turn_s"]["p50"] < 30
        assert level["turns_per_min"] > 0 and level["service_overhead_ms"]["p50"] is not None
        assert level["queue_wait"]["calls"] == SCRIPTED_CALLS_PER_TURN * turns and level["queue_wait"]["mean_s"] >= 0
        storage = level["storage"]
        assert turns // 2 <= storage["conversations"] <= turns
        assert storage["replied"] == storage["stored"] == turns
        assert storage["lost"] == storage["half_stored"] == storage["stored_without_reply_seen"] == 0
        assert storage["all_stored"] and storage["problems"] == []
        assert level["load"]["load1_max"] is not None
    overhead = results["overhead"]
    assert overhead["turns"] == 4 and overhead["failed"] == 0
    assert overhead["http_turn_ms"]["p50"] > 0 and overhead["in_process_turn_ms"]["p50"] > 0
    assert overhead["overhead_paired_ms"]["p50"] is not None
    assert "overhead_within_50ms" in results["acceptance"]


def _turn(conversation: str, text: str, outcome: str = "reply") -> ClientTurn:
    return ClientTurn(0, conversation, text, 0.0, 200, outcome)


def _stored(conversations: dict[str, dict]) -> httpx.Client:
    """A client whose GET /conversations/{id} answers from `conversations` (404 for the others)."""

    def answer(request: httpx.Request) -> httpx.Response:
        body = conversations.get(request.url.path.rsplit("/", 1)[-1])
        return httpx.Response(200, json=body) if body else httpx.Response(404, json={"error": "no", "kind": "x"})

    return httpx.Client(base_url="http://bench", transport=httpx.MockTransport(answer))


def _conversation(texts: list[str], users: int | None = None) -> dict:
    """A stored conversation as GET /conversations/{id} gives it: turns, state (messages) and version."""
    messages = [{"role": "user", "content": "x"}] * (len(texts) if users is None else users)
    messages += [{"role": "assistant", "content": "ok"}] * len(texts)
    turns = [{"number": n, "request": {"text": t}, "reply": {"reply": "ok"}} for n, t in enumerate(texts, 1)]
    return {"version": len(texts), "state": {"messages": messages}, "turns": turns}


def test_the_storage_check_finds_lost_half_stored_and_unseen_turns():
    level = Level(2)
    level.conversations = {
        "good": [_turn("good", "a"), _turn("good", "b"), _turn("good", "c", "error")],
        "lost": [_turn("lost", "a"), _turn("lost", "b")],
        "half": [_turn("half", "a")],
        "unseen": [_turn("unseen", "a"), _turn("unseen", "b", "client")],
        "gone": [_turn("gone", "a")],
    }
    client = _stored(
        {
            "good": _conversation(["a", "b"]),
            "lost": _conversation(["a"]),
            "half": _conversation(["a"], users=2),  # the state moved on without its turn row
            "unseen": _conversation(["a", "b"]),  # the client gave up waiting; the turn completed and was stored
        }
    )
    storage = check_storage(client, level)
    assert storage["replied"] == 7 and storage["stored"] == 6
    assert storage["lost"] == 2  # "b" of `lost` and "a" of `gone`
    assert storage["half_stored"] == 1 and storage["stored_without_reply_seen"] == 1
    assert not storage["all_stored"] and len(storage["problems"]) == 2


def test_queue_wait_quantiles_from_buckets():
    buckets = [(0.05, 0.0), (0.1, 0.0), (1.0, 5.0), (2.0, 10.0), (float("inf"), 10.0)]
    assert _bucket_quantile(buckets, 0.5) == 1.0
    assert _bucket_quantile(buckets, 0.95) == 1.9
    assert _bucket_quantile([(0.05, 0.0), (float("inf"), 0.0)], 0.5) is None
    assert _bucket_quantile([(1.0, 0.0), (float("inf"), 4.0)], 0.5) == 1.0  # beyond the last bound: that bound


def _level(users: int, per_min: float, p50: float, p95: float, errors: int = 0, lost: int = 0) -> dict:
    return {
        "users": users,
        "turns_sent": 8,
        "turns_replied": 8,
        "turns_per_min": per_min,
        "items_on_screen_s": {"p50": 1.0, "p95": 2.0},
        "whole_turn_s": {"p50": p50, "p95": p95},
        "service_overhead_ms": {"p50": 12.0},
        "queue_wait": {"mean_s": 0.5, "p95_s": 0.01},
        "errors_other_than_503": errors,
        "busy_503": 0,
        "storage": {"replied": 8, "stored": 8 - lost, "lost": lost, "half_stored": 0, "all_stored": lost == 0},
        "load": {"load1_max": 0.5, "cores_others": 0.1},
    }


def test_acceptance_and_the_table(tmp_path: Path):
    results = {
        "setup": {"label": "local"},
        "levels": [_level(1, 10.0, 6.0, 7.0), _level(4, 10.5, 22.0, 23.9)],
        "overhead": {"overhead_paired_ms": {"p50": 20.0}},
    }
    verdict = acceptance(results)
    assert verdict["four_users_no_errors"] and verdict["four_users_all_stored"]
    assert verdict["throughput_at_least_1_user"] and verdict["throughput_4_over_1"] == 1.05
    assert verdict["p95_within_4x"] and verdict["p95_4_over_p50_1"] == 3.98
    assert verdict["overhead_within_50ms"]
    results["levels"][1] = _level(4, 9.0, 22.0, 25.0, errors=1, lost=1)
    verdict = acceptance(results)
    assert not (verdict["four_users_no_errors"] or verdict["four_users_all_stored"])
    assert not (verdict["throughput_at_least_1_user"] or verdict["p95_within_4x"])
    table = format_table([results])
    assert "| local | 4 | 8/8 | 9.0 | 1.0 / 2.0 | 22.0 / 25.0 | 0.5 / < 0.05 | 12.0 | 1 | 0 | 8 / 7 / 1 / 0 |" in table

    path = tmp_path / "figures.json"
    path.write_text(json.dumps(merge_results(path, results)))
    other = {**results, "setup": {"label": "server"}}
    path.write_text(json.dumps(merge_results(path, other)))
    again = merge_results(path, {**results, "levels": []})  # the same label replaces its setup
    assert [s["setup"]["label"] for s in again["setups"]] == ["server", "local"] and again["setups"][1]["levels"] == []
