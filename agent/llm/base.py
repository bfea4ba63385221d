"""What the agent needs from a model: a chat completion, optionally constrained to a JSON schema, streamed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

OnToken = Callable[[str], None]


@dataclass
class Completion:
    """One LLM answer with the figures that explain its cost."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_seconds: float = 0.0  # until the first token
    generation_seconds: float = 0.0  # after the first token


class LLM(Protocol):
    """What the agent needs from a model: a chat completion, optionally constrained to a JSON schema, streamed."""

    name: str

    def complete(
        self,
        messages: list[dict],
        *,
        schema: dict | None = None,
        max_tokens: int = 256,
        on_token: OnToken | None = None,
    ) -> Completion: ...
