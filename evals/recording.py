"""Recording, resuming and replaying an evaluation run (scripted dialogues or simulated users).

Every run appends its LLM calls, transcripts and finished units (a "script" or a "user") to a JSON-lines file.
`--resume` cuts an interrupted recording back to its last finished unit and continues it; `--replay FILE` serves
the recorded answers and transcripts without loading a model, and stops with a ReplayError where the run
diverges from the recording.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from recagent.agent.llm import LLM, RecordingLLM, read_recording
from recagent.tools.errors import ReplayError
from recagent.tools.settings import Settings
from recagent.tools.speech import transcribe_audio


class Transcripts:
    """Speech for `speak:` and `audio:` turns: espeak-ng renders, Whisper transcribes; on replay the recorded
    transcript is used, because faster-whisper's int8 output can vary slightly from process to process."""

    def __init__(
        self, settings: Settings, folder: Path, recorder: RecordingLLM | None = None, replay: str | None = None
    ):
        self.settings = settings
        self.folder = folder
        self.recorder = recorder
        self.recorded: dict[str, dict] | None = None  # on replay: the recorded transcripts by key
        if replay:
            self.recorded = {r["key"]: r for r in read_recording(replay) if r.get("kind") == "transcript"}

    def render(self, text: str) -> Path:
        """text spoken by espeak-ng (140 words a minute) as a 16 kHz wav."""
        wav = self.folder / (hashlib.sha256(text.encode()).hexdigest()[:12] + ".wav")
        if not wav.exists():
            subprocess.run(["espeak-ng", "-s", "140", "-w", str(wav), text], check=True, capture_output=True)
        return wav

    def transcribe(self, key: str, wav: Path, catalog: str | None = None) -> tuple[str, float]:
        """The transcript of a recording and the seconds it took (0 on replay); with the catalog's words first, as
        the agent hears a recording of a turn on that catalog."""
        if self.recorded is not None:
            if key not in self.recorded:
                raise ReplayError(f"the recording holds no transcript for {key!r}")
            return self.recorded[key]["text"], self.recorded[key].get("seconds", 0.0)
        started = time.perf_counter()
        text = transcribe_audio(str(wav), self.settings, catalog=catalog)
        seconds = round(time.perf_counter() - started, 3)
        if self.recorder:
            self.recorder.write({"kind": "transcript", "key": key, "text": text, "seconds": seconds})
        return text, seconds


def resume_recording(record: str | Path, unit: str) -> list[dict]:
    """Cut a recording back to its last finished unit (a "script" or "user" record) and return what it keeps; a
    run killed halfway (out of memory, Ctrl-C) then continues where it stopped and still replays in one piece."""
    path = Path(record)
    if not path.is_file():
        return []
    records = read_recording(str(path))
    last = max((i for i, r in enumerate(records) if r.get("kind") == unit), default=-1)
    kept = records[: last + 1]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept), encoding="utf-8")
    return kept


def start_recording(
    llm: LLM, record: str | Path | None, resume: bool, unit: str, header: dict
) -> tuple[RecordingLLM | None, list[dict]]:
    """The recording wrapper of a run (or None), and the finished units it already holds when resuming."""
    if not record:
        return None, []
    kept = resume_recording(record, unit) if resume else []
    recorder = RecordingLLM(llm, str(record), mode="a" if kept else "w")
    recorder.calls = sum(1 for r in kept if r.get("kind") == "llm")
    recorder.write({"kind": "resume" if kept else "run", "model": llm.name, **header, "time": time.time()})
    return recorder, [r["result"] for r in kept if r.get("kind") == unit]


@contextmanager
def recorded_run(recorder: RecordingLLM | None) -> Iterator[None]:
    """Around a run: the recording is closed however it ends, and a replay that diverges says so."""
    try:
        yield
    except ReplayError as exc:
        raise ReplayError(f"replay diverged: {exc}") from None
    finally:
        if recorder:
            recorder.close()


def default_recording(json_out: str | None, report_dir: str | None, settings: Settings) -> Path:
    """Where a run's LLM calls go: beside --json, else in --report, else in HOME/eval-recordings."""
    if json_out:
        return Path(re.sub(r"\.json$", "", json_out) + ".llm.jsonl")
    folder = Path(report_dir) if report_dir else settings.home / "eval-recordings"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / ("llm-calls.jsonl" if report_dir else time.strftime("run-%Y%m%d-%H%M%S.llm.jsonl"))


def recording_path(
    record: str | None, replay: str | None, json_out: str | None, report_dir: str | None, settings: Settings
) -> Path | None:
    """Where a run records its LLM calls: none on replay, else --record, else the default place."""
    if replay:
        return None
    return Path(record) if record else default_recording(json_out, report_dir, settings)
