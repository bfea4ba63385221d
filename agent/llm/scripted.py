"""The scripted fake: answers from a list, for fast, deterministic tests of the agent loop and other applications."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from recagent.tools.errors import LLMError

from .base import Completion, OnToken


@dataclass
class ScriptedLLM:
    """A deterministic stand-in for tests (also other applications' tests): answers from a script, in order.

    Each script entry is a string, a dict (sent as JSON), an Exception to raise, or a function of the
    messages returning one of those. Every call is recorded in `calls`.
    """

    script: list = field(default_factory=list)
    name: str = "scripted"
    calls: list = field(default_factory=list)

    def complete(
        self,
        messages: list[dict],
        *,
        schema: dict | None = None,
        max_tokens: int = 256,
        on_token: OnToken | None = None,
    ) -> Completion:
        self.calls.append({"messages": messages, "schema": schema})
        if not self.script:
            raise LLMError("the scripted LLM has no answer left")
        entry = self.script.pop(0)
        if callable(entry) and not isinstance(entry, type):
            entry = entry(messages)
        if isinstance(entry, BaseException):
            raise entry
        text = json.dumps(entry) if isinstance(entry, dict) else str(entry)
        if on_token:
            for word in re.findall(r"\S+\s*", text):
                on_token(word)
        return Completion(
            text, prompt_tokens=sum(len(m["content"].split()) for m in messages), completion_tokens=len(text.split())
        )
