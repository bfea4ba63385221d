"""A turn streamed: it runs on a thread of its own and its events reach the event loop through a queue."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from recagent.tools.errors import RecagentError
from recagent.tools.store import ConversationRecord

from .core import Service, TurnInput

log = logging.getLogger("recagent.serve")


# RecagentError kinds -> HTTP status (anything else a RecagentError: 503, a backend's trouble)
STATUS = {
    "ConfigError": 400,
    "ImageError": 400,
    "AudioError": 400,
    "TurnError": 400,
    "ToolError": 400,
    "ConflictError": 409,
    "StoreConflict": 409,
    "BusyError": 503,
}


def error_status(kind: str | None) -> int:
    return STATUS.get(kind or "", 503)


def error_body(message: str, kind: str) -> dict:
    """Every error the service sends: one clear line and its kind."""
    return {"error": message, "kind": kind}


def start_streamed_turn(
    service: Service,
    record: ConversationRecord,
    turn: TurnInput,
    admitted: contextlib.ExitStack,
    on_failure: Callable[[], None] | None = None,
) -> asyncio.Queue[tuple[str, Any]]:
    """Start the turn on a thread of its own; its events (status, transcript, items, token..., then `reply` or
    `error`) arrive on the queue returned. The turn runs to its end even when the client goes away, so it is stored
    whole or, if it fails, not at all; its place in the service is given back when it ends, after `on_failure` is
    called for a turn that was not stored."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def on_event(kind: str, value: Any) -> None:
        loop.call_soon_threadsafe(events.put_nowait, (kind, value))

    def work() -> None:
        with admitted:
            try:
                result = service.run_turn(record, turn, on_event)
                final = ("reply" if result.stored else "error", result.body())
            except RecagentError as exc:
                final = ("error", error_body(service.public(str(exc)), exc.__class__.__name__))
            except Exception:  # a bug: said without details, logged with them
                log.exception("turn failed")
                final = ("error", error_body("internal error", "InternalError"))
            if final[0] == "error" and on_failure is not None:
                on_failure()
        loop.call_soon_threadsafe(events.put_nowait, final)

    threading.Thread(target=work, name=f"turn-{record.id}", daemon=True).start()
    return events


async def until_final(events: asyncio.Queue[tuple[str, Any]]) -> AsyncIterator[tuple[str, Any]]:
    """The queued events, up to and including the turn's last one (`reply` or `error`)."""
    while True:
        kind, value = await events.get()
        yield kind, value
        if kind in ("reply", "error"):
            return
