"""Record and replay: every LLM call of a run as one JSON line, and the same run answered again from it, exactly."""

from __future__ import annotations

import hashlib
import json
import os
import threading

from recagent.tools.errors import LLMError, ReplayError

from .base import LLM, Completion, OnToken


def call_key(messages: list[dict], schema: dict | None, max_tokens: int) -> str:
    """A short hash of everything that decides an LLM answer: the messages, the schema and the token limit."""
    blob = json.dumps(
        {"messages": messages, "schema": schema, "max_tokens": max_tokens}, sort_keys=True, ensure_ascii=False
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class RecordingLLM:
    """Wraps any LLM and appends each call (messages, schema, answer, token counts) as one JSON line to a file."""

    def __init__(self, llm: LLM, path: str, mode: str = "w"):
        self.inner = llm
        self.name = llm.name
        self.path = path
        self.calls = 0
        self._file = open(path, mode, encoding="utf-8")
        self._lock = threading.Lock()

    def complete(
        self,
        messages: list[dict],
        *,
        schema: dict | None = None,
        max_tokens: int = 256,
        on_token: OnToken | None = None,
    ) -> Completion:
        chunks: list[str] = []

        def keep(token: str) -> None:
            chunks.append(token)  # the same pieces are streamed again on replay: sentence grounding sees them
            if on_token:
                on_token(token)

        record = {
            "kind": "llm",
            "call": self.calls,
            "key": call_key(messages, schema, max_tokens),
            "messages": messages,
            "schema": schema,
            "max_tokens": max_tokens,
        }
        try:
            completion = self.inner.complete(messages, schema=schema, max_tokens=max_tokens, on_token=keep)
        except LLMError as exc:  # a failure is part of the run too: replay raises it again
            self.write({**record, "error": str(exc)})
            raise
        self.write(
            {
                **record,
                "text": completion.text,
                "chunks": chunks,
                "prompt_tokens": completion.prompt_tokens,
                "completion_tokens": completion.completion_tokens,
                "prompt_seconds": round(completion.prompt_seconds, 4),
                "generation_seconds": round(completion.generation_seconds, 4),
            }
        )
        return completion

    def write(self, record: dict) -> None:
        """Append one record (an LLM call, or anything else the run wants to replay) and flush it."""
        with self._lock:
            if record.get("kind") == "llm":
                self.calls += 1
            self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
            self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_recording(path: str) -> list[dict]:
    """The records of a recording file, or an LLMError saying why it cannot be used."""
    try:
        with open(path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]
    except OSError as exc:
        raise LLMError(f"cannot read the recording {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise LLMError(f"{path} is not a recagent recording (line {exc.lineno}: {exc.msg})") from None


class ReplayLLM:
    """Serves the answers of a recorded run, in call order, without loading any model. Each call must match the
    recorded one (same messages, schema and token limit), else a ReplayError says where the run diverged."""

    def __init__(self, path: str):
        self.path = path
        self.records = [r for r in read_recording(path) if r.get("kind") == "llm"]
        if not self.records:
            raise LLMError(f"{path} holds no recorded LLM calls")
        model = next((r.get("model") for r in read_recording(path) if r.get("kind") == "run"), None)
        self.name = f"replay:{model or os.path.basename(path)}"
        self.position = 0

    def complete(
        self,
        messages: list[dict],
        *,
        schema: dict | None = None,
        max_tokens: int = 256,
        on_token: OnToken | None = None,
    ) -> Completion:
        if self.position >= len(self.records):
            raise ReplayError(f"the run makes more LLM calls than {self.path} recorded ({len(self.records)})")
        record = self.records[self.position]
        if call_key(messages, schema, max_tokens) != record["key"]:
            raise ReplayError(
                f"LLM call {self.position + 1} differs from the recording {self.path}: "
                f"{_first_difference(record, messages, schema, max_tokens)}"
            )
        self.position += 1
        if "error" in record:
            raise LLMError(record["error"])
        if on_token:
            for chunk in record.get("chunks") or [record["text"]]:
                on_token(chunk)
        return Completion(
            record["text"],
            prompt_tokens=record.get("prompt_tokens", 0),
            completion_tokens=record.get("completion_tokens", 0),
            prompt_seconds=record.get("prompt_seconds", 0.0),
            generation_seconds=record.get("generation_seconds", 0.0),
        )

    def unused(self) -> int:
        """Recorded calls the run did not make."""
        return len(self.records) - self.position


def _first_difference(record: dict, messages: list[dict], schema, max_tokens: int) -> str:
    """Where a call differs from its recording, in words."""
    if record.get("max_tokens") != max_tokens or record.get("schema") != schema:
        return "the output limits or schema differ"
    old = record.get("messages") or []
    for n, (a, b) in enumerate(zip(old, messages), 1):
        if a != b:
            return (
                f"message {n} ({b.get('role')}) was {a.get('content', '')[-80:]!r}, now {b.get('content', '')[-80:]!r}"
            )
    return f"{len(old)} messages were recorded, now {len(messages)}"
