"""LLM backends behind one small interface (base.LLM): local llama.cpp (local.py), any OpenAI-compatible endpoint
(openai_compatible.py), a scripted fake for tests (scripted.py), and record/replay of a run (replay.py)."""

from __future__ import annotations

import json
import os

from recagent.tools.errors import LLMError, ReplayError
from recagent.tools.models import resolve_model
from recagent.tools.settings import Settings

from .base import LLM, Completion, OnToken
from .local import LocalLLM
from .openai_compatible import OpenAILLM
from .replay import RecordingLLM, ReplayLLM, call_key, read_recording
from .scripted import ScriptedLLM

__all__ = [
    "LLM",
    "Completion",
    "LLMError",
    "LocalLLM",
    "OnToken",
    "OpenAILLM",
    "RecordingLLM",
    "ReplayError",
    "ReplayLLM",
    "ScriptedLLM",
    "call_key",
    "make_llm",
    "read_recording",
]


def make_llm(
    kind: str = "local",
    settings: Settings | None = None,
    *,
    model: str | None = None,
    base_url: str | None = None,
    timeout: float = 120,
) -> LLM:
    """The LLM backend by name: 'local' (llama.cpp, the offline Qwen GGUF), 'openai' (any compatible endpoint),
    'scripted' (answers from the JSON list in the file `model`) or 'replay' (a recording of an earlier run)."""
    if kind == "local":
        path = model if model and os.path.exists(model) else resolve_model(model or "llm", settings)
        return LocalLLM(path)
    if kind == "openai":
        return OpenAILLM(
            model or os.environ.get("RECAGENT_OPENAI_MODEL", "gpt-4o-mini"), base_url=base_url, timeout=timeout
        )
    if kind == "scripted":  # for tests of applications built on recagent: answers from a JSON list
        if not model or not os.path.isfile(model):
            raise LLMError("--llm scripted needs --model FILE, a JSON list of answers")
        with open(model, encoding="utf-8") as fh:
            return ScriptedLLM(json.load(fh))
    if kind == "replay":  # a recorded run, answered again without a model (RecordingLLM wrote the file)
        if not model:
            raise LLMError("--llm replay needs --model FILE, a recording (JSON lines) of an earlier run")
        return ReplayLLM(model)
    raise LLMError(f"unknown LLM backend '{kind}': use local or openai")
