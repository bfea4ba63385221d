"""The native HTTP API (FastAPI; the OpenAPI schema is at /openapi.json, the docs at /docs).

    POST   /conversations                    {"catalog"?} -> the new conversation
    GET    /conversations                    your conversations
    GET    /conversations/{id}               one, with its turns
    DELETE /conversations/{id}
    POST   /conversations/{id}/turns         JSON {"text"} or multipart (text, audio, image) -> the `ask --json` reply;
                                             with `Accept: text/event-stream`, the turn's events as they happen
    POST   /conversations/{id}/feedback      {"item", "kind": like | dislike | accept}
    DELETE /users/me                         forget everything stored for you
    GET    /healthz, /readyz, /metrics

Every error is JSON {"error": one clear line, "kind": its class}: 400 for input the agent cannot use, 401 without a
valid key, 404 for a conversation that is not yours, 409 while another turn of it runs, 413 for an upload over the
limit, 422 for a malformed request (the field named), 503 (with Retry-After when full) when a backend is down or the
service is busy. No stack trace or internal path is ever sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, Field

from recagent.tools.errors import BusyError, RecagentError
from recagent.tools.store import ConversationRecord

from .config import LOCAL_USER
from .core import Service, TurnInput, TurnResult
from .events import error_body, start_streamed_turn, until_final
from .openai_compat import router as openai_router

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


class NewConversation(BaseModel):
    catalog: str | None = Field(None, description="Which catalog to talk about (default: the service's first).")


class TextTurn(BaseModel):
    text: str = Field(..., description="What the user says.")


class Feedback(BaseModel):
    item: str = Field(..., description="The id of an item shown in this conversation.")
    kind: Literal["like", "dislike", "accept"]


def error_status(kind: str | None) -> int:
    return STATUS.get(kind or "", 503)


def create_app(service: Service) -> FastAPI:
    """The FastAPI application over a Service; warms the service up in the background when it starts."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=service.warm_up, name="warm-up", daemon=True).start()
        yield

    app = FastAPI(
        title="recagent", summary="A conversational recommender: talk, speak or show a photo.", lifespan=lifespan
    )
    if service.config.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=list(service.config.cors_origins), allow_methods=["*"], allow_headers=["*"]
        )
    install_error_handlers(app, service)
    app.middleware("http")(upload_limit(service.config.max_upload_bytes))

    def user(request: Request) -> str:
        """The caller's user name: from the API key, or the one local user of a service without keys."""
        keys = service.config.api_keys
        if not keys:
            return LOCAL_USER
        header = request.headers.get("authorization", "")
        key = header[7:].strip() if header.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
        if key not in keys:
            raise HTTPException(401, "a valid API key is needed: Authorization: Bearer KEY")
        return keys[key]

    def owned(conversation_id: str, name: str = Depends(user)) -> ConversationRecord:
        record = service.store.get_conversation(conversation_id, service.owner(name))
        if record is None:
            raise HTTPException(404, f"no conversation {conversation_id!r}")
        return record

    @app.get("/healthz", tags=["service"])
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["service"])
    def readyz() -> JSONResponse:
        body = {"ready": service.ready, "catalogs": list(service.agents), "llm": service.llm.name}
        return JSONResponse(body, status_code=200 if service.ready else 503)

    @app.get("/metrics", tags=["service"])
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(service.metrics.text(), media_type="text/plain; version=0.0.4")

    @app.post("/conversations", status_code=201, tags=["conversations"])
    def create(body: NewConversation | None = None, name: str = Depends(user)) -> dict:
        record = service.create_conversation(service.owner(name), body.catalog if body else None)
        return conversation_summary(record)

    @app.get("/conversations", tags=["conversations"])
    def list_conversations(name: str = Depends(user)) -> list[dict]:
        return [conversation_summary(r) for r in service.store.list_conversations(service.owner(name))]

    @app.get("/conversations/{conversation_id}", tags=["conversations"])
    def read(record: ConversationRecord = Depends(owned)) -> dict:
        turns = service.store.turns(record.id, record.owner)
        return {**conversation_summary(record), "state": record.state, "turns": turns}

    @app.delete("/conversations/{conversation_id}", status_code=204, tags=["conversations"])
    def delete(record: ConversationRecord = Depends(owned)) -> Response:
        service.store.delete_conversation(record.id, record.owner)
        return Response(status_code=204)

    @app.post("/conversations/{conversation_id}/turns", tags=["conversations"])
    async def post_turn(request: Request, record: ConversationRecord = Depends(owned)) -> Response:
        turn = await read_turn(request, service.config.max_upload_bytes)
        stack = contextlib.ExitStack()
        stack.enter_context(service.admitted(record.id))  # 503 or 409 before anything runs
        if "text/event-stream" in request.headers.get("accept", ""):
            events = start_streamed_turn(service, record, turn, stack)
            return StreamingResponse(
                server_sent(events), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
            )
        with stack:
            result = await asyncio.to_thread(service.run_turn, record, turn)
        return turn_response(result)

    @app.post("/conversations/{conversation_id}/feedback", tags=["conversations"])
    def feedback(body: Feedback, record: ConversationRecord = Depends(owned), name: str = Depends(user)) -> dict:
        return service.feedback(record, name, body.item, body.kind)

    app.include_router(openai_router(service, user))

    @app.get("/items/{catalog}/{item_id}/image", tags=["items"])
    def item_image(catalog: str, item_id: str) -> FileResponse:
        path = service.item_image(catalog, item_id) if catalog in service.agents else None
        if path is None:
            raise HTTPException(404, "no such image")
        return FileResponse(path)

    @app.delete("/users/me", tags=["users"])
    def forget(name: str = Depends(user)) -> dict:
        return {"deleted": service.store.forget(service.owner(name))}

    return app


def conversation_summary(record: ConversationRecord) -> dict:
    return {
        "id": record.id,
        "catalog": record.catalog,
        "title": record.title,
        "version": record.version,
        "created": record.created,
        "updated": record.updated,
    }


def turn_response(result: TurnResult) -> JSONResponse:
    """The `ask --json` form of a turn, with the conversation's version; a failed turn carries its status."""
    return JSONResponse(result.body(), status_code=200 if result.stored else error_status(result.reply.error_kind))


async def read_turn(request: Request, limit: int) -> TurnInput:
    """A turn from JSON {"text"} or a multipart form (text, audio, image); 400/413/422 when it cannot be one."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_part_size=limit)
        text = form.get("text") or ""
        if not isinstance(text, str):
            raise HTTPException(422, "field 'text' must be text")
        turn = TurnInput(text=text)
        for field in ("audio", "image"):
            upload = form.get(field)
            if upload is None or isinstance(upload, str):
                continue
            data = await upload.read(limit + 1)
            if len(data) > limit:
                raise HTTPException(413, f"the {field} file is over {limit // 2**20} MB")
            if field == "audio":
                turn.audio, turn.audio_name = data, upload.filename or "recording"
            else:
                turn.image = data
    elif content_type.startswith("application/json") or not content_type:
        try:
            body = TextTurn.model_validate(json.loads(await request.body() or b"null"))
        except json.JSONDecodeError as exc:
            raise HTTPException(400, f"the body is not valid JSON ({exc.msg} at position {exc.pos})") from None
        except ValueError as exc:
            raise RequestValidationError(exc.errors() if hasattr(exc, "errors") else []) from None
        turn = TurnInput(text=body.text)
    else:
        raise HTTPException(415, 'send JSON {"text": ...} or a multipart form with text, audio and image')
    if not turn.text.strip() and turn.audio is None and turn.image is None:
        raise HTTPException(400, "nothing to answer: give text, an audio recording or an image")
    return turn


async def server_sent(events: asyncio.Queue[tuple[str, Any]]) -> AsyncIterator[bytes]:
    """A turn's events as server-sent events: `event: KIND` and `data: JSON`."""
    async for kind, value in until_final(events):
        yield f"event: {kind}\ndata: {json.dumps(value, ensure_ascii=False)}\n\n".encode()


def upload_limit(limit: int) -> Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]:
    """A request body declared over the limit (plus room for the form's own fields) is refused before it is read."""

    async def middleware(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > 2 * limit + 65536:
            return JSONResponse(error_body(f"the request is over {2 * limit // 2**20} MB", "PayloadTooLarge"), 413)
        return await call_next(request)

    return middleware


def install_error_handlers(app: FastAPI, service: Service) -> None:
    """One JSON shape for every error; nothing internal leaks out."""

    @app.exception_handler(RecagentError)
    async def recagent_error(request: Request, exc: RecagentError) -> JSONResponse:
        kind = exc.__class__.__name__
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, BusyError) else None
        return JSONResponse(error_body(str(exc), kind), status_code=error_status(kind), headers=headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(error_body(str(exc.detail), "HTTPError"), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg')}"
            for e in exc.errors()
        ]
        return JSONResponse(error_body("; ".join(problems) or "malformed request", "ValidationError"), 422)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        reference = uuid.uuid4().hex[:8]
        log.exception("internal error %s on %s %s", reference, request.method, request.url.path)
        return JSONResponse(error_body(f"internal error (reference {reference})", "InternalError"), 500)
