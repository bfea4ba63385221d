"""`recagent eval dialogues`: scripted evaluation dialogues run against the agent, each expectation checked.

A script (evals/dialogues/*.yaml) is a short dialogue over one catalog. Each turn is typed text, a recording
(`audio:`), text spoken by espeak-ng and heard by Whisper (`speak:`), or a photo (`image:`) with optional words,
and says what the reply must do (`expect:`). Every turn is also checked for errors, items outside the catalog
and items shown twice in the dialogue. Each script runs in a fresh Conversation. Every run records its LLM calls
(and transcripts) to a JSON-lines file; `--replay FILE` runs again from it without loading a model.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from recagent.tools.settings import Settings

SCRIPTS_DIR = Path(__file__).resolve().parent / "dialogues"
FAMILIES = ("basic", "refinement", "negation", "vague", "voice", "image", "adversarial")
CATALOGS = ("movies", "fashion")
INPUT_KEYS = ("say", "audio", "speak", "image")
EXPECT_KEYS = ("hit", "require", "forbid", "year", "older", "newer", "clarify", "tool", "reply_excludes",
               "transcript_has", "exclude_items", "min_items")
AUTO_CHECKS = ("no_error", "in_catalog", "no_repeat")  # every turn
STAGES = ("total", "items_on_screen", "llm_prompt", "llm_generation", "retrieval", "ranking", "transcription",
          "image")


class ScriptError(Exception):
    """A dialogue script is malformed or refers to something that does not exist; the message says where."""


@dataclass
class Turn:
    say: str = ""
    audio: str | None = None
    speak: str | None = None
    image: str | None = None
    expect: dict = field(default_factory=dict)


@dataclass
class Script:
    name: str
    family: str
    catalog: str
    turns: list[Turn]
    description: str = ""
    fixture: dict = field(default_factory=dict)
    path: str = ""


# ---- loading and validating ------------------------------------------------------------------------------

def script_files(path: str | Path | None = None) -> list[Path]:
    """The YAML files of a folder (sorted), or the one file given; the packaged scripts by default."""
    path = Path(path) if path else SCRIPTS_DIR
    if path.is_dir():
        files = sorted(list(path.glob("*.yaml")) + list(path.glob("*.yml")))
        if not files:
            raise ScriptError(f"{path}: no dialogue scripts (*.yaml) in this folder")
        return files
    if not path.is_file():
        raise ScriptError(f"{path}: no such file or folder")
    return [path]


def load_scripts(path: str | Path | None = None, families: list[str] | None = None,
                 limit: int | None = None) -> list[Script]:
    """Every script under path (a file may hold one script or a list), checked for form; optionally filtered."""
    scripts: list[Script] = []
    for file in script_files(path):
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ScriptError(f"{file}: not valid YAML ({exc})") from None
        for n, entry in enumerate(data if isinstance(data, list) else [data], 1):
            scripts.append(parse_script(entry, f"{file.name}" + (f" #{n}" if isinstance(data, list) else ""),
                                        str(file)))
    names = [s.name for s in scripts]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ScriptError(f"script names used twice: {', '.join(duplicates)}")
    if families:
        unknown = [f for f in families if f not in {s.family for s in scripts}]
        if unknown:
            raise ScriptError(f"no script of family {', '.join(unknown)} (families: "
                              f"{', '.join(sorted({s.family for s in scripts}))})")
        scripts = [s for s in scripts if s.family in families]
    return scripts[:limit] if limit else scripts


def parse_script(data, where: str, path: str = "") -> Script:
    """One script from its YAML mapping, or a ScriptError naming the file and the turn."""
    if not isinstance(data, dict):
        raise ScriptError(f"{where}: a script is a mapping with name, family, catalog and turns")
    missing = [k for k in ("name", "family", "catalog", "turns") if k not in data]
    if missing:
        raise ScriptError(f"{where}: missing {', '.join(missing)}")
    unknown = set(data) - {"name", "family", "catalog", "turns", "description", "fixture"}
    if unknown:
        raise ScriptError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    where = f"{where} ({data['name']})"
    if data["family"] not in FAMILIES:
        raise ScriptError(f"{where}: family '{data['family']}' is not one of {', '.join(FAMILIES)}")
    if data["catalog"] not in CATALOGS:
        raise ScriptError(f"{where}: catalog '{data['catalog']}' is not one of {', '.join(CATALOGS)}")
    if not isinstance(data["turns"], list) or not data["turns"]:
        raise ScriptError(f"{where}: turns must be a non-empty list")
    turns = [parse_turn(t, f"{where} turn {n}") for n, t in enumerate(data["turns"], 1)]
    fixture = data.get("fixture") or {}
    if fixture and not (isinstance(fixture.get("override"), dict) and {"item", "field", "value"} <= set(fixture["override"])):
        raise ScriptError(f"{where}: fixture must be {{override: {{item, field, value}}}}")
    return Script(str(data["name"]), data["family"], data["catalog"], turns, str(data.get("description", "")),
                  fixture, path)


def parse_turn(data, where: str) -> Turn:
    """One turn: a string (typed text) or a mapping with say/audio/speak/image and expect."""
    if isinstance(data, str):
        return Turn(say=data)
    if not isinstance(data, dict):
        raise ScriptError(f"{where}: a turn is text or a mapping with say, audio, speak, image, expect")
    unknown = set(data) - set(INPUT_KEYS) - {"expect"}
    if unknown:
        raise ScriptError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    if not any(data.get(k) for k in INPUT_KEYS):
        raise ScriptError(f"{where}: nothing to say: give say, audio, speak or image")
    if data.get("audio") and data.get("speak"):
        raise ScriptError(f"{where}: give audio or speak, not both")
    expect = data.get("expect") or {}
    if not isinstance(expect, dict):
        raise ScriptError(f"{where}: expect is a mapping")
    bad = set(expect) - set(EXPECT_KEYS)
    if bad:
        raise ScriptError(f"{where}: unknown expectation(s) {', '.join(sorted(bad))} (known: {', '.join(EXPECT_KEYS)})")
    hit = expect.get("hit")
    if hit is not None and not (isinstance(hit, dict) and isinstance(hit.get("items"), list) and hit["items"]):
        raise ScriptError(f"{where}: hit is {{items: [titles or ids], k: N}}")
    for key in ("require", "forbid"):
        if key in expect and not isinstance(expect[key], dict):
            raise ScriptError(f"{where}: {key} maps fields to values, e.g. {{genres: [Horror]}}")
    return Turn(str(data.get("say") or ""), data.get("audio"), data.get("speak"), data.get("image"), expect)


class CatalogFacts:
    """Ids, titles and field values of one catalog, read from its data files (no index needed)."""

    def __init__(self, name: str, settings: Settings):
        from recagent.tools.catalog import load_catalog

        self.items = {it.id: it for it in load_catalog(name, settings).items}
        self.by_title: dict[str, str] = {}
        for it in sorted(self.items.values(), key=lambda it: -int(it.metadata.get("ratings", 0) or 0)):
            self.by_title.setdefault(it.title.lower(), it.id)
        self.fields = {k for it in self.items.values() for k in it.metadata}

    def resolve(self, ref) -> str | None:
        """The id of an item given by id or by its exact title ("Jaws (1975)"), or None."""
        ref = str(ref)
        return ref if ref in self.items else self.by_title.get(ref.lower())


_facts: dict[tuple[str, str], CatalogFacts] = {}


def catalog_facts(name: str, settings: Settings) -> CatalogFacts:
    key = (name, str(settings.data))
    if key not in _facts:
        _facts[key] = CatalogFacts(name, settings)
    return _facts[key]


def resolve_path(ref: str, script: Script, settings: Settings) -> Path:
    """A file a script names: absolute, relative to the data folder, or relative to the script's own folder."""
    path = Path(ref).expanduser()
    if path.is_absolute():
        return path
    candidates = [settings.data / path] if settings.data else []
    if script.path:
        candidates.append(Path(script.path).parent / path)
    return next((c for c in candidates if c.is_file()), candidates[0] if candidates else path)


def validate_scripts(scripts: list[Script], settings: Settings) -> list[str]:
    """Problems that would make a script meaningless: unknown items or fields, missing files; empty when fine."""
    problems = []
    for script in scripts:
        facts = catalog_facts(script.catalog, settings)
        refs = []
        override = script.fixture.get("override")
        if override:
            refs.append(override["item"])
        for n, turn in enumerate(script.turns, 1):
            where = f"{script.name} turn {n}"
            for key in ("audio", "image"):
                ref = getattr(turn, key)
                if ref and not resolve_path(ref, script, settings).is_file():
                    problems.append(f"{where}: {key} file {ref} not found")
            exp = turn.expect
            refs += [(where, r) for r in (exp.get("hit") or {}).get("items", []) + list(exp.get("exclude_items") or [])]
            for key in ("require", "forbid"):
                for name in exp.get(key, {}):
                    if name != "share" and name not in facts.fields:
                        problems.append(f"{where}: {key} names field '{name}', which {script.catalog} items lack")
                    values = exp[key].get(name)
                    for value in (values if isinstance(values, list) else [values]):
                        if name != "share" and not any(_has_value(it.metadata.get(name), value)
                                                       for it in facts.items.values()):
                            problems.append(f"{where}: no {script.catalog} item has {name}={value}")
        for ref in refs:
            where, item = ref if isinstance(ref, tuple) else (script.name, ref)
            if facts.resolve(item) is None:
                problems.append(f"{where}: '{item}' is not in the {script.catalog} catalog")
    return problems


def _has_value(actual, wanted) -> bool:
    """Whether an item's field holds a value: list fields contain it, other fields equal it (case-insensitive)."""
    if actual is None:
        return False
    if isinstance(actual, list):
        return str(wanted).lower() in {str(a).lower() for a in actual}
    return str(actual).lower() == str(wanted).lower()


# ---- checking one turn -------------------------------------------------------------------------------------

def check_turn(turn: Turn, reply, state: dict, facts: CatalogFacts) -> list[dict]:
    """Each expectation of the turn, and the automatic ones, as {"kind", "passed", "detail"}."""
    items = reply.items
    ids = [i["id"] for i in items]
    metas = [i for i in items]
    checks = [_check("no_error", reply.error is None, reply.error or "")]
    outside = [i["title"] for i in items if facts.items.get(i["id"]) is None or facts.items[i["id"]].title != i["title"]]
    checks.append(_check("in_catalog", not outside, f"not in the catalog: {outside}" if outside else ""))
    repeated = [i["title"] for i in items if i["id"] in state["shown"]]
    checks.append(_check("no_repeat", not repeated, f"shown before: {repeated}" if repeated else ""))
    exp = turn.expect
    if "hit" in exp:
        k = int(exp["hit"].get("k", 5))
        wanted = [facts.resolve(r) for r in exp["hit"]["items"]]
        found = [facts.items[w].title for w in wanted if w in ids[:k]]
        checks.append(_check("hit", bool(found), f"in top {k}: {found}" if found else
                             f"none of {exp['hit']['items']} in top {k}", k=k))
    for key in ("require", "forbid"):
        spec = dict(exp.get(key) or {})
        share = float(spec.pop("share", 1.0 if key == "require" else 0.0))
        for name, values in spec.items():
            values = values if isinstance(values, list) else [values]
            matching = [m for m in metas if any(_has_value(m.get(name), v) for v in values)]
            if key == "require":
                ok = bool(metas) and len(matching) >= share * len(metas) - 1e-9
                detail = f"{len(matching)}/{len(metas)} items have {name} in {values} (need {share:.0%})"
            else:
                ok = len(matching) <= share * len(metas)
                detail = f"{len(matching)}/{len(metas)} items have {name} in {values}"
            checks.append(_check(key, ok, detail, field=name))
    years = [m.get("year") for m in metas if isinstance(m.get("year"), int)]
    if "year" in exp:
        low, high = exp["year"].get("min", -10**9), exp["year"].get("max", 10**9)
        ok = bool(years) and len(years) == len(metas) and all(low <= y <= high for y in years)
        checks.append(_check("year", ok, f"years {sorted(years)} vs {low}..{high}"))
    for key, older in (("older", True), ("newer", False)):
        if exp.get(key):
            before = state["previous_years"]
            if older:
                ok = bool(years) and bool(before) and max(years) < min(before)
            else:
                ok = bool(years) and bool(before) and min(years) > max(before)
            checks.append(_check(key, ok, f"years {sorted(years)} after {sorted(before)}"))
    if "clarify" in exp:
        checks.append(_check("clarify", reply.clarifying == bool(exp["clarify"]),
                             "asked a question" if reply.clarifying else f"showed {len(items)} items"))
    if "tool" in exp:
        called = [c.name for c in reply.tool_calls]
        checks.append(_check("tool", exp["tool"] in called, f"tools called: {called}"))
    if "reply_excludes" in exp:
        found = [s for s in exp["reply_excludes"] if s.lower() in reply.text.lower()]
        checks.append(_check("reply_excludes", not found, f"reply contains {found}" if found else ""))
    if "transcript_has" in exp:
        heard = (reply.transcript or "").lower()
        missing = [w for w in exp["transcript_has"] if w.lower() not in heard]
        checks.append(_check("transcript_has", not missing, f"heard {heard!r}"))
    if "exclude_items" in exp:
        banned = {facts.resolve(r) for r in exp["exclude_items"]}
        shown = [facts.items[i].title for i in ids if i in banned]
        checks.append(_check("exclude_items", not shown, f"shown: {shown}" if shown else ""))
    if "min_items" in exp:
        checks.append(_check("min_items", len(items) >= int(exp["min_items"]), f"{len(items)} items"))
    return checks


def _check(kind: str, passed: bool, detail: str = "", **extra) -> dict:
    return {"kind": kind, "passed": bool(passed), "detail": detail, **extra}


# ---- running -----------------------------------------------------------------------------------------------

class Transcripts:
    """Speech for `speak:` and `audio:` turns: espeak-ng renders, Whisper transcribes; on replay the recorded
    transcript is used, because faster-whisper's int8 output can vary slightly from process to process."""

    def __init__(self, settings: Settings, folder: Path, recorder=None, replay: str | None = None):
        from recagent.agent.llm import read_recording

        self.settings = settings
        self.folder = folder
        self.recorder = recorder
        self.recorded = {r["key"]: r for r in read_recording(replay) if r.get("kind") == "transcript"} if replay else None

    def render(self, text: str) -> Path:
        """text spoken by espeak-ng (140 words a minute) as a 16 kHz wav."""
        wav = self.folder / (hashlib.sha256(text.encode()).hexdigest()[:12] + ".wav")
        if not wav.exists():
            subprocess.run(["espeak-ng", "-s", "140", "-w", str(wav), text], check=True, capture_output=True)
        return wav

    def transcribe(self, key: str, wav: Path) -> tuple[str, float]:
        """The transcript of a recording and the seconds it took (0 on replay)."""
        from recagent.agent.llm import ReplayError
        from recagent.tools.speech import transcribe_audio

        if self.recorded is not None:
            if key not in self.recorded:
                raise ReplayError(f"the recording holds no transcript for {key!r}")
            return self.recorded[key]["text"], self.recorded[key].get("seconds", 0.0)
        started = time.perf_counter()
        text = transcribe_audio(str(wav), self.settings)
        seconds = round(time.perf_counter() - started, 3)
        if self.recorder:
            self.recorder.write({"kind": "transcript", "key": key, "text": text, "seconds": seconds})
        return text, seconds


def fixture_catalog(agent, script: Script):
    """The agent's catalog view with one item's field overridden, for this script only (the index is untouched)."""
    override = script.fixture["override"]
    facts_id = catalog_facts(script.catalog, agent.settings).resolve(override["item"])
    view = copy.copy(agent.catalog)
    view.meta = dict(view.meta)
    view.meta[facts_id] = {**view.meta[facts_id], override["field"]: override["value"]}
    return view


def run_script(script: Script, agent, transcripts: Transcripts, settings: Settings, on_turn=None) -> dict:
    """Run one script in a fresh conversation; every turn's reply, items, timings and checks."""
    from recagent.agent.loop import Agent, Reply
    from recagent.tools.speech import AudioError

    facts = catalog_facts(script.catalog, settings)
    if script.fixture:
        scoped = Agent(agent.llm, agent.catalog_name, agent.settings, agent.max_steps)
        scoped._catalog = fixture_catalog(agent, script)
        agent = scoped
    conversation = agent.new_conversation()
    state = {"shown": set(), "previous_years": []}
    turns = []
    for n, turn in enumerate(script.turns, 1):
        transcript, heard_seconds, text = None, None, turn.say
        try:
            if turn.speak or turn.audio:
                wav = transcripts.render(turn.speak) if turn.speak else resolve_path(turn.audio, script, settings)
                key = f"speak:{turn.speak}" if turn.speak else f"audio:{turn.audio}"
                transcript, heard_seconds = transcripts.transcribe(key, wav)
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
        state["shown"] |= {i["id"] for i in reply.items}
        if reply.items:
            state["previous_years"] = [i["year"] for i in reply.items if isinstance(i.get("year"), int)]
        record = {"turn": n, "input": _input(turn), "text": text, "transcript": transcript, "reply": reply.text,
                  "items": [{"id": i["id"], "title": i["title"]} for i in reply.items],
                  "clarifying": reply.clarifying, "error": reply.error, "removed_mentions": reply.removed_mentions,
                  "tool_calls": [{"name": c.name, "arguments": c.arguments, "error": c.error} for c in reply.tool_calls],
                  "timings": reply.timings, "checks": checks, "passed": all(c["passed"] for c in checks)}
        turns.append(record)
        if on_turn:
            on_turn(script, record)
    hits = [t["turn"] for t in turns if any(c["kind"] == "hit" and c["passed"] for c in t["checks"])]
    has_hit = any("hit" in t.expect for t in script.turns)
    checks = [c for t in turns for c in t["checks"]]
    return {"name": script.name, "family": script.family, "catalog": script.catalog,
            "description": script.description, "turns": turns, "passed": all(c["passed"] for c in checks),
            "checks_passed": sum(c["passed"] for c in checks), "checks": len(checks),
            "turns_to_success": (hits[0] if hits else None) if has_hit else None, "has_hit": has_hit}


def _input(turn: Turn) -> dict:
    return {k: v for k, v in (("say", turn.say), ("audio", turn.audio), ("speak", turn.speak), ("image", turn.image)) if v}


def resume_recording(record: str | Path, unit: str) -> list[dict]:
    """Cut a recording back to its last finished unit (a "script" or "user" record) and return what it keeps; a
    run killed halfway (out of memory, Ctrl-C) then continues where it stopped and still replays in one piece."""
    from recagent.agent.llm import read_recording

    path = Path(record)
    if not path.is_file():
        return []
    records = read_recording(str(path))
    last = max((i for i, r in enumerate(records) if r.get("kind") == unit), default=-1)
    kept = records[: last + 1]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept), encoding="utf-8")
    return kept


def start_recording(llm, record: str | Path | None, resume: bool, unit: str, header: dict):
    """The recording wrapper of a run (or None), and the finished units it already holds when resuming."""
    from recagent.agent.llm import RecordingLLM

    if not record:
        return None, []
    kept = resume_recording(record, unit) if resume else []
    recorder = RecordingLLM(llm, str(record), mode="a" if kept else "w")
    recorder.calls = sum(1 for r in kept if r.get("kind") == "llm")
    recorder.write({"kind": "resume" if kept else "run", "model": llm.name, **header, "time": time.time()})
    return recorder, [r["result"] for r in kept if r.get("kind") == unit]


def run_dialogues(scripts: list[Script], settings: Settings, llm, *, record: str | Path | None = None,
                  replay: str | None = None, resume: bool = False, progress: bool = True, log=None) -> dict:
    """Run every script against one agent per catalog (sharing the LLM); the results and their summary.

    record: where to write the LLM calls, transcripts and outcomes (JSON lines); resume: keep the scripts an
    interrupted run of the same recording finished; replay: a recording whose answers `llm` (a ReplayLLM)
    serves, and whose outcomes the new ones are compared with."""
    from tqdm import tqdm

    from recagent.agent.llm import ReplayError, read_recording
    from recagent.agent.loop import Agent

    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    problems = validate_scripts(scripts, settings)
    if problems:
        raise ScriptError("the scripts refer to things that do not exist:\n  " + "\n  ".join(problems))
    recorder, finished = start_recording(llm, record, resume, "script", {"scripts": [s.name for s in scripts]})
    done = {r["name"]: r for r in finished}
    if done:
        log(f"resuming {record}: {len(done)} scripts already done")
    model = recorder or llm
    started = time.perf_counter()
    if not done:
        model.complete([{"role": "user", "content": "Say OK."}], max_tokens=1)  # load the model before timing turns
    agents = {}
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="recagent-speech-") as tmp:
            transcripts = Transcripts(settings, Path(tmp), recorder, replay)
            bar = tqdm(total=sum(len(s.turns) for s in scripts), desc="dialogue turns", unit="turn",
                       disable=not progress, file=sys.stderr)

            def on_turn(script, turn):
                bar.update(1)
                bar.set_postfix_str(f"{script.name} {'ok' if turn['passed'] else 'FAIL'}")
                if recorder:
                    recorder.write({"kind": "outcome", "script": script.name, "turn": turn["turn"],
                                    **outcome(turn)})

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
    except ReplayError as exc:
        from recagent.agent.llm import LLMError

        raise LLMError(f"replay diverged: {exc}") from None
    finally:
        if recorder:
            recorder.close()
    figures = summarise(results)
    figures.update({"model": llm.name, "seconds": round(time.perf_counter() - started, 1), "scripts": results,
                    "recording": str(record) if record else None, "resumed_scripts": len(done)})
    if replay:
        figures["replay"] = compare_with_recording(results, read_recording(replay), replay)
        if getattr(llm, "unused", None) and llm.unused():
            figures["replay"]["unused_calls"] = llm.unused()
    return figures


def outcome(turn: dict) -> dict:
    """What must be identical on replay: the items shown and each check's result."""
    return {"items": [i["id"] for i in turn["items"]], "checks": [[c["kind"], c["passed"]] for c in turn["checks"]]}


def compare_with_recording(results: list[dict], records: list[dict], path: str) -> dict:
    """The replayed outcomes against the recorded ones: identical or the differences."""
    recorded = {(r["script"], r["turn"]): {"items": r["items"], "checks": r["checks"]}
                for r in records if r.get("kind") == "outcome"}
    differences = []
    for script in results:
        for turn in script["turns"]:
            old = recorded.get((script["name"], turn["turn"]))
            if old is not None and old != outcome(turn):
                differences.append(f"{script['name']} turn {turn['turn']}: recorded {old}, replayed {outcome(turn)}")
    compared = sum(1 for s in results for t in s["turns"] if (s["name"], t["turn"]) in recorded)
    return {"file": str(path), "turns_compared": compared, "identical": not differences and compared > 0,
            "differences": differences}


# ---- summary -----------------------------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def rate(passed: int, total: int) -> float | None:
    return round(passed / total, 3) if total else None


def summarise(results: list[dict]) -> dict:
    """Pass rates (per script, expectation kind, family), hit@k, off-catalog rate, turns to success, tool errors,
    latency p50/p95 per stage, and where failures happen."""
    turns = [t for s in results for t in s["turns"]]
    checks = [c for t in turns for c in t["checks"]]
    by_kind: dict[str, list[bool]] = {}
    for c in checks:
        by_kind.setdefault(c["kind"], []).append(c["passed"])
    families = {}
    for family in sorted({s["family"] for s in results}):
        mine = [s for s in results if s["family"] == family]
        fam_checks = [c for s in mine for t in s["turns"] for c in t["checks"]]
        families[family] = {"scripts": len(mine), "scripts_passed": sum(s["passed"] for s in mine),
                            "script_pass_rate": rate(sum(s["passed"] for s in mine), len(mine)),
                            "check_pass_rate": rate(sum(c["passed"] for c in fam_checks), len(fam_checks))}
    hit_checks = [c for c in checks if c["kind"] == "hit"]
    hit_at = {}
    for k in sorted({c["k"] for c in hit_checks}):
        at_k = [c["passed"] for c in hit_checks if c["k"] == k]
        hit_at[f"hit@{k}"] = {"rate": rate(sum(at_k), len(at_k)), "n": len(at_k)}
    items = sum(len(t["items"]) for t in turns)
    off = sum(not c["passed"] for c in checks if c["kind"] == "in_catalog")
    with_hit = [s for s in results if s["has_hit"]]
    reached = [s["turns_to_success"] for s in with_hit if s["turns_to_success"]]
    latency = {}
    for stage in STAGES:
        values = [t["timings"][stage] for t in turns if stage in t["timings"] and not t["error"]]
        if values:
            latency[stage] = {"p50": percentile(values, 50), "p95": percentile(values, 95), "n": len(values)}
    failures_by_turn: dict[str, int] = {}
    for t in turns:
        if not t["passed"]:
            failures_by_turn[str(t["turn"])] = failures_by_turn.get(str(t["turn"]), 0) + 1
    return {
        "n_scripts": len(results), "n_turns": len(turns), "n_checks": len(checks),
        "script_pass_rate": rate(sum(s["passed"] for s in results), len(results)),
        "check_pass_rate": rate(sum(c["passed"] for c in checks), len(checks)),
        "turn_pass_rate": rate(sum(t["passed"] for t in turns), len(turns)),
        "by_expectation": {k: {"passed": sum(v), "n": len(v), "rate": rate(sum(v), len(v))} for k, v in sorted(by_kind.items())},
        "by_family": families,
        "hit_rate": rate(sum(c["passed"] for c in hit_checks), len(hit_checks)), "hit_at": hit_at,
        "items_shown": items,
        "off_catalog_items": off, "off_catalog_rate": rate(off, items) if items else 0.0,
        "invented_titles_removed": sum(len(t["removed_mentions"]) for t in turns),
        "turns_to_success": {"scripts_with_hit": len(with_hit), "reached": len(reached),
                             "mean": round(float(np.mean(reached)), 2) if reached else None},
        "tool_errors": sum(1 for t in turns for c in t["tool_calls"] if c["error"]),
        "turn_errors": sum(1 for t in turns if t["error"]),
        "latency": latency,
        "failures_by_turn": failures_by_turn,
        "failures_by_kind": {k: len(v) - sum(v) for k, v in sorted(by_kind.items()) if len(v) - sum(v)},
    }


def format_summary(figures: dict) -> str:
    """The headline figures as a few lines of text for the terminal."""
    lines = [f"scripts passed {figures['script_pass_rate']:.0%} ({figures['n_scripts']} scripts, "
             f"{figures['n_turns']} turns); expectations passed {figures['check_pass_rate']:.0%} of {figures['n_checks']}"]
    for family, f in figures["by_family"].items():
        lines.append(f"  {family:12} scripts {f['scripts_passed']}/{f['scripts']}  expectations {f['check_pass_rate']:.0%}")
    hits = ", ".join(f"{k} {v['rate']:.0%} (n={v['n']})" for k, v in figures["hit_at"].items())
    lines.append(f"{hits or 'no hit expectations'}; off-catalog items {figures['off_catalog_items']} of "
                 f"{figures['items_shown']}; tool errors {figures['tool_errors']}; failed turns {figures['turn_errors']}")
    total = figures["latency"].get("total")
    if total:
        lines.append(f"turn latency p50 {total['p50']:.1f} s, p95 {total['p95']:.1f} s; run {figures['seconds']:.0f} s")
    replay = figures.get("replay")
    if replay:
        lines.append(f"replay of {replay['file']}: " + ("identical" if replay["identical"] else
                                                        f"{len(replay['differences'])} differences"))
    return "\n".join(lines)


def write_json(figures: dict, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(figures, indent=2, ensure_ascii=False) + "\n")


def default_recording(json_out: str | None, report_dir: str | None, settings: Settings) -> Path:
    """Where a run's LLM calls go: beside --json, else in --report, else in HOME/eval-recordings."""
    if json_out:
        return Path(re.sub(r"\.json$", "", json_out) + ".llm.jsonl")
    folder = Path(report_dir) if report_dir else settings.home / "eval-recordings"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / ("llm-calls.jsonl" if report_dir else time.strftime("run-%Y%m%d-%H%M%S.llm.jsonl"))
