"""The service without HTTP: one agent per catalog over one fair LLM queue, admission of turns, and each turn
stored whole or not at all (the conversation is read, the turn runs on it, and the new state, its version and the
turn are written in one transaction; a failed, cancelled or killed turn writes nothing)."""

from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recagent.agent.conversation import Conversation
from recagent.agent.llm import LLM, make_llm
from recagent.agent.loop import Agent, OnEvent, Reply
from recagent.tools.errors import BusyError, ConfigError, ConflictError, RecagentError
from recagent.tools.store import ConversationRecord, Store

from .config import ServiceConfig
from .llm_queue import FairLLM
from .metrics import Metrics

log = logging.getLogger("recagent.serve")


@dataclass
class TurnInput:
    """What a user sends for one turn: text, and optionally a recording and a photo (bytes, as uploaded)."""

    text: str = ""
    audio: bytes | None = None
    audio_name: str = "recording"
    image: bytes | None = None

    def describe(self) -> dict:
        """What is stored as the turn's request (not the uploaded bytes)."""
        out: dict = {"text": self.text}
        if self.audio is not None:
            out["audio"] = {"name": self.audio_name, "bytes": len(self.audio)}
        if self.image is not None:
            out["image"] = {"bytes": len(self.image)}
        return out


@dataclass
class TurnResult:
    """A finished turn: the agent's reply, and the conversation's version after it (stored only without error)."""

    reply: Reply
    version: int
    stored: bool

    def body(self) -> dict:
        """The `ask --json` form of the reply, with the version and whether it was stored."""
        return {**self.reply.to_dict(), "version": self.version, "stored": self.stored}


class Service:
    """What `recagent serve` runs: agents, the LLM queue, the store, the metrics. Thread-safe."""

    def __init__(self, config: ServiceConfig, store: Store | None = None, llm: LLM | None = None):
        config.check()
        self.config = config
        self.store = store or Store.for_settings(config.settings)
        backend = llm or make_llm(
            config.llm_kind, config.settings, model=config.model, base_url=config.base_url, timeout=config.timeout
        )
        self.metrics = Metrics(
            queue_depth=lambda: self.llm.depth,
            in_progress=lambda: self._pending,
            conversations=self.store.count_conversations,
        )
        self.llm = FairLLM(backend, config.llm_parallel, on_wait=self.metrics.queue_wait.observe)
        self.agents = {name: Agent(self.llm, name, config.settings) for name in config.catalogs}
        self.ready = False
        self.started = time.time()
        self._pending = 0
        self._turn_seconds = 10.0  # a running mean, for Retry-After
        self._lock = threading.Lock()
        self._busy: set[str] = set()  # conversations with a turn running

    # -- lifecycle ------------------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Load every catalog, ranker and the model, and evaluate the planner's fixed prompt; then ready."""
        started = time.perf_counter()
        for agent in self.agents.values():
            agent.warm_up(llm=self.config.warm_up and self.config.llm_kind != "scripted")
        self.ready = True
        log.info("ready in %.1f s (%s)", time.perf_counter() - started, ", ".join(self.agents))

    def agent(self, catalog: str) -> Agent:
        if catalog not in self.agents:
            raise ConfigError(f"this service serves {', '.join(self.agents)}, not {catalog!r}")
        return self.agents[catalog]

    # -- conversations ----------------------------------------------------------------------------------
    def owner(self, user: str) -> str:
        """The pseudonym a user's conversations and feedback are stored under."""
        return self.store.user_key(user)

    def create_conversation(self, owner: str, catalog: str | None = None) -> ConversationRecord:
        agent = self.agent(catalog or self.config.catalogs[0])
        return self.store.create_conversation(owner, agent.catalog_name, agent.new_conversation().to_dict(), "")

    # -- turns ----------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def admitted(self, conversation_id: str) -> Iterator[None]:
        """Hold one of the service's places for a turn on this conversation: a full service raises BusyError (503),
        a conversation with a turn already running raises ConflictError (409)."""
        with self._lock:
            if self._pending >= self.config.max_pending:
                retry = max(1, round(self._turn_seconds * self._pending / self.config.llm_parallel))
                self.metrics.error("busy")
                raise BusyError(f"the service is busy ({self._pending} turns in hand); try again in {retry} s", retry)
            if conversation_id in self._busy:
                raise ConflictError("this conversation has a turn running; wait for its reply")
            self._pending += 1
            self._busy.add(conversation_id)
        started = time.perf_counter()
        try:
            yield
        finally:
            with self._lock:
                self._pending -= 1
                self._busy.discard(conversation_id)
                self._turn_seconds = 0.8 * self._turn_seconds + 0.2 * (time.perf_counter() - started)

    def run_turn(self, record: ConversationRecord, turn: TurnInput, on_event: OnEvent | None = None) -> TurnResult:
        """Run one turn on a stored conversation (admitted by the caller) and store it if it succeeded."""
        agent = self.agent(record.catalog)
        conversation = Conversation.from_dict(record.state)

        def relay(kind: str, value: Any) -> None:  # items leave the service with image URLs, not file paths
            if on_event:
                on_event(kind, [image_url(record.catalog, i) for i in value] if kind == "items" else value)

        with tempfile.TemporaryDirectory(prefix="recagent-turn-") as tmp:
            audio = None
            if turn.audio is not None:  # the speech tools read a file; its name keeps the upload's extension
                audio = str(Path(tmp) / Path(turn.audio_name).name)
                Path(audio).write_bytes(turn.audio)
            reply = agent.turn(conversation, turn.text, on_event=relay, audio=audio, image=turn.image)
        reply.items = [image_url(record.catalog, i) for i in reply.items]
        if reply.error:
            self.metrics.error(reply.error_kind or "RecagentError")
            self.metrics.turn(record.catalog, "error", reply.timings)
            return TurnResult(reply, record.version, stored=False)
        try:
            title = None if record.title else (reply.transcript or turn.text or "a photo")
            version = self.store.commit_turn(
                record.id,
                record.owner,
                record.version,
                conversation.to_dict(),
                turn.describe(),
                reply.to_dict(),
                title=title,
            )
        except RecagentError as exc:  # the database is down, or another replica stored a turn first
            self.metrics.error(exc.__class__.__name__)
            raise
        self.metrics.turn(record.catalog, "clarifying" if reply.clarifying else "ok", reply.timings)
        return TurnResult(reply, version, stored=True)

    def item_image(self, catalog: str, item_id: str) -> Path | None:
        """The image file of a catalog item, if it has one: looked up by id, never by a path from the request."""
        meta = self.agent(catalog).catalog.meta.get(item_id)
        path = Path(meta["_image"]) if meta and meta.get("_image") else None
        return path if path is not None and path.is_file() else None

    # -- feedback -------------------------------------------------------------------------------------
    def feedback(self, record: ConversationRecord, user: str, item: str, kind: str) -> dict:
        """Like, dislike or accept an item shown in this conversation: it steers the conversation (as /like does in
        the REPL) and, unless feedback is off, is stored under the user's pseudonym."""
        conversation = Conversation.from_dict(record.state)
        if item not in conversation.shown:
            raise ConfigError(f"item {item!r} was not shown in this conversation")
        (conversation.dislike if kind == "dislike" else conversation.like)(item)
        version = self.store.update_state(record.id, record.owner, record.version, conversation.to_dict())
        stored = self.config.settings.feedback
        if stored:
            signal = -1 if kind == "dislike" else 1
            self.store.record_feedback(record.owner, item, record.catalog, signal, kind, conversation_id=record.id)
        return {"item": item, "kind": kind, "version": version, "stored": stored}


def image_url(catalog: str, item: dict) -> dict:
    """An item as the service shows it: its image as a URL of the service, not a path on the server."""
    if not item.get("image"):
        return item
    return {**item, "image": f"/items/{catalog}/{item['id']}/image"}
