"""`recagent eval dialogues`: scripted evaluation dialogues run against the agent, each expectation checked.

A script (evals/dialogues/*.yaml, see dialogue_scripts.py) is a short dialogue over one catalog. Every turn is also
checked for errors, items outside the catalog and items shown twice in the dialogue (dialogue_checks.py). Each
script runs in a fresh Conversation. Every run records its LLM calls (and transcripts) to a JSON-lines file;
`--replay FILE` runs again from it without loading a model (recording.py). The figures: dialogue_summary.py.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from recagent.agent.llm import LLM, read_recording
from recagent.agent.loop import Agent, Reply
from recagent.tools.errors import AudioError, ScriptError
from recagent.tools.settings import Settings

from .dialogue_checks import DialogueState, check_turn
from .dialogue_scripts import FAMILIES, Script, Turn, catalog_facts, load_scripts, resolve_path, validate_scripts
from .dialogue_summary import format_summary, summarise
from .recording import Transcripts, default_recording, recorded_run, recording_path, start_recording

__all__ = [  # what the command line and the tests take from here (the parts live in the modules named above)
    "FAMILIES",
    "Script",
    "ScriptError",
    "Turn",
    "compare_with_recording",
    "default_recording",
    "fixture_agent",
    "format_summary",
    "load_scripts",
    "outcome",
    "recording_path",
    "run_dialogues",
    "run_script",
    "summarise",
    "validate_scripts",
]

OnTurn = Callable[[Script, dict], None]


def fixture_agent(agent: Agent, script: Script) -> Agent:
    """An agent like `agent` whose catalog view has one item's field overridden, for this script only (the index
    is untouched)."""
    override = script.fixture["override"]
    item_id = catalog_facts(script.catalog, agent.settings).resolve(override["item"])
    if item_id is None:
        raise ScriptError(f"{script.name}: fixture item '{override['item']}' is not in the {script.catalog} catalog")
    view = agent.catalog.with_metadata(item_id, {override["field"]: override["value"]})
    return Agent(agent.llm, view, agent.settings, ranker=agent.ranker(), shown=agent.shown, max_steps=agent.max_steps)


def run_script(
    script: Script, agent: Agent, transcripts: Transcripts, settings: Settings, on_turn: OnTurn | None = None
) -> dict:
    """Run one script in a fresh conversation; every turn's reply, items, timings and checks."""
    facts = catalog_facts(script.catalog, settings)
    if script.fixture:
        agent = fixture_agent(agent, script)
    conversation = agent.new_conversation()
    state = DialogueState()
    turns = []
    for n, turn in enumerate(script.turns, 1):
        transcript, heard_seconds, text = None, None, turn.say
        try:
            if turn.speak or turn.audio:
                wav = transcripts.render(turn.speak) if turn.speak else resolve_path(turn.audio or "", script, settings)
                key = f"speak:{turn.speak}" if turn.speak else f"audio:{turn.audio}"
                transcript, heard_seconds = transcripts.transcribe(key, wav, script.catalog)
                text = f"{turn.say} {transcript}".strip()
            image = str(resolve_path(turn.image, script, settings)) if turn.image else None
            reply = agent.turn(conversation, text, image=image)
        except AudioError as exc:
            reply = Reply(text=f"Sorry, that turn failed: {exc}", error=str(exc))
        reply.transcript = transcript
        if heard_seconds is not None:  # heard before the agent's turn: its total counts the listening too
            reply.timings["transcription"] = heard_seconds
            reply.timings["total"] = round(reply.timings.get("total", 0.0) + heard_seconds, 3)
        checks = check_turn(turn, reply, state, facts)
        state.update(reply)
        record = _turn_record(n, turn, text, reply, checks)
        turns.append(record)
        if on_turn:
            on_turn(script, record)
    hits = [t["turn"] for t in turns if any(c["kind"] == "hit" and c["passed"] for c in t["checks"])]
    has_hit = any("hit" in t.expect for t in script.turns)
    checks = [c for t in turns for c in t["checks"]]
    return {
        "name": script.name,
        "family": script.family,
        "catalog": script.catalog,
        "description": script.description,
        "turns": turns,
        "passed": all(c["passed"] for c in checks),
        "checks_passed": sum(c["passed"] for c in checks),
        "checks": len(checks),
        "turns_to_success": (hits[0] if hits else None) if has_hit else None,
        "has_hit": has_hit,
    }


def _turn_record(n: int, turn: Turn, text: str, reply: Reply, checks: list[dict]) -> dict:
    """One turn as the figures keep it."""
    return {
        "turn": n,
        "input": turn.inputs(),
        "text": text,
        "transcript": reply.transcript,
        "reply": reply.text,
        "items": [{"id": i["id"], "title": i["title"]} for i in reply.items],
        "clarifying": reply.clarifying,
        "error": reply.error,
        "removed_mentions": reply.removed_mentions,
        "tool_calls": [
            {"name": c.name, "arguments": c.arguments, "error": c.error, "planner": c.planner} for c in reply.tool_calls
        ],
        "timings": reply.timings,
        "tokens": reply.tokens,
        "checks": checks,
        "passed": all(c["passed"] for c in checks),
    }


def run_dialogues(
    scripts: list[Script],
    settings: Settings,
    llm: LLM,
    *,
    record: str | Path | None = None,
    replay: str | None = None,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Run every script against one agent per catalog (sharing the LLM); the results and their summary.

    record: where to write the LLM calls, transcripts and outcomes (JSON lines); resume: keep the scripts an
    interrupted run of the same recording finished; replay: a recording whose answers `llm` (a ReplayLLM)
    serves, and whose outcomes the new ones are compared with."""
    say = log or (lambda message: print(message, file=sys.stderr, flush=True))
    problems = validate_scripts(scripts, settings)
    if problems:
        raise ScriptError("the scripts refer to things that do not exist:\n  " + "\n  ".join(problems))
    recorder, finished = start_recording(llm, record, resume, "script", {"scripts": [s.name for s in scripts]})
    done = {r["name"]: r for r in finished}
    if done:
        say(f"resuming {record}: {len(done)} scripts already done")
    model = recorder or llm
    started = time.perf_counter()
    agents: dict[str, Agent] = {}
    results = []
    with recorded_run(recorder), tempfile.TemporaryDirectory(prefix="recagent-speech-") as tmp:
        if not done:
            model.complete([{"role": "user", "content": "Say OK."}], max_tokens=1)  # load the model before timing
        transcripts = Transcripts(settings, Path(tmp), recorder, replay)
        bar = tqdm(
            total=sum(len(s.turns) for s in scripts),
            desc="dialogue turns",
            unit="turn",
            disable=not progress,
            file=sys.stderr,
        )

        def on_turn(script: Script, turn: dict) -> None:
            bar.update(1)
            bar.set_postfix_str(f"{script.name} {'ok' if turn['passed'] else 'FAIL'}")
            if recorder:
                recorder.write({"kind": "outcome", "script": script.name, "turn": turn["turn"], **outcome(turn)})

        for script in scripts:
            if script.name in done:
                results.append(done[script.name])
                bar.update(len(script.turns))
                continue
            if script.catalog not in agents:
                agents[script.catalog] = Agent(model, script.catalog, settings)
            results.append(run_script(script, agents[script.catalog], transcripts, settings, on_turn))
            if recorder:
                recorder.write({"kind": "script", "result": results[-1]})
        bar.close()
    figures = summarise(results)
    figures.update(
        {
            "model": llm.name,
            "seconds": round(time.perf_counter() - started, 1),
            "scripts": results,
            "recording": str(record) if record else None,
            "resumed_scripts": len(done),
        }
    )
    if replay:
        figures["replay"] = compare_with_recording(results, read_recording(replay), replay)
        unused = getattr(llm, "unused", None)
        if unused and unused():
            figures["replay"]["unused_calls"] = unused()
    return figures


def outcome(turn: dict) -> dict:
    """What must be identical on replay: the items shown and each check's result."""
    return {"items": [i["id"] for i in turn["items"]], "checks": [[c["kind"], c["passed"]] for c in turn["checks"]]}


def compare_with_recording(results: list[dict], records: list[dict], path: str) -> dict:
    """The replayed outcomes against the recorded ones: identical or the differences."""
    recorded = {
        (r["script"], r["turn"]): {"items": r["items"], "checks": r["checks"]}
        for r in records
        if r.get("kind") == "outcome"
    }
    differences = []
    for script in results:
        for turn in script["turns"]:
            old = recorded.get((script["name"], turn["turn"]))
            if old is not None and old != outcome(turn):
                differences.append(f"{script['name']} turn {turn['turn']}: recorded {old}, replayed {outcome(turn)}")
    compared = sum(1 for s in results for t in s["turns"] if (s["name"], t["turn"]) in recorded)
    return {
        "file": str(path),
        "turns_compared": compared,
        "identical": not differences and compared > 0,
        "differences": differences,
    }
