"""The service without HTTP: one agent per catalog over one fair LLM queue, admission of turns, and each turn
stored whole or not at all (the conversation is read, the turn runs on it, and the new state, its version and the
turn are written in one transaction; a failed, cancelled or killed turn writes nothing)."""

from __future__ import annotations

import contextlib
import logging
import re
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
from recagent.tools.images import image_encoder
from recagent.tools.models import text_embedder
from recagent.tools.store import ConversationRecord, Store

from .config import ServiceConfig
from .llm_queue import FairLLM
from .metrics import Metrics

log = logging.getLogger("recagent.serve")
BUSY_CONVERSATION = "this conversation has a turn running; wait for its reply"


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
            conversations=self._conversations_stored,
        )
        self.llm = FairLLM(backend, config.llm_parallel, on_wait=self.metrics.queue_wait.observe)
        self.agents = {name: Agent(self.llm, name, config.settings) for name in config.catalogs}
        self.ready = False
        self.problems: list[str] = []  # what warm-up could not load (a catalog not indexed...): /readyz says 503
        self.started = time.time()
        self._pending = 0
        self._turn_seconds = 10.0  # a running mean, for Retry-After
        self._lock = threading.Lock()
        self._busy: set[str] = set()  # conversations with a turn running

    # -- lifecycle ------------------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Load every catalog, ranker and the model, and evaluate the planner's fixed prompt; then ready."""
        started = time.perf_counter()
        if self.config.torch_threads:
            import torch  # noqa: PLC0415 (heavy: loaded when the service warms up, not when the command starts)

            torch.set_num_threads(self.config.torch_threads)
        for name, agent in self.agents.items():
            try:
                agent.warm_up(llm=False)
            except RecagentError as exc:  # not ready until it is fixed (and the service restarted)
                self.problems.append(f"{name}: {self.public(str(exc))}")
                log.error("catalog %s cannot serve turns: %s", name, exc)
                continue
            try:
                agent.warm_up(llm=self.config.warm_up and self.config.llm_kind != "scripted")
            except RecagentError as exc:  # the LLM did not answer: its turns say why until it comes back
                log.warning("warm-up call to the LLM failed: %s", exc)
        self._load_encoders()
        self.ready = True
        log.info("ready in %.1f s (%s)", time.perf_counter() - started, ", ".join(self.agents))

    def _load_encoders(self) -> None:
        """Load the text embedder (the first words not in the embedding cache would otherwise wait seconds for it) and
        the image encoder of each catalog with photos (half a second on the first photo)."""
        try:
            text_embedder(self.config.settings)
            for name, agent in self.agents.items():
                if any(meta.get("_image") for meta in agent.catalog.meta.values()):
                    image_encoder(self.config.settings, name)
        except RecagentError as exc:  # a missing model fails the turns that need it, with this message
            log.warning("not loaded at start: %s", exc)

    def _conversations_stored(self) -> float:
        """The gauge at /metrics; NaN while the database is unavailable, so that the scrape still answers."""
        try:
            return self.store.count_conversations()
        except RecagentError:
            return float("nan")

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
                busy = BusyError(f"the service is busy ({self._pending} turns in hand); try again in {retry} s", retry)
                raise self.count_error(busy, "busy")
            if conversation_id in self._busy:
                raise ConflictError(BUSY_CONVERSATION)
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
                audio = str(Path(tmp) / f"upload{upload_suffix(turn.audio_name)}")
                Path(audio).write_bytes(turn.audio)
            # the owner's stored likes and dislikes shape the ranking (tools/ranking/taste.py), unless feedback is off
            feedback = self.store.user_events(record.owner, record.catalog) if self.config.settings.feedback else None
            reply = agent.turn(
                conversation, turn.text, on_event=relay, audio=audio, image=turn.image, feedback=feedback
            )
        reply.items = [image_url(record.catalog, i) for i in reply.items]
        if reply.error:  # said of the file the user sent, and without the server's own paths
            name = upload_name(turn.audio_name)
            reply.error = self.public(reply.error.replace(audio, name) if audio else reply.error)
            reply.text = self.public(reply.text.replace(audio, name) if audio else reply.text)
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
            self.count_error(exc)
            raise
        self.metrics.turn(record.catalog, "clarifying" if reply.clarifying else "ok", reply.timings)
        return TurnResult(reply, version, stored=True)

    def count_error(self, exc: RecagentError, kind: str | None = None) -> RecagentError:
        """Count an error at /metrics once, wherever it is raised and however many layers it passes through."""
        if not getattr(exc, "counted", False):
            self.metrics.error(kind or exc.__class__.__name__)
            exc.counted = True  # type: ignore[attr-defined]
        return exc

    def public(self, message: str) -> str:
        """A message as a client may see it: the database and the server's folders are not named."""
        where = self.store.where
        message = message.replace(f"the database {where}", "the database").replace(where, "the database")
        settings = self.config.settings
        folders = [(settings.home, "HOME"), (settings.data, "DATA"), (settings.cache, "CACHE")]
        for folder, name in sorted(((str(f), n) for f, n in folders if f), key=lambda f: -len(f[0])):
            message = message.replace(folder, name)
        return message

    def item_image(self, catalog: str, item_id: str) -> Path | None:
        """The image file of a catalog item, if it has one: looked up by id, never by a path from the request."""
        meta = self.agent(catalog).catalog.meta.get(item_id)
        path = Path(meta["_image"]) if meta and meta.get("_image") else None
        return path if path is not None and path.is_file() else None

    # -- feedback -------------------------------------------------------------------------------------
    def feedback(self, record: ConversationRecord, user: str, item: str, kind: str) -> dict:
        """Like, dislike or accept an item shown in this conversation: it steers the conversation (as /like does in
        the REPL) and, unless feedback is off, is stored under the user's pseudonym. While a turn of the conversation
        runs it is refused (ConflictError): storing it would make that turn's commit fail."""
        with self._lock:
            if record.id in self._busy:
                raise ConflictError(BUSY_CONVERSATION)
            self._busy.add(record.id)
        try:
            return self._feedback(record, item, kind)
        finally:
            with self._lock:
                self._busy.discard(record.id)

    def _feedback(self, record: ConversationRecord, item: str, kind: str) -> dict:
        record = self.store.get_conversation(record.id, record.owner) or record  # as it is now, not as first read
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


def upload_suffix(name: str) -> str:
    """The extension of an uploaded file's name, safe to use in a file name of the server's (or none)."""
    suffix = re.sub(r"[^a-z0-9]", "", Path(name).suffix.lower())[:8]
    return f".{suffix}" if suffix else ""


def upload_name(name: str) -> str:
    """An uploaded file's name as messages give it: its last part, printable, or "the recording"."""
    base = re.sub(r"[\x00-\x1f\x7f]", "", name.replace("\\", "/").rsplit("/", 1)[-1]).strip()
    return base if base.strip(".") else "the recording"


def image_url(catalog: str, item: dict) -> dict:
    """An item as the service shows it: its image as a URL of the service, not a path on the server."""
    if not item.get("image"):
        return item
    return {**item, "image": f"/items/{catalog}/{item['id']}/image"}
