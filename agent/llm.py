"""LLM backends behind one small interface: local llama.cpp, any OpenAI-compatible endpoint, and a scripted fake."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol


class LLMError(Exception):
    """The LLM backend failed (down, timed out, refused); the message says which and what to do."""


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

    def complete(self, messages: list[dict], *, schema: dict | None = None, max_tokens: int = 256,
                 on_token: Callable[[str], None] | None = None) -> Completion: ...


# ---- JSON repair -----------------------------------------------------------------------------------

def parse_json_object(text: str) -> dict:
    """The first JSON object in an LLM answer, tolerating code fences, prose around it and a cut-off end."""
    cleaned = re.sub(r"```(?:json)?", "", text).strip()
    start = cleaned.find("{")
    if start < 0:
        raise ValueError("no JSON object in the answer")
    decoder = json.JSONDecoder()
    try:
        obj, _ = decoder.raw_decode(cleaned[start:])
    except json.JSONDecodeError:
        obj = json.loads(_close_brackets(cleaned[start:]))
    if not isinstance(obj, dict):
        raise ValueError("the answer is not a JSON object")
    return obj


def _close_brackets(text: str) -> str:
    """Close the strings, arrays and objects left open by a truncated answer."""
    stack, in_string, escape = [], False, False
    for ch in text:
        if in_string:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            stack.append("]" if ch == "[" else "}")
        elif ch in "]}" and stack:
            stack.pop()
    text = text + ('"' if in_string else "")
    text = re.sub(r",\s*$", "", text)
    return text + "".join(reversed(stack))


# ---- scripted fake ----------------------------------------------------------------------------------

@dataclass
class ScriptedLLM:
    """A deterministic stand-in for tests (also other applications' tests): answers from a script, in order.

    Each script entry is a string, a dict (sent as JSON), an Exception to raise, or a function of the
    messages returning one of those. Every call is recorded in `calls`.
    """

    script: list = field(default_factory=list)
    name: str = "scripted"
    calls: list = field(default_factory=list)

    def complete(self, messages, *, schema=None, max_tokens=256, on_token=None) -> Completion:
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
        return Completion(text, prompt_tokens=sum(len(m["content"].split()) for m in messages),
                          completion_tokens=len(text.split()))


# ---- local llama.cpp -----------------------------------------------------------------------------

class LocalLLM:
    """llama-cpp-python in process. Calls are serialised (one model, many conversations); llama.cpp reuses
    the KV cache of the longest common token prefix with the previous call, so a fixed prompt prefix is
    evaluated once."""

    def __init__(self, model_path: str, n_ctx: int = 4096, threads: int | None = None, seed: int = 0):
        self.model_path = model_path
        self.name = f"local:{os.path.basename(model_path)}"
        self.n_ctx = n_ctx
        self.threads = threads or max(1, os.cpu_count() or 1)
        self.seed = seed
        self._llama = None
        self._lock = threading.Lock()

    def _model(self):
        if self._llama is None:
            try:
                from llama_cpp import Llama
            except ImportError:
                raise LLMError("the local LLM needs llama-cpp-python: pip install 'recagent[local]'") from None
            from llama_cpp import LlamaRAMCache

            self._llama = Llama(self.model_path, n_ctx=self.n_ctx, n_threads=self.threads, n_batch=512,
                                seed=self.seed, verbose=False)
            # Keep the KV state of recent prompts: the planner's long fixed prefix is evaluated once,
            # even when reply-writing calls and other conversations come in between.
            self._llama.set_cache(LlamaRAMCache(capacity_bytes=1 << 30))
        return self._llama

    def complete(self, messages, *, schema=None, max_tokens=256, on_token=None) -> Completion:
        with self._lock:
            llama = self._model()
            kwargs = {"temperature": 0.0, "max_tokens": max_tokens, "stream": True}
            if schema is not None:
                kwargs["response_format"] = {"type": "json_object", "schema": schema}
            started = time.perf_counter()
            first = None
            pieces: list[str] = []
            try:
                for chunk in llama.create_chat_completion(messages, **kwargs):
                    delta = chunk["choices"][0].get("delta", {}).get("content") or ""
                    if delta:
                        if first is None:
                            first = time.perf_counter()
                        pieces.append(delta)
                        if on_token:
                            on_token(delta)
            except ValueError as exc:  # e.g. the prompt does not fit the context
                raise LLMError(f"local LLM: {exc}") from None
            end = time.perf_counter()
            first = first or end
            text = "".join(pieces)
            return Completion(text, prompt_tokens=_n_prompt_tokens(llama), completion_tokens=len(
                llama.tokenize(text.encode(), add_bos=False, special=False)) if text else 0,
                prompt_seconds=first - started, generation_seconds=end - first)


def _n_prompt_tokens(llama) -> int:
    try:
        return int(llama.n_tokens)
    except Exception:
        return 0


# ---- OpenAI-compatible endpoint --------------------------------------------------------------------

class OpenAILLM:
    """Any OpenAI-compatible chat endpoint (OpenAI, vLLM, Ollama, a llama.cpp server) through langchain-openai."""

    def __init__(self, model: str, base_url: str | None = None, api_key: str | None = None, timeout: float = 120,
                 max_retries: int = 1):
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            if base_url and re.match(r"https?://(127\.|localhost|\[::1\])", base_url):
                key = "not-needed"  # local servers accept any key
            else:
                raise LLMError("the openai backend needs an API key: set OPENAI_API_KEY (or use --llm local; "
                               "a local server given with --base-url http://127.0.0.1:PORT/v1 needs none)")
        from langchain_openai import ChatOpenAI

        self.name = f"openai:{model}"
        self.base_url = base_url
        self.chat = ChatOpenAI(model=model, base_url=base_url, api_key=key, timeout=timeout, max_retries=max_retries,
                               temperature=0)

    def complete(self, messages, *, schema=None, max_tokens=256, on_token=None) -> Completion:
        import openai

        kwargs = {"max_tokens": max_tokens}
        if schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": schema}
        started = time.perf_counter()
        first = None
        pieces: list[str] = []
        usage = {}
        try:
            for chunk in self.chat.stream(_to_langchain(messages), **kwargs):
                if chunk.content:
                    first = first or time.perf_counter()
                    pieces.append(chunk.content)
                    if on_token:
                        on_token(chunk.content)
                if getattr(chunk, "usage_metadata", None):
                    usage = chunk.usage_metadata
        except openai.APITimeoutError:
            raise LLMError(f"the LLM endpoint {self.base_url or 'OpenAI'} timed out") from None
        except openai.APIConnectionError:
            raise LLMError(f"cannot reach the LLM endpoint {self.base_url or 'OpenAI'}: is it running?") from None
        except openai.AuthenticationError:
            raise LLMError("the LLM endpoint refused the API key (OPENAI_API_KEY)") from None
        except openai.APIStatusError as exc:
            raise LLMError(f"the LLM endpoint answered HTTP {exc.status_code}: {str(exc)[:200]}") from None
        except Exception as exc:  # noqa: BLE001 - an answer that is not valid JSON, a broken stream: the
            # client library fails in many ways (even with AssertionError); to the user they are one thing
            raise LLMError(f"the LLM endpoint {self.base_url or 'OpenAI'} sent an unreadable answer "
                           f"({exc.__class__.__name__}: {str(exc)[:200]})") from None
        end = time.perf_counter()
        first = first or end
        return Completion("".join(pieces), prompt_tokens=int(usage.get("input_tokens", 0)),
                          completion_tokens=int(usage.get("output_tokens", 0)),
                          prompt_seconds=first - started, generation_seconds=end - first)


def _to_langchain(messages: Iterable[dict]):
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    kinds = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
    return [kinds[m["role"]](content=m["content"]) for m in messages]


# ---- record and replay -----------------------------------------------------------------------------

class ReplayError(Exception):
    """A replayed run asked the LLM something the recording does not hold (the run diverged from it)."""


def call_key(messages: list[dict], schema: dict | None, max_tokens: int) -> str:
    """A short hash of everything that decides an LLM answer: the messages, the schema and the token limit."""
    import hashlib

    blob = json.dumps({"messages": messages, "schema": schema, "max_tokens": max_tokens}, sort_keys=True,
                      ensure_ascii=False)
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

    def complete(self, messages, *, schema=None, max_tokens=256, on_token=None) -> Completion:
        chunks: list[str] = []

        def keep(token: str) -> None:
            chunks.append(token)  # the same pieces are streamed again on replay: sentence grounding sees them
            if on_token:
                on_token(token)

        record = {"kind": "llm", "call": self.calls, "key": call_key(messages, schema, max_tokens),
                  "messages": messages, "schema": schema, "max_tokens": max_tokens}
        try:
            completion = self.inner.complete(messages, schema=schema, max_tokens=max_tokens, on_token=keep)
        except LLMError as exc:  # a failure is part of the run too: replay raises it again
            self.write({**record, "error": str(exc)})
            raise
        self.write({**record, "text": completion.text, "chunks": chunks,
                    "prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
                    "prompt_seconds": round(completion.prompt_seconds, 4),
                    "generation_seconds": round(completion.generation_seconds, 4)})
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

    def complete(self, messages, *, schema=None, max_tokens=256, on_token=None) -> Completion:
        if self.position >= len(self.records):
            raise ReplayError(f"the run makes more LLM calls than {self.path} recorded ({len(self.records)})")
        record = self.records[self.position]
        if call_key(messages, schema, max_tokens) != record["key"]:
            raise ReplayError(f"LLM call {self.position + 1} differs from the recording {self.path}: "
                              f"{_first_difference(record, messages, schema, max_tokens)}")
        self.position += 1
        if "error" in record:
            raise LLMError(record["error"])
        if on_token:
            for chunk in record.get("chunks") or [record["text"]]:
                on_token(chunk)
        return Completion(record["text"], prompt_tokens=record.get("prompt_tokens", 0),
                          completion_tokens=record.get("completion_tokens", 0),
                          prompt_seconds=record.get("prompt_seconds", 0.0),
                          generation_seconds=record.get("generation_seconds", 0.0))

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
            return f"message {n} ({b.get('role')}) was {a.get('content', '')[-80:]!r}, now {b.get('content', '')[-80:]!r}"
    return f"{len(old)} messages were recorded, now {len(messages)}"


def make_llm(kind: str = "local", settings=None, *, model: str | None = None, base_url: str | None = None,
             timeout: float = 120) -> LLM:
    """The LLM backend by name: 'local' (llama.cpp, the offline Qwen GGUF), 'openai' (any compatible endpoint),
    'scripted' (answers from the JSON list in the file `model`) or 'replay' (a recording of an earlier run)."""
    if kind == "local":
        from recagent.tools.models import resolve_model

        path = model if model and os.path.exists(model) else resolve_model(model or "llm", settings)
        return LocalLLM(path)
    if kind == "openai":
        return OpenAILLM(model or os.environ.get("RECAGENT_OPENAI_MODEL", "gpt-4o-mini"), base_url=base_url,
                         timeout=timeout)
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
