"""The fair LLM queue: calls from every conversation are served first come, first served, `parallel` at a time.

The in-process model runs one call at a time; a server with slots runs several. A thread that waits keeps its
place: no conversation can starve another (a plain lock is not fair). Waiting time and queue depth are measured.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from recagent.agent.llm import LLM, Completion, OnToken


class FairLLM:
    """An LLM whose calls queue in arrival order; `on_wait(seconds)` hears how long each call waited."""

    def __init__(self, llm: LLM, parallel: int = 1, on_wait: Callable[[float], None] | None = None):
        self.inner = llm
        self.name = llm.name
        self.parallel = parallel
        self.on_wait = on_wait
        self._cond = threading.Condition()
        self._waiting: deque[object] = deque()
        self._running = 0

    @property
    def depth(self) -> int:
        """Calls waiting for their turn."""
        return len(self._waiting)

    def complete(
        self,
        messages: list[dict],
        *,
        schema: dict | None = None,
        max_tokens: int = 256,
        on_token: OnToken | None = None,
    ) -> Completion:
        ticket = object()
        started = time.perf_counter()
        with self._cond:
            self._waiting.append(ticket)
            while self._waiting[0] is not ticket or self._running >= self.parallel:
                self._cond.wait()
            self._waiting.popleft()
            self._running += 1
            self._cond.notify_all()
        if self.on_wait:
            self.on_wait(time.perf_counter() - started)
        try:
            return self.inner.complete(messages, schema=schema, max_tokens=max_tokens, on_token=on_token)
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()
