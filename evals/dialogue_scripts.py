"""The dialogue script format (evals/dialogues/*.yaml): loading, checking the form, and validating what a script
refers to (items, fields, files) against the catalog's data files.

A script is a short dialogue over one catalog. Each turn is typed text, a recording (`audio:`), text spoken by
espeak-ng and heard by Whisper (`speak:`), or a photo (`image:`) with optional words, and says what the reply
must do (`expect:`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from recagent.tools.catalog import Item, load_catalog
from recagent.tools.errors import ScriptError
from recagent.tools.settings import Settings

SCRIPTS_DIR = Path(__file__).resolve().parent / "dialogues"
FAMILIES = (
    "basic",
    "refinement",
    "negation",
    "vague",
    "voice",
    "image",
    "adversarial",
    "time",
    "reference",
    "multi",
    "multilingual",
    "typo",
    "long",
)
CATALOGS = ("movies", "fashion")
INPUT_KEYS = ("say", "audio", "speak", "image")
EXPECT_KEYS = (
    "hit",
    "require",
    "forbid",
    "year",
    "older",
    "newer",
    "clarify",
    "tool",
    "reply_excludes",
    "transcript_has",
    "exclude_items",
    "min_items",
)
SCRIPT_KEYS = ("name", "family", "catalog", "turns", "description", "fixture")


@dataclass
class Turn:
    say: str = ""
    audio: str | None = None
    speak: str | None = None
    image: str | None = None
    expect: dict = field(default_factory=dict)

    def inputs(self) -> dict[str, str]:
        """What the user gives in this turn (say, audio, speak, image), the empty ones left out."""
        given = (("say", self.say), ("audio", self.audio), ("speak", self.speak), ("image", self.image))
        return {k: v for k, v in given if v}


@dataclass
class Script:
    name: str
    family: str
    catalog: str
    turns: list[Turn]
    description: str = ""
    fixture: dict = field(default_factory=dict)
    path: str = ""


# ---- loading and checking the form -------------------------------------------------------------------------


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


def load_scripts(
    path: str | Path | None = None, families: list[str] | None = None, limit: int | None = None
) -> list[Script]:
    """Every script under path (a file may hold one script or a list), checked for form; optionally filtered."""
    scripts: list[Script] = []
    for file in script_files(path):
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ScriptError(f"{file}: not valid YAML ({exc})") from None
        for n, entry in enumerate(data if isinstance(data, list) else [data], 1):
            scripts.append(
                parse_script(entry, f"{file.name}" + (f" #{n}" if isinstance(data, list) else ""), str(file))
            )
    names = [s.name for s in scripts]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ScriptError(f"script names used twice: {', '.join(duplicates)}")
    if families:
        unknown = [f for f in families if f not in {s.family for s in scripts}]
        if unknown:
            raise ScriptError(
                f"no script of family {', '.join(unknown)} (families: {', '.join(sorted({s.family for s in scripts}))})"
            )
        scripts = [s for s in scripts if s.family in families]
    return scripts[:limit] if limit else scripts


def parse_script(data: Any, where: str, path: str = "") -> Script:
    """One script from its YAML mapping, or a ScriptError naming the file and the turn."""
    if not isinstance(data, dict):
        raise ScriptError(f"{where}: a script is a mapping with name, family, catalog and turns")
    missing = [k for k in SCRIPT_KEYS[:4] if k not in data]
    if missing:
        raise ScriptError(f"{where}: missing {', '.join(missing)}")
    unknown = set(data) - set(SCRIPT_KEYS)
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
    override = fixture.get("override") if isinstance(fixture, dict) else None
    if fixture and not (isinstance(override, dict) and {"item", "field", "value"} <= set(override)):
        raise ScriptError(f"{where}: fixture must be {{override: {{item, field, value}}}}")
    return Script(
        str(data["name"]), data["family"], data["catalog"], turns, str(data.get("description", "")), fixture, path
    )


def parse_turn(data: Any, where: str) -> Turn:
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


# ---- what a script refers to -------------------------------------------------------------------------------


class CatalogFacts:
    """Ids, titles and field values of one catalog, read from its data files (no index needed)."""

    def __init__(self, name: str, settings: Settings):
        self.items: dict[str, Item] = {it.id: it for it in load_catalog(name, settings).items}
        self.by_title: dict[str, str] = {}
        for it in sorted(self.items.values(), key=lambda it: -int(it.metadata.get("ratings", 0) or 0)):
            self.by_title.setdefault(it.title.lower(), it.id)
        self.fields = {k for it in self.items.values() for k in it.metadata}

    def resolve(self, ref: object) -> str | None:
        """The id of an item given by id or by its exact title ("Jaws (1975)"), or None."""
        ref = str(ref)
        return ref if ref in self.items else self.by_title.get(ref.lower())


_facts: dict[tuple[str, str], CatalogFacts] = {}


def catalog_facts(name: str, settings: Settings) -> CatalogFacts:
    """The facts of one catalog, read once per data folder."""
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
        refs: list[tuple[str, object]] = []
        override = script.fixture.get("override")
        if override:
            refs.append((script.name, override["item"]))
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
                    for value in values if isinstance(values, list) else [values]:
                        if name != "share" and not any(
                            has_value(it.metadata.get(name), value) for it in facts.items.values()
                        ):
                            problems.append(f"{where}: no {script.catalog} item has {name}={value}")
        for where, item in refs:
            if facts.resolve(item) is None:
                problems.append(f"{where}: '{item}' is not in the {script.catalog} catalog")
    return problems


def has_value(actual: object, wanted: object) -> bool:
    """Whether an item's field holds a value: list fields contain it, other fields equal it (case-insensitive)."""
    if actual is None:
        return False
    if isinstance(actual, list):
        return str(wanted).lower() in {str(a).lower() for a in actual}
    return str(actual).lower() == str(wanted).lower()
