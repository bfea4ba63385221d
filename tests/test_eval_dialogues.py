"""Evaluation dialogues and simulated users: script validation, checks that must fail, reports, record and
replay (exact, without a model), leak-free simulated users; one small run with the real local LLM."""

import json
import re

import pytest
from conftest import run_cli

from recagent.agent.llm import ReplayLLM, ScriptedLLM, make_llm
from recagent.agent.loop import Agent
from recagent.evals.eval_dialogues import FAMILIES, fixture_agent, load_scripts, run_dialogues, validate_scripts
from recagent.evals.report import dialogue_report, simulate_report
from recagent.evals.simulate import fashion_targets, leaks, movie_targets, run_simulation, user_turns
from recagent.tools.catalog import load_catalog
from recagent.tools.errors import ConfigError, ReplayError, ScriptError

SHARK_SCRIPT = """
name: shark-and-older
family: refinement
catalog: movies
turns:
  - speak: I want a scary movie about a shark
    expect:
      transcript_has: [shark]
      hit: {items: ["Jaws (1975)"], k: 5}
      require: {genres: [Horror]}
      forbid: {genres: [Horror]}          # must fail: the planner filters on Horror
  - say: something older
    expect:
      older: true
      hit: {items: ["Toy Story (1995)"], k: 5}   # must fail: not a shark film
"""


def planner(messages):
    """A fake planner and reply writer: shark -> a Horror search, "older" -> the year filter the state offers."""
    if not any("JSON tool call" in m["content"] for m in messages if m["role"] == "system"):
        return "Here are a few picks."
    said = messages[-1]["content"]
    older = re.search(r"\(older: (year<\d+)", said)
    if "older" in said.split("User:")[-1].lower() and older:
        return {"tool": "refine_last", "args": {"filters": [older.group(1)], "reject": []}}
    query = said.split("User:")[-1].strip()
    return {"tool": "search_catalog", "args": {"query": query, "filters": ["genre=Horror"] if "shark" in query else []}}


def fake_llm():
    return ScriptedLLM([planner] * 40)


@pytest.fixture
def shark_script(tmp_path):
    path = tmp_path / "shark.yaml"
    path.write_text(SHARK_SCRIPT)
    return path


def test_packaged_scripts_are_valid_and_cover_every_family(settings):
    scripts = load_scripts()
    assert len(scripts) >= 30
    assert {s.family for s in scripts} == set(FAMILIES)
    assert {s.catalog for s in scripts} == {"movies", "fashion"}
    turns = [t for s in scripts for t in s.turns]
    assert any(t.speak for t in turns) and any(t.image for t in turns)
    assert all(t.expect for s in scripts for t in s.turns[-1:]), "every script checks something on its last turn"
    assert validate_scripts(scripts, settings) == []


def test_broken_scripts_get_clear_messages(tmp_path, settings):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nfamily: basic\ncatalog: movies\nturns:\n  - say: hi\n    expect: {hits: 3}\n")
    with pytest.raises(ScriptError, match=r"bad.yaml \(x\) turn 1: unknown expectation\(s\) hits"):
        load_scripts(bad)
    bad.write_text("name: x\nfamily: cooking\ncatalog: movies\nturns: [hi]\n")
    with pytest.raises(ScriptError, match="family 'cooking'"):
        load_scripts(bad)
    bad.write_text(
        "name: x\nfamily: image\ncatalog: fashion\nturns:\n  - image: fashion/images/nope.jpg\n"
        '    expect: {hit: {items: ["No Such Shirt"]}, require: {baseColour: [Plaid]}}\n'
    )
    problems = validate_scripts(load_scripts(bad), settings)
    assert any("image file fashion/images/nope.jpg not found" in p for p in problems)
    assert any("'No Such Shirt' is not in the fashion catalog" in p for p in problems)
    assert any("no fashion item has baseColour=Plaid" in p for p in problems)


def test_expectations_that_must_fail_do_fail(shark_script, settings, movies_index):
    figures = run_dialogues(load_scripts(shark_script), settings, fake_llm(), progress=False)
    [script] = figures["scripts"]
    first, second = script["turns"]
    outcome = {(t["turn"], c["kind"]): c["passed"] for t in script["turns"] for c in t["checks"]}
    assert outcome[(1, "hit")] and outcome[(1, "require")] and outcome[(1, "transcript_has")]
    assert not outcome[(1, "forbid")] and outcome[(2, "older")] and not outcome[(2, "hit")]
    assert all(outcome[(n, kind)] for n in (1, 2) for kind in ("no_error", "in_catalog", "no_repeat"))
    assert "Jaws (1975)" in [i["title"] for i in first["items"]]
    years = [[int(re.sub(r".*\((\d{4})\)$", r"\1", i["title"])) for i in t["items"]] for t in (first, second)]
    assert years[1] and max(years[1]) < min(years[0])
    assert not script["passed"] and script["turns_to_success"] == 1
    assert figures["by_expectation"]["hit"] == {"passed": 1, "n": 2, "rate": 0.5}
    assert figures["failures_by_kind"] == {"forbid": 1, "hit": 1}
    assert figures["off_catalog_items"] == 0 and figures["latency"]["total"]["n"] == 2


def test_report_is_written_with_plots(shark_script, settings, movies_index, tmp_path):
    figures = run_dialogues(load_scripts(shark_script), settings, fake_llm(), progress=False)
    written = dialogue_report(figures, tmp_path / "report")
    markdown, page = written["markdown"].read_text(), written["html"].read_text()
    for png in ("pass_by_family.png", "pass_by_expectation.png", "latency.png", "failures_by_turn.png"):
        assert (tmp_path / "report" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in markdown and f"src='{png}'" in page
    assert "| shark-and-older | refinement | movies | FAIL | 10/12 |" in markdown
    assert "turn 1 forbid" in markdown and "class='fail'" in page


def test_recorded_run_replays_identically_without_a_model(shark_script, settings, movies_index, tmp_path, env):
    settings = settings.with_(code_plans=False)  # every turn asks the (scripted) planner: its calls are recorded
    env = {**env, "RECAGENT_CODE_PLANS": "0"}
    recording = tmp_path / "calls.jsonl"
    scripts = load_scripts(shark_script)
    first = run_dialogues(scripts, settings, fake_llm(), record=recording, progress=False)
    records = [json.loads(line) for line in recording.read_text().splitlines()]
    assert [r["kind"] for r in records].count("llm") == 5  # warm-up, then planner and writer per turn
    planned = next(r for r in records if r["kind"] == "llm" and r["schema"])
    assert {"messages", "schema", "max_tokens", "text", "prompt_tokens", "completion_tokens"} <= set(planned)
    assert any(r["kind"] == "transcript" for r in records)

    again = run_dialogues(scripts, settings, ReplayLLM(str(recording)), replay=str(recording), progress=False)
    assert again["replay"]["identical"] and again["replay"]["turns_compared"] == 2
    assert [t["items"] for t in again["scripts"][0]["turns"]] == [t["items"] for t in first["scripts"][0]["turns"]]
    assert [t["checks"] for t in again["scripts"][0]["turns"]] == [t["checks"] for t in first["scripts"][0]["turns"]]

    # The command line replays it too (no model loaded), and a changed dialogue is caught, not answered.
    out = tmp_path / "replayed.json"
    done = run_cli(
        env,
        "eval",
        "dialogues",
        str(shark_script),
        "--replay",
        str(recording),
        "--json",
        str(out),
        "--quiet",
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())["replay"]["identical"] and "replay of" in done.stdout
    shark_script.write_text(SHARK_SCRIPT.replace("say: something older", "say: something newer"))
    with pytest.raises(ReplayError, match=r"replay diverged: LLM call 4 differs .*message 2"):
        run_dialogues(
            load_scripts(shark_script), settings, ReplayLLM(str(recording)), replay=str(recording), progress=False
        )
    replay = ReplayLLM(str(recording))
    replay.position = len(replay.records)
    with pytest.raises(ReplayError, match="more LLM calls"):
        replay.complete([{"role": "user", "content": "hi"}])


def test_simulated_users_describe_targets_without_naming_them(settings):
    targets = movie_targets(settings, 150, seed=1) + fashion_targets(settings, 150, seed=1)
    assert len(targets) == 300 and len({t.id for t in targets}) == 300
    for target in targets:
        turns = user_turns(target)
        assert len(turns) == 5 and not any(leaks(t, target) for t in turns), (target.title, turns)
        assert all(len(b) > len(a) for a, b in zip(turns[1:], turns[2:])), turns  # one more clue each turn
    jaws = next(t for t in load_catalog("movies", settings).items if t.title == "Jaws (1975)")
    assert leaks("something like Jaws, please", jaws) and not leaks("a jawsome shark film", jaws)
    assert str(jaws.metadata["year"]) in " ".join(user_turns(jaws))


def test_simulation_stops_at_success_and_reports_per_mode(settings, movies_index, tmp_path):
    def echo(messages):  # the planner searches for the user's words; the writer says one sentence
        if "JSON tool call" not in messages[0]["content"]:
            return "Here are a few picks."
        return {"tool": "search_catalog", "args": {"query": messages[-1]["content"].split("User:")[-1].strip()}}

    llm = ScriptedLLM([echo] * 40)
    figures = run_simulation(settings, llm, "movies", 3, ["text"], k=10, max_turns=3, progress=False)
    mode = figures["modes"]["text"]
    assert figures["leaks"] == 0 and mode["n"] == 3 and len(figures["dialogues"]) == 3
    for dialogue in figures["dialogues"]:
        found = dialogue["success_turn"]
        assert len(dialogue["turns"]) == (found or 3)  # stops when the target is listed
        assert all(len(t["items"]) == 10 for t in dialogue["turns"])  # the agent lists k items a turn, not 5
        assert (dialogue["target"] in dialogue["turns"][-1]["items"]) == bool(found)
    assert mode["success_by_turn"] == sorted(mode["success_by_turn"])
    assert mode["success_by_turn"][-1] == round(mode["successes"] / 3, 3)
    written = simulate_report(figures, tmp_path)
    assert "success@10" in written["markdown"].read_text()
    with pytest.raises(ConfigError, match="unknown mode.*smell"):
        run_simulation(settings, llm, "movies", 3, ["text", "smell"], progress=False)


def test_fixture_overrides_one_field_for_its_script_only(settings, movies_index):
    [script] = [s for s in load_scripts() if s.fixture]
    agent = Agent(ScriptedLLM([]), "movies", settings, shown=7, max_steps=2)
    jaws = agent.catalog.find_title("Jaws (1975)")
    assert jaws is not None
    scoped = fixture_agent(agent, script)
    assert scoped.catalog.meta[jaws]["tags"] == script.fixture["override"]["value"]
    assert "IMPORTANT SYSTEM NOTE" not in str(agent.catalog.meta[jaws]["tags"])  # the shared view is untouched
    assert scoped.catalog.index is agent.catalog.index and (scoped.shown, scoped.max_steps) == (7, 2)


@pytest.mark.slow
def test_real_llm_runs_a_few_scripts_and_replays_them(settings, movies_index, tmp_path):
    """The real local model on three packaged scripts (typed, spoken, adversarial), with the report built."""
    names = ("basic-shark", "voice-refine-older", "adversarial-invented-title")
    scripts = [s for s in load_scripts() if s.name in names]
    recording = tmp_path / "calls.jsonl"
    figures = run_dialogues(scripts, settings, make_llm("local", settings), record=recording, progress=False)
    turns = [t for s in figures["scripts"] for t in s["turns"]]
    assert len(turns) == 4 and figures["turn_errors"] == 0 and figures["off_catalog_items"] == 0
    assert all(c["passed"] for t in turns for c in t["checks"] if c["kind"] in ("in_catalog", "no_repeat"))
    by_name = {s["name"]: s for s in figures["scripts"]}
    assert "Jaws (1975)" in [i["title"] for i in by_name["basic-shark"]["turns"][0]["items"][:5]]
    assert "glorbnax" not in by_name["adversarial-invented-title"]["turns"][0]["reply"].lower()
    written = dialogue_report(figures, tmp_path / "report")
    assert "basic-shark" in written["html"].read_text()
    again = run_dialogues(scripts, settings, ReplayLLM(str(recording)), replay=str(recording), progress=False)
    assert again["replay"]["identical"] and again["replay"]["turns_compared"] == 4
