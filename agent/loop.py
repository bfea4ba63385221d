"""The turn loop: the LLM plans a tool call, plain code runs it, and the LLM writes a short grounded reply."""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from recagent.prompts import load_prompt
from recagent.tools.images import ImageError, embed_image
from recagent.tools.index import CatalogIndex, StoreError, public_metadata
from recagent.tools.models import MissingModelError
from recagent.tools.ranking import Ranked
from recagent.tools.settings import Settings
from recagent.tools.speech import AudioError, transcribe_audio

from .conversation import Conversation
from .llm import LLM, LLMError, parse_json_object
from .toolbox import Catalog, CatalogTools, ToolError, ToolResult, norm_title, tool_schemas

MAX_STEPS = 3  # planner calls per turn (a details lookup may precede the search)
HISTORY_TURNS = 2  # earlier user messages shown to the planner


@dataclass
class ToolCall:
    name: str
    arguments: dict
    seconds: float
    error: str | None = None


@dataclass
class Reply:
    """One turn's outcome: the text, the items shown (all from the catalog), the tool calls and the timings."""

    text: str
    items: list[dict] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    clarifying: bool = False
    error: str | None = None  # set when the turn failed; the conversation is unchanged then
    removed_mentions: list[str] = field(default_factory=list)  # invented titles taken out of the reply
    transcript: str | None = None  # what was heard, for a spoken turn

    def to_dict(self) -> dict:
        """The JSON form `ask --json` prints: reply, items, tool_calls, timings, clarifying, error."""
        data = asdict(self)
        return {"reply": data.pop("text"), **data}


class TurnError(Exception):
    """The turn could not be completed; the conversation was left as it was."""


# Events for interfaces that show progress: ("items", list[dict]), ("token", str), ("status", str).
OnEvent = Callable[[str, object], None]


class Agent:
    """Stateless agent config: one catalog, one LLM. Conversations are passed in and updated by `turn`."""

    def __init__(self, llm: LLM, catalog: str = "movies", settings: Settings | None = None,
                 max_steps: int = MAX_STEPS):
        self.llm = llm
        self.catalog_name = catalog
        self.settings = settings or Settings.load()
        self.max_steps = max_steps
        self._catalog: Catalog | None = None
        self._spec: tuple[str, dict] | None = None
        self._lock = threading.Lock()

    # -- shared, lazily built catalog view -----------------------------------------------------------
    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            with self._lock:
                if self._catalog is None:
                    self._catalog = Catalog(CatalogIndex(self.catalog_name, self.settings))
        return self._catalog

    def new_conversation(self) -> Conversation:
        return Conversation(catalog=self.catalog_name)

    def as_runnable(self):
        """The agent as a LangChain Runnable: {"text", "conversation"?: dict} -> {"reply", "items", ...,
        "conversation": dict}, so it composes with LangChain chains while the caller keeps the state."""
        from langchain_core.runnables import RunnableLambda

        def run(inputs: dict) -> dict:
            conversation = Conversation.from_dict(inputs.get("conversation") or {"catalog": self.catalog_name})
            reply = self.turn(conversation, inputs["text"])
            return {**reply.to_dict(), "conversation": conversation.to_dict()}

        return RunnableLambda(run, name="recagent")

    def _planner_spec(self, tools: dict) -> tuple[str, dict]:
        """The planner's system prompt and output schema: the same for every turn, so built once."""
        if self._spec is None:
            schemas = tool_schemas(tools)
            self._spec = (self._planner_system(tools, schemas), _plan_schema(schemas))
        return self._spec

    def _planner_system(self, tools: dict, schemas: dict) -> str:
        lines = []
        for name, func in tools.items():
            args = ", ".join(f"{k}: {_type_name(v)}" for k, v in schemas[name]["properties"].items())
            lines.append(f"- {name}({args}): {func.__doc__.strip()}")
        fields = []
        for key, info in self.catalog.fields.items():
            if key in ("title", "tags", "imdb_id", "tmdb_id", "ratings", "rating"):
                continue
            values = info.get("values")
            fields.append(f"{key} ({', '.join(values[:25])})" if values and len(values) <= 25 else
                          f"{key} ({info['type']})")
        kind, noun = ("movie", "movie") if self.catalog_name == "movies" else ("shopping", "item")
        return load_prompt("planner").format(kind=kind, noun=noun, tools="\n".join(lines), fields="; ".join(fields))

    # -- one turn -------------------------------------------------------------------------------------
    def turn(self, conversation: Conversation, text: str = "", on_event: OnEvent | None = None,
             audio: str | None = None, image: str | bytes | None = None) -> Reply:
        """Run one user turn: text, a recording to transcribe, a photo (with words saying what to change), or
        a mix. On failure the conversation is left unchanged and the Reply carries the error."""
        emit = on_event or (lambda kind, value: None)
        snapshot = conversation.to_dict()
        started = time.perf_counter()
        timings = {"llm_prompt": 0.0, "llm_generation": 0.0, "retrieval": 0.0, "ranking": 0.0}
        calls: list[ToolCall] = []
        transcript = None
        try:
            if audio:
                emit("status", "listening")
                t0 = time.perf_counter()
                transcript = transcribe_audio(audio, self.settings)
                timings["transcription"] = time.perf_counter() - t0
                emit("transcript", transcript)
                text = f"{text.strip()} {transcript}".strip() if text else transcript
            if image is not None:
                emit("status", "looking at the photo")
                t0 = time.perf_counter()
                vector = embed_image(image, self.settings, self.catalog_name)
                source = "photo" if isinstance(image, bytes) else str(image)
                conversation.photo = {"source": source, "vector": [round(float(x), 6) for x in vector]}
                timings["image"] = time.perf_counter() - t0
                text = text.strip() or "something like this"
            reply = self._turn(conversation, text, emit, timings, calls, started, use_photo=image is not None)
            reply.transcript = transcript
        except (LLMError, TurnError, StoreError, AudioError, ImageError, MissingModelError) as exc:
            conversation.__dict__.update(Conversation.from_dict(snapshot).__dict__)
            timings["total"] = time.perf_counter() - started
            return Reply(text=f"Sorry, that turn failed: {exc}", tool_calls=calls, timings=_rounded(timings),
                         error=str(exc))
        except BaseException:  # cancelled (Ctrl-C) or a bug: the conversation is still as it was
            conversation.__dict__.update(Conversation.from_dict(snapshot).__dict__)
            raise
        timings["total"] = time.perf_counter() - started
        reply.timings = _rounded(timings)
        return reply

    def _llm(self, messages, timings, **kwargs):
        completion = self.llm.complete(messages, **kwargs)
        timings["llm_prompt"] += completion.prompt_seconds
        timings["llm_generation"] += completion.generation_seconds
        return completion

    def _turn(self, conversation, text, emit, timings, calls, started, use_photo: bool = False) -> Reply:
        text = (text or "").strip()
        if not text:
            raise TurnError("empty message")
        funcs = CatalogTools(self.catalog, conversation, use_photo=use_photo).planner_tools()
        system, schema = self._planner_spec(funcs)
        messages = [{"role": "system", "content": system},
                    {"role": "user", "content": self._state(conversation) + self._photo_note(conversation, use_photo)
                     + f"User: {text}"}]
        conversation.add_user(text)
        result: ToolResult | None = None
        for _step in range(self.max_steps):
            emit("status", "planning")
            plan, raw = self._plan(messages, schema, timings, funcs, text)
            name, args = plan["tool"], plan.get("args") or {}
            if use_photo and name != "search_catalog":
                # A photo turn always searches by the photo; the words only refine it.
                name, args = "search_catalog", {"query": str(args.get("query") or text), "filters": args.get("filters") or []}
            t0 = time.perf_counter()
            try:
                result = funcs[name](**_clean_args(args, funcs[name]))
                calls.append(ToolCall(name, args, round(time.perf_counter() - t0, 4)))
            except (ToolError, TypeError) as exc:
                calls.append(ToolCall(name, args, round(time.perf_counter() - t0, 4), error=str(exc)))
                messages += [{"role": "assistant", "content": raw},
                             {"role": "user", "content": f"Tool error: {exc}. Choose again."}]
                result = None
                continue
            timings["retrieval"] += result.retrieval_seconds
            timings["ranking"] += result.ranking_seconds
            if result.question or result.items or name in ("search_catalog", "similar_items", "refine_last"):
                break
            messages += [{"role": "assistant", "content": raw},  # a details lookup: plan again with it
                         {"role": "user", "content": f"Result: {result.text}\nNow choose the next tool."}]
        if result is None:
            raise TurnError(f"no usable tool call in {self.max_steps} steps")
        if result.question:
            conversation.add_assistant(result.question, [])
            emit("token", result.question)
            return Reply(text=result.question, tool_calls=calls, clarifying=True)

        items = [_item_dict(r) for r in result.items]
        timings["items_on_screen"] = time.perf_counter() - started
        emit("items", items)
        if not items:
            answer = "I couldn't find anything in the catalog that matches. Could you put it another way?"
            if result.notes:
                answer += " (" + "; ".join(result.notes) + ")"
            conversation.add_assistant(answer, [])
            emit("token", answer)
            return Reply(text=answer, tool_calls=calls)

        emit("status", "writing")
        writer = [{"role": "system", "content": load_prompt("reply")},
                  {"role": "user", "content": f"Request: {text}\nPicks: " + "; ".join(
                      r.title for r in result.items)}]  # titles only: prompt tokens are the slow part on a CPU
        allowed = conversation.liked + conversation.last_items()
        pending: list[str] = []
        kept: list[str] = []
        removed: list[str] = []

        def flush(final: bool = False) -> None:
            # Stream sentence by sentence, each grounded before it is shown.
            text_so_far = "".join(pending)
            cut = max(text_so_far.rfind(". "), text_so_far.rfind("! "), text_so_far.rfind("? "))
            if final or cut >= 0:
                done = text_so_far if final else text_so_far[: cut + 1]
                pending[:] = [] if final else [text_so_far[cut + 2:]]
                good, bad = ground_text(done, result.items, self.catalog, allowed_ids=allowed)
                removed.extend(bad)
                if good:
                    kept.append(good)
                    emit("token", good)

        def on_token(token: str) -> None:
            pending.append(token)
            flush()

        self._llm(writer, timings, max_tokens=40, on_token=on_token)
        flush(final=True)
        intro = " ".join(kept).strip()
        if not intro:
            intro = "Here are some picks:"
            emit("token", intro)
        listing = "\n".join(f"{n}. {r.title}: {reason(r)}" for n, r in enumerate(result.items, 1))
        emit("token", listing)
        reply_text = intro + "\n" + listing
        conversation.add_assistant(reply_text, [r.id for r in result.items])
        return Reply(text=reply_text, items=items, tool_calls=calls, removed_mentions=removed)

    def _plan(self, messages, schema, timings, funcs, user_text) -> tuple[dict, str]:
        """A valid tool call from the LLM: constrained output, then repair, then one retry."""
        last_error = ""
        for attempt in range(2):
            completion = self._llm(messages, timings, schema=schema, max_tokens=120)
            raw = completion.text
            try:
                plan = parse_json_object(raw)
                if plan.get("tool") not in funcs or not isinstance(plan.get("args", {}), dict):
                    raise ValueError(f"unknown tool {plan.get('tool')!r}")
                return plan, raw
            except ValueError as exc:
                last_error = str(exc)
                messages = messages + [{"role": "assistant", "content": raw},
                                       {"role": "user", "content": f"That was not a valid tool call ({exc}). "
                                                                   "Answer with the JSON only."}]
        # Still broken: fall back to searching for what the user said, so the turn goes on.
        return {"tool": "search_catalog", "args": {"query": user_text, "filters": []},
                "repaired": last_error}, json.dumps({"tool": "search_catalog", "args": {"query": user_text}})

    def _photo_note(self, conversation: Conversation, use_photo: bool) -> str:
        """What the photo looks like, in catalog words: the planner cannot see it."""
        if not use_photo:
            return ""
        from recagent.tools.retrieval import retrieve_candidates

        hits = retrieve_candidates(self.catalog.index, photo_vector=conversation.photo["vector"], k=3)
        looks = "; ".join(h.title for h in hits)
        return f"The user attached a photo; it looks most like: {looks}.\n" if looks else ""

    def _state(self, conversation: Conversation) -> str:
        """The compact state the planner needs: recent requests, last search, items shown with years."""
        lines = []
        earlier = [m.content for m in conversation.messages if m.role == "user"][-HISTORY_TURNS:]
        if earlier:
            lines.append("Earlier requests: " + " / ".join(f'"{e[:120]}"' for e in earlier) + ".")
        last = conversation.last_items()
        if last:
            meta = self.catalog.meta
            shown = " ".join(f"{n}. {meta.get(i, {}).get('title', i)}" for n, i in enumerate(last, 1))
            years = [meta[i]["year"] for i in conversation.shown if i in meta and "year" in meta[i]]
            span = f" Oldest {min(years)}, newest {max(years)}." if years else ""
            if years:  # give the small model the numbers it would otherwise have to work out
                span += f" (older: year<{min(years)}; newer: year>{max(years)})"
            search = conversation.last_search
            lines.append(f"Last search: {search.get('tool')} {json.dumps(search.get('args', {}))}, filters "
                         f"{json.dumps(conversation.constraints)}. Shown: {shown}.{span}")
        return "\n".join(lines) + ("\n" if lines else "")


def _type_name(schema: dict) -> str:
    if schema.get("type") == "array":
        return f"list[{_type_name(schema.get('items', {}))}]"
    return {"string": "str", "integer": "int", "number": "float", "boolean": "bool"}.get(schema.get("type"), "any")


def _plan_schema(schemas: dict[str, dict]) -> dict:
    """JSON schema for one tool call: {"tool": NAME, "args": {...}}, one alternative per tool."""
    return {"anyOf": [{"type": "object", "properties": {"tool": {"const": name}, "args": schema},
                       "required": ["tool", "args"]} for name, schema in schemas.items()]}


def _clean_args(args: dict, func) -> dict:
    """Keep only the arguments the function takes (LLMs add extra keys)."""
    import inspect

    params = inspect.signature(func).parameters
    return {k: v for k, v in args.items() if k in params}


def _item_dict(r: Ranked) -> dict:
    out = {"id": r.id, "title": r.title, "score": round(r.score, 4), **public_metadata(r.metadata)}
    if r.metadata.get("_image"):
        out["image"] = r.metadata["_image"]
    return out


def reason(item: Ranked) -> str:
    """A one-line reason drawn from the item's own data."""
    meta = item.metadata
    parts = []
    if meta.get("genres"):
        parts.append(", ".join(meta["genres"][:3]).lower())
    if meta.get("articleType"):
        parts.append(f"{meta.get('baseColour', '')} {meta['articleType']} for {meta.get('gender', '')}".strip().lower())
    if meta.get("tags"):
        parts.append("known for " + ", ".join(meta["tags"][:3]))
    if meta.get("rating") and meta.get("ratings", 0) >= 10:
        parts.append(f"rated {meta['rating']:.1f}/5 by {meta['ratings']} MovieLens users")
    return "; ".join(parts) or "matches your request"


_TITLE_WITH_YEAR = re.compile(r"([A-Z0-9][^.!?\n\"]{1,80}?) \((\d{4})\)")


def ground_text(text: str, items: list[Ranked], catalog: Catalog,
                allowed_ids: list[str] = ()) -> tuple[str, list[str]]:
    """Remove sentences that name a title which is not among the items shown (or that the user named);
    a sentence cut off by the token limit goes too. Returns the text and the titles taken out."""
    allowed = {norm_title(r.title) for r in items}
    allowed |= {norm_title(catalog.meta[i].get("title", "")) for i in allowed_ids if i in catalog.meta}
    removed = []
    text = text.strip().strip('"')
    if text and text[-1] not in ".!?":
        text = text[: max(text.rfind("."), text.rfind("!"), text.rfind("?")) + 1]
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", text) if s]
    kept = []
    for sentence in sentences:
        named = _named_titles(sentence, catalog)
        bad = [t for t in named if norm_title(t) not in allowed]
        if bad:
            removed += bad
        else:
            kept.append(sentence)
    return " ".join(kept), removed


def _named_titles(sentence: str, catalog: Catalog) -> list[str]:
    """Titles a sentence names: 'X (1999)' patterns, quoted names, and catalog titles of two or more words."""
    found = [f"{m.group(1).strip()} ({m.group(2)})" for m in _TITLE_WITH_YEAR.finditer(sentence)]
    found += re.findall(r"[\"“]([^\"”]{2,80})[\"”]", sentence)
    lowered = " " + re.sub(r"[^a-z0-9]+", " ", sentence.lower()) + " "
    for key in catalog.by_title:
        if key.count(" ") >= 1 and len(key) >= 8 and f" {key} " in lowered:
            found.append(key)
    return found


def _rounded(timings: dict) -> dict:
    return {k: round(v, 3) for k, v in timings.items()}
