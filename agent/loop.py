"""The turn: listen (speech) and look (a photo), plan (the LLM picks a tool), act (plain code runs it), write (the LLM
writes one grounded sentence; the items are listed from the tool result). Read `Agent.turn` first."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from langchain_core.runnables import Runnable

from recagent.tools.errors import RecagentError, ReplayError, ToolError, TurnError
from recagent.tools.images import embed_image
from recagent.tools.index import public_metadata
from recagent.tools.models import known_words
from recagent.tools.ranking import Ranked, Ranker, load_ranker
from recagent.tools.ranking.taste import Taste, taste_space
from recagent.tools.retrieval import retrieve_candidates
from recagent.tools.settings import Settings
from recagent.tools.speech import transcribe_audio

from .catalog_view import CatalogView
from .conversation import Conversation
from .langchain_export import as_runnable
from .llm import LLM, Completion
from .planner import PlannerSpec, accepted_args, plan_tool_call, planner_messages
from .rules import code_plan
from .toolbox import SHOWN, CatalogTools, ToolResult
from .understanding import Reading, correct_typos, read_message, to_english, without_instructions
from .writer import item_list, write_intro

MAX_STEPS = 3  # planner calls per turn (a details lookup may precede the search)
NO_MATCH = "I couldn't find anything in the catalog that matches. Could you put it another way?"

# Events for interfaces that show progress: ("status", str), ("transcript", str), ("items", list[dict]),
# ("token", str).
OnEvent = Callable[[str, Any], None]
log = logging.getLogger("recagent")


@dataclass
class ToolCall:
    name: str
    arguments: dict
    seconds: float
    error: str | None = None
    planner: str = "llm"  # who chose this call: "llm", or "code" (agent/rules.py)


@dataclass
class Reply:
    """One turn's outcome: the text, the items shown (all from the catalog), the tool calls and the timings."""

    text: str
    items: list[dict] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    clarifying: bool = False
    error: str | None = None  # set when the turn failed; the conversation is unchanged then
    error_kind: str | None = None  # which RecagentError: LLMError, ImageError, AudioError, TurnError, ...
    removed_mentions: list[str] = field(default_factory=list)  # invented titles taken out of the reply
    transcript: str | None = None  # what was heard, for a spoken turn
    tokens: dict = field(default_factory=dict)  # LLM tokens this turn: llm_calls, prompt, generated

    def to_dict(self) -> dict:
        """The JSON form `ask --json` prints: reply, items, tool_calls, timings, clarifying, error."""
        data = asdict(self)
        return {"reply": data.pop("text"), **data}


class Turn:
    """One turn in progress: its events, its clock and the tool calls made (bookkeeping, no decisions)."""

    STAGES = ("llm_prompt", "llm_generation", "retrieval", "ranking")

    def __init__(self, llm: LLM, on_event: OnEvent | None):
        self.llm, self.emit = llm, on_event or (lambda kind, value: None)
        self.started = time.perf_counter()
        self.timings: dict[str, float] = dict.fromkeys(self.STAGES, 0.0)
        self.calls: list[ToolCall] = []
        # Token counts make speeds comparable across machines (seconds alone differ 1.7x between two of ours).
        self.tokens = {"llm_calls": 0, "prompt": 0, "generated": 0}

    def complete(self, messages: list[dict], **kwargs: Any) -> Completion:
        """An LLM call, its prompt and generation time and its tokens counted."""
        completion = self.llm.complete(messages, **kwargs)
        self.timings["llm_prompt"] += completion.prompt_seconds
        self.timings["llm_generation"] += completion.generation_seconds
        self.tokens["llm_calls"] += 1
        self.tokens["prompt"] += completion.prompt_tokens
        self.tokens["generated"] += completion.completion_tokens
        return completion

    def mark(self, stage: str, since: float | None = None) -> None:
        """Record a stage: the time since `since`, or since the turn started."""
        self.timings[stage] = time.perf_counter() - (self.started if since is None else since)

    def rounded(self) -> dict[str, float]:
        self.mark("total")
        return {k: round(v, 3) for k, v in self.timings.items()}


class Agent:
    """Stateless agent config: one catalog view, one LLM, a ranker. Conversations are passed in and updated by
    `turn`; one agent serves many conversations, from many threads.

    catalog: a CatalogView, or a catalog name or file (opened lazily); ranker: a Ranker, None (the simple scorer), or
    "auto": the catalog's trained head if it has one, loaded on first use; shown: items listed per turn; max_steps:
    planner calls per turn."""

    def __init__(
        self,
        llm: LLM,
        catalog: CatalogView | str = "movies",
        settings: Settings | None = None,
        *,
        ranker: Ranker | None | Literal["auto"] = "auto",
        shown: int = SHOWN,
        max_steps: int = MAX_STEPS,
    ):
        self.settings = settings or (catalog.settings if isinstance(catalog, CatalogView) else Settings.load())
        self.llm = llm
        self.catalog = catalog if isinstance(catalog, CatalogView) else CatalogView.open(catalog, self.settings)
        self.shown = shown
        self.max_steps = max_steps
        self._ranker = ranker
        self._spec: PlannerSpec | None = None
        self._lock = threading.Lock()

    @property
    def catalog_name(self) -> str:
        return self.catalog.name

    def new_conversation(self) -> Conversation:
        return Conversation(catalog=self.catalog_name)

    def as_runnable(self) -> Runnable:
        """The agent as a LangChain Runnable (see langchain_export.as_runnable)."""
        return as_runnable(self)

    def ranker(self) -> Ranker | None:
        """The ranker ("auto": loaded once, on first use); None means the simple scorer ranks."""
        with self._lock:
            if self._ranker == "auto":
                self._ranker = _load_head(self.settings, self.catalog_name)
            return self._ranker

    def warm_up(self, llm: bool = True) -> None:
        """Load what a first turn would (the catalog's metadata and titles, the ranker) and, with `llm`, evaluate the
        planner's fixed prompt once, so that the first user's turn costs what a warm one does."""
        tools = CatalogTools(self.catalog, self.new_conversation(), self.ranker(), self.shown)
        spec = self._planner_spec(tools)
        _ = self.catalog.by_title
        if llm:
            self.llm.complete(
                [{"role": "system", "content": spec.system}, {"role": "user", "content": "User: hi"}],
                schema=spec.schema,
                max_tokens=1,
            )

    # -- one turn -------------------------------------------------------------------------------------
    def turn(
        self,
        conversation: Conversation,
        text: str = "",
        on_event: OnEvent | None = None,
        audio: str | None = None,
        image: str | bytes | None = None,
        feedback: Sequence[tuple[str, int]] | None = None,
    ) -> Reply:
        """Run one user turn: text, a recording to transcribe, a photo (with words saying what to change), or
        a mix. feedback: the user's earlier (item id, +1/-1) events, oldest first (tools.feedback.user_events),
        which with this conversation's likes and dislikes shape the ranking as a taste vector; None (the default,
        and with --no-feedback) leaves taste out. On failure the conversation is left unchanged and the Reply
        carries the error."""
        turn = Turn(self.llm, on_event)
        snapshot = conversation.snapshot()
        transcript = None
        try:
            if audio:
                transcript = self._listen(audio, turn)
                text = f"{text.strip()} {transcript}".strip() if text else transcript
            if image is not None:
                self._look(image, conversation, turn)
                text = text.strip() or "something like this"
            reply = self._respond(conversation, text, turn, photo=image is not None, feedback=feedback)
        except ReplayError:  # a replayed run left its recording: nothing after this can be compared
            conversation.restore(snapshot)
            raise
        except RecagentError as exc:  # a backend down, a bad file, a broken store: said, and nothing changed
            conversation.restore(snapshot)
            return Reply(
                text=f"Sorry, that turn failed: {exc}",
                tool_calls=turn.calls,
                timings=turn.rounded(),
                error=str(exc),
                error_kind=exc.__class__.__name__,
                tokens=turn.tokens,
            )
        except BaseException:  # cancelled (Ctrl-C) or a bug: the conversation is still as it was
            conversation.restore(snapshot)
            raise
        reply.transcript = transcript
        reply.timings = turn.rounded()
        reply.tokens = dict(turn.tokens)
        return reply

    def _listen(self, audio: str, turn: Turn) -> str:
        turn.emit("status", "listening")
        started = time.perf_counter()
        transcript = transcribe_audio(audio, self.settings, catalog=self.catalog_name)
        turn.mark("transcription", started)
        turn.emit("transcript", transcript)
        return transcript

    def _look(self, image: str | bytes, conversation: Conversation, turn: Turn) -> None:
        turn.emit("status", "looking at the photo")
        started = time.perf_counter()
        vector = embed_image(image, self.settings, self.catalog_name)
        source = "photo" if isinstance(image, bytes) else str(image)
        conversation.photo = {"source": source, "vector": [round(float(x), 6) for x in vector]}
        turn.mark("image", started)

    def _respond(
        self,
        conversation: Conversation,
        text: str,
        turn: Turn,
        photo: bool,
        feedback: Sequence[tuple[str, int]] | None = None,
    ) -> Reply:
        """Plan and act until a tool gives items or a question, then write the reply."""
        text = (text or "").strip()
        if not text:
            raise TurnError("empty message")
        understood = self._understood(text)
        if not understood:  # only instructions to the assistant ("print your system prompt"): not followed
            question = f"I can only recommend {self.catalog.profile.noun}s from the catalog. What would you like?"
            conversation.add_user(text)
            conversation.add_assistant(question, [])
            turn.emit("token", question)
            return Reply(text=question, tool_calls=turn.calls, clarifying=True)
        text = understood
        reading = self._read(conversation, text)
        tools = CatalogTools(self.catalog, conversation, self.ranker(), self.shown, use_photo=photo, reading=reading)
        messages = planner_messages(
            self._planner_spec(tools),
            conversation,
            self.catalog,
            text,
            self._photo_looks(conversation) if photo else None,
        )
        conversation.add_user(text)
        for item_id in reading.references:  # "I loved X": X is liked, never shown back, and guides the ranking
            conversation.like(item_id)
        for item_id in reading.disliked:  # "they didn't like X": never shown in this conversation
            conversation.dislike(item_id)
        tools.taste = self._taste(conversation, feedback)
        planned = None if photo or not self.settings.code_plans else self._code_plan(conversation, text, reading)
        result = self._act(tools, messages, text, turn, photo, planned)
        if result.question:
            conversation.add_assistant(result.question, [])
            turn.emit("token", result.question)
            return Reply(text=result.question, tool_calls=turn.calls, clarifying=True)
        items = [item_dict(r) for r in result.items]
        turn.mark("items_on_screen")
        turn.emit("items", items)
        if not items:
            answer = NO_MATCH + (" (" + "; ".join(result.notes) + ")" if result.notes else "")
            conversation.add_assistant(answer, [])
            turn.emit("token", answer)
            return Reply(text=answer, tool_calls=turn.calls)
        turn.emit("status", "writing")
        allowed = conversation.liked + conversation.last_items()
        intro, removed = write_intro(
            turn.complete, text, result.items, self.catalog, allowed, lambda sentence: turn.emit("token", sentence)
        )
        listing = item_list(result.items, self.catalog.profile)
        turn.emit("token", listing)
        conversation.add_assistant(intro + "\n" + listing, [r.id for r in result.items])
        return Reply(text=intro + "\n" + listing, items=items, tool_calls=turn.calls, removed_mentions=removed)

    def _taste(self, conversation: Conversation, feedback: Sequence[tuple[str, int]] | None) -> Taste | None:
        """The user's taste (tools/ranking/taste.py) from their earlier feedback and this conversation's likes and
        dislikes; None without a head or with feedback left out."""
        ranker = self.ranker()
        if ranker is None or feedback is None:
            return None
        events = [*feedback, *((i, 1) for i in conversation.liked), *((i, -1) for i in conversation.disliked)]
        return taste_space(ranker).taste(events) if events else None

    def _act(
        self, tools: CatalogTools, messages: list[dict], text: str, turn: Turn, photo: bool, planned: dict | None
    ) -> ToolResult:
        """Run the call code planned, or plan one with the LLM, up to max_steps times: a tool error or a details
        lookup plans again (with the LLM)."""
        funcs = tools.planner_tools()
        spec = self._planner_spec(tools)
        result: ToolResult | None = None
        for _step in range(self.max_steps):
            by = "code" if planned else "llm"
            if planned:
                plan, raw, planned = planned, json.dumps(planned), None
            else:
                turn.emit("status", "planning")
                plan, raw = plan_tool_call(turn.complete, messages, spec, funcs, text)
            name, args = plan["tool"], plan.get("args") or {}
            if photo and name != "search_catalog":  # a photo turn searches by the photo; the words only refine it
                name, args = (
                    "search_catalog",
                    {"query": str(args.get("query") or text), "filters": args.get("filters") or []},
                )
            started = time.perf_counter()
            try:
                result = funcs[name](**accepted_args(args, funcs[name]))
            except (ToolError, TypeError) as exc:
                result = None
                turn.calls.append(ToolCall(name, args, round(time.perf_counter() - started, 4), str(exc), by))
                messages = messages + [
                    {"role": "assistant", "content": raw},
                    {"role": "user", "content": f"Tool error: {exc}. Choose again."},
                ]
                continue
            turn.calls.append(ToolCall(name, args, round(time.perf_counter() - started, 4), planner=by))
            turn.timings["retrieval"] += result.retrieval_seconds
            turn.timings["ranking"] += result.ranking_seconds
            if result.final or name in CatalogTools.SEARCHES:
                return result
            messages = messages + [
                {"role": "assistant", "content": raw},  # a details lookup: plan again with it
                {"role": "user", "content": f"Result: {result.text}\nNow choose the next tool."},
            ]
        if result is None:
            raise TurnError(f"no usable tool call in {self.max_steps} steps")
        return result  # only details lookups: nothing to show

    def _understood(self, text: str) -> str:
        """The message as the planner and the guards read it: without sentences that instruct the assistant itself,
        in English when it was French, Spanish, German or Italian, and with typos corrected to catalog words."""
        text = without_instructions(text)
        english = to_english(text)
        if english != text:
            return english
        return correct_typos(text, known_words(self.settings), self.catalog.words)

    def _code_plan(self, conversation: Conversation, text: str, reading: Reading) -> dict | None:
        """The tool call plain code makes for this message, or None: the planner decides (agent/rules.py)."""
        profile, english = self.catalog.profile, known_words(self.settings)
        return code_plan(
            text,
            reading,
            [self.catalog.title(i) for i in reading.references + reading.disliked],
            bool(conversation.last_search),
            self.catalog.fields,
            profile.facets,
            profile.kinds,
            lambda word: word in english or word in self.catalog.words,
            profile.noun,
        )

    def _read(self, conversation: Conversation, text: str) -> Reading:
        """What plain code reads in the message (understanding.py): time, negations, constraints taken back, and
        the items named as references; relative time ("older") counts from the items shown last."""
        time_field = self.catalog.profile.time_field
        meta = self.catalog.meta
        years = [meta[i][time_field] for i in conversation.last_items() if time_field in meta.get(i, {})]
        return read_message(
            text,
            self.catalog.fields,
            conversation.constraints,
            [int(y) for y in years if str(y).isdigit()],
            self.catalog.find_reference,
            time_field,
        )

    def _planner_spec(self, tools: CatalogTools) -> PlannerSpec:
        """The planner's prompt and schema: the same for every turn, so built once."""
        if self._spec is None:
            self._spec = PlannerSpec.build(tools.planner_tools(), self.catalog)
        return self._spec

    def _photo_looks(self, conversation: Conversation) -> list[str]:
        """What the photo looks like, in catalog titles: the planner cannot see it."""
        hits = retrieve_candidates(self.catalog.index, photo_vector=conversation.photo["vector"], k=3)
        return [h.title for h in hits]


def _load_head(settings: Settings, catalog: str) -> Ranker | None:
    """The catalog's trained ranking head, or None (the simple scorer), with one line saying why."""
    try:
        ranker = load_ranker(settings, catalog)
    except RecagentError as exc:  # no data folder, a broken checkpoint: rank as before, and say why
        log.warning("ranking head not used (%s): using the simple scorer", exc)
        return None
    if ranker is None:
        log.warning(
            "no ranking-head checkpoint for catalog '%s': using the simple scorer "
            "(`recagent train-ranker` trains one for movies)",
            catalog,
        )
    return ranker


def item_dict(r: Ranked) -> dict:
    """An item as `ask --json` and the events give it: id, title, score, its fields, its image."""
    out = {"id": r.id, "title": r.title, "score": round(r.score, 4), **public_metadata(r.metadata)}
    if r.metadata.get("_image"):
        out["image"] = r.metadata["_image"]
    return out
