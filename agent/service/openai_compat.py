"""The OpenAI-compatible endpoint: `POST /v1/chat/completions` (streamed or not) and `GET /v1/models`.

A client sends the whole, growing list of messages each time; recagent keeps the conversation (with its shown items,
likes and filters) in the database and finds it again from the messages before the last one, so "something older"
or "not the first one" work as in the REPL. The model name picks the catalog (`recagent-movies`, `recagent-fashion`;
`recagent` is the first served). The last user message may carry an image (`image_url` with a data URL) and speech
(`input_audio`, base64). The items come back in the text and, machine-readable, in the extra field `recagent`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from recagent.tools.errors import RecagentError
from recagent.tools.store import ConversationRecord

from .core import Service, TurnInput, TurnResult
from .events import error_status, start_streamed_turn, until_final

PREFIX = "recagent"
_DATA_URL = re.compile(r"^data:(image/[\w.+-]+);base64,(.*)$", re.S)


class ChatMessage(BaseModel):
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    model: str = Field(PREFIX, description="recagent-CATALOG (the catalog to recommend from), or recagent.")
    messages: list[ChatMessage] = Field(..., min_length=1)
    stream: bool = False
    user: str | None = None  # accepted and ignored: the API key says who the user is


def model_names(service: Service) -> list[str]:
    return [f"{PREFIX}-{name}" for name in service.agents]


def catalog_of(service: Service, model: str) -> str:
    """The catalog a model name asks for; 404 for a model this service does not serve."""
    if model == PREFIX:
        return service.config.catalogs[0]
    name = model.removeprefix(f"{PREFIX}-")
    if model.startswith(f"{PREFIX}-") and name in service.agents:
        return name
    raise HTTPException(
        404, f"model {model!r} does not exist here; this service serves {', '.join(model_names(service))}"
    )


def text_of(message: ChatMessage) -> str:
    """The text parts of a message, joined."""
    if isinstance(message.content, str):
        return message.content
    return " ".join(p.get("text", "") for p in message.content or [] if p.get("type") == "text").strip()


def turn_of(message: ChatMessage, limit: int) -> TurnInput:
    """The last user message as a turn: its text, an image from an image_url data URL, speech from input_audio."""
    turn = TurnInput(text=text_of(message))
    for part in message.content if isinstance(message.content, list) else []:
        if part.get("type") == "image_url":
            url = (part.get("image_url") or {}).get("url", "")
            match = _DATA_URL.match(url)
            if not match:
                raise HTTPException(400, "an image must be sent as a data URL (data:image/...;base64,...)")
            turn.image = _decode(match.group(2), "image", limit)
        elif part.get("type") == "input_audio":
            audio = part.get("input_audio") or {}
            turn.audio = _decode(audio.get("data", ""), "input_audio", limit)
            turn.audio_name = f"speech.{re.sub(r'[^a-z0-9]', '', str(audio.get('format', 'wav')).lower()) or 'wav'}"
    if not turn.text.strip() and turn.image is None and turn.audio is None:
        raise HTTPException(400, "the last user message is empty")
    return turn


def _decode(data: str, what: str, limit: int) -> bytes:
    if len(data) * 3 // 4 > limit:
        raise HTTPException(413, f"the {what} is over {limit // 2**20} MB")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(400, f"the {what} is not valid base64") from None


def thread_key(owner: str, model: str, messages: list[ChatMessage]) -> str:
    """Which conversation a list of messages continues: a hash of its owner, model and the messages' text."""
    blob = json.dumps(
        [owner, model, [[m.role, text_of(m).strip()] for m in messages if m.role in ("user", "assistant")]],
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def extra(result: TurnResult, record: ConversationRecord) -> dict:
    """The machine-readable part of a reply: the items (with their fields), the conversation and the timings."""
    reply = result.reply
    return {
        "conversation_id": record.id,
        "version": result.version,
        "items": reply.items,
        "clarifying": reply.clarifying,
        "transcript": reply.transcript,
        "removed_mentions": reply.removed_mentions,
        "tool_calls": [c.__dict__ for c in reply.tool_calls],
        "timings": reply.timings,
    }


def router(service: Service, user: Any) -> APIRouter:
    """The /v1 routes; `user` is the dependency that says who calls."""
    api = APIRouter(prefix="/v1", tags=["openai"])

    @api.get("/models")
    def models(name: str = Depends(user)) -> dict:  # a chat UI checks its key here: a wrong one is told at once
        now = int(service.started)
        return {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": now, "owned_by": "recagent"} for m in model_names(service)
            ],
        }

    @api.post("/chat/completions")
    async def chat_completions(body: ChatRequest, name: str = Depends(user)) -> Any:
        catalog = catalog_of(service, body.model)
        if body.messages[-1].role != "user":
            raise HTTPException(400, "the last message must be the user's")
        turn = turn_of(body.messages[-1], service.config.max_upload_bytes)
        owner = service.owner(name)
        record, made = conversation_for(service, owner, catalog, thread_key(owner, body.model, body.messages[:-1]))

        def discard() -> None:  # a conversation made for a request whose turn is not stored goes again
            if made:
                with contextlib.suppress(RecagentError):
                    service.store.delete_conversation(record.id, owner)

        stack = contextlib.ExitStack()
        try:
            stack.enter_context(service.admitted(record.id))
        except RecagentError:  # busy (503), or a turn of this conversation is running (409)
            discard()
            raise
        if body.stream:
            events = start_streamed_turn(service, record, turn, stack, on_failure=discard)
            return StreamingResponse(chunks(service, record, events, body), media_type="text/event-stream")
        try:
            with stack:
                result = await asyncio.to_thread(service.run_turn, record, turn)
        except BaseException:
            discard()
            raise
        if not result.stored:
            discard()
        return completion(service, record, result, body)

    return api


def conversation_for(service: Service, owner: str, catalog: str, key: str) -> tuple[ConversationRecord, bool]:
    """The stored conversation these messages continue, or a new one; and whether it was made now."""
    found = service.store.find_thread(key)
    record = service.store.get_conversation(found, owner) if found else None
    if record is not None and record.catalog == catalog:
        return record, False
    return service.create_conversation(owner, catalog), True


def remember(service: Service, record: ConversationRecord, body: ChatRequest, *replies: str) -> None:
    """After a stored turn: the messages the client will send next (these plus the reply, as the client has its
    text) lead back here."""
    for text in dict.fromkeys(replies):
        following = [*body.messages, ChatMessage(role="assistant", content=text)]
        service.store.remember_thread(thread_key(record.owner, body.model, following), record.id)


def completion(service: Service, record: ConversationRecord, result: TurnResult, body: ChatRequest) -> JSONResponse:
    if not result.stored:
        reply = result.reply
        status = error_status(reply.error_kind)
        error = {"message": reply.error, "type": reply.error_kind, "param": None, "code": status}
        return JSONResponse({"error": error}, status)
    remember(service, record, body, result.reply.text)
    return JSONResponse(
        {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": result.reply.text}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            PREFIX: extra(result, record),
        }
    )


async def chunks(
    service: Service, record: ConversationRecord, events: asyncio.Queue[tuple[str, Any]], body: ChatRequest
) -> AsyncIterator[bytes]:
    """chat.completion.chunk events: the items as soon as they are known (in `recagent`), the reply's text as it
    comes, a last chunk with finish_reason and everything machine-readable, then [DONE]; a failed turn sends an
    OpenAI error object (the official client raises it)."""
    chunk_id, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())

    def chunk(delta: dict, finish: str | None = None, more: dict | None = None) -> bytes:
        data = {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": body.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **({PREFIX: more} if more else {}),
        }
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()

    yield chunk({"role": "assistant", "content": ""})
    sent = ""
    async for kind, value in until_final(events):
        if kind == "items":
            yield chunk({}, more={"items": value})
        elif kind == "token":
            # the reply's text is its sentences, then the numbered list on a line of its own
            piece = value if not sent else ("\n" if re.match(r"\d+\. ", value) else " ") + value
            sent += piece
            yield chunk({"content": piece})
        elif kind == "reply":
            remember(service, record, body, sent, value["reply"])  # the text the client put together leads here
            yield chunk({}, "stop", {**value, "conversation_id": record.id})
        elif kind == "error":
            error = {"message": value.get("error"), "type": value.get("error_kind") or value.get("kind")}
            yield f"data: {json.dumps({'error': error}, ensure_ascii=False)}\n\n".encode()
    yield b"data: [DONE]\n\n"
