"""The local backend: llama.cpp in process (llama-cpp-python), the offline Qwen GGUF by default."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from recagent.tools.errors import LLMError

from .base import Completion, OnToken


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
        self._llama: Any = None  # a llama_cpp.Llama, loaded on first use
        self._lock = threading.Lock()

    def _model(self) -> Any:
        if self._llama is None:
            try:  # an optional extra, and slow to import: only the local backend needs it
                from llama_cpp import Llama, LlamaRAMCache  # noqa: PLC0415
            except ImportError:
                raise LLMError("the local LLM needs llama-cpp-python: pip install 'recagent[local]'") from None

            self._llama = Llama(
                self.model_path, n_ctx=self.n_ctx, n_threads=self.threads, n_batch=512, seed=self.seed, verbose=False
            )
            # Keep the KV state of recent prompts: the planner's long fixed prefix is evaluated once,
            # even when reply-writing calls and other conversations come in between.
            self._llama.set_cache(CompactStates(LlamaRAMCache(capacity_bytes=1 << 30)))
        return self._llama

    def complete(
        self,
        messages: list[dict],
        *,
        schema: dict | None = None,
        max_tokens: int = 256,
        on_token: OnToken | None = None,
    ) -> Completion:
        with self._lock:
            llama = self._model()
            kwargs: dict[str, Any] = {"temperature": 0.0, "max_tokens": max_tokens, "stream": True}
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
            generated = len(llama.tokenize(text.encode(), add_bos=False, special=False)) if text else 0
            return Completion(
                text,
                prompt_tokens=max(0, _n_context_tokens(llama) - generated),
                completion_tokens=generated,
                prompt_seconds=first - started,
                generation_seconds=end - first,
            )


class CompactStates:
    """A llama-cpp-python prompt cache whose saved states keep one row of logits instead of up to n_batch rows.

    `Llama.save_state` copies the logits buffer (up to 512 x the vocabulary in float32: 311 MB for Qwen's 151,936
    tokens) into every state, and `LlamaRAMCache` counts only the KV part against its capacity: under load (many
    conversations, many distinct prompts) the "1 GB" cache grew past 20 GB and the service was killed for memory.
    Without logits_all the rows are never read (sampling runs inside llama.cpp; a cached prompt's last token is
    evaluated again), so one row, which `load_state` broadcasts, is enough."""

    def __init__(self, cache: Any):
        self.cache = cache

    def __getitem__(self, key: Any) -> Any:
        return self.cache[key]

    def __contains__(self, key: Any) -> bool:
        return key in self.cache

    def __setitem__(self, key: Any, state: Any) -> None:
        state.scores = state.scores[-1:].copy()
        self.cache[key] = state


def _n_context_tokens(llama: Any) -> int:
    """How many tokens the context holds after a call: its prompt and what was generated, but the token sampled
    last (0 when this llama-cpp-python does not say)."""
    return int(getattr(llama, "n_tokens", 0) or 0)
