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
    GET    /items/{catalog}/{id}/image       an item's poster or photo (by id, never by path)
    GET    /                                 the web page (page.py; its script and style at /static/NAME)

Every error is JSON {"error": one clear line, "kind": its class} (under /v1 an OpenAI error object): 400 for input
the agent cannot use or a body that is not JSON, 401 without a valid key, 404 for a conversation that is not yours,
409 while another turn of it runs (or a like would race it), 413 for an upload over the limit, 415 for a body that is
neither JSON nor a form, 422 for a malformed request (the field named), 503 (with Retry-After when full) when a
backend is down or the service is busy. No stack trace or internal path is ever sent (Service.public).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Literal, NoReturn

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from recagent.tools.errors import BusyError, RecagentError
from recagent.tools.store import ConversationRecord

from .config import LOCAL_USER
from .core import Service, TurnInput, TurnResult
from .events import error_body, error_status, start_streamed_turn, until_final
from .openai_compat import router as openai_router
from .page import mount_page

log = logging.getLogger("recagent.serve")


class NewConversation(BaseModel):
    catalog: str | None = Field(None, description="Which catalog to talk about (default: the service's first).")


class TextTurn(BaseModel):
    text: str = Field(..., description="What the user says.")


class Feedback(BaseModel):
    item: str = Field(..., description="The id of an item shown in this conversation.")
    kind: Literal["like", "dislike", "accept"]


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
        return record or gone(conversation_id)

    @app.get("/healthz", tags=["service"])
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["service"])
    def readyz() -> JSONResponse:
        ready = service.ready and not service.problems
        body = {"ready": ready, "catalogs": list(service.agents), "llm": service.llm.name, "problems": service.problems}
        return JSONResponse(body, status_code=200 if ready else 503)

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
        with contextlib.ExitStack() as admission:
            admission.enter_context(service.admitted(record.id))  # 503 or 409 before anything runs
            # the conversation as it is now: a turn that ended since it was first read has moved it on
            record = service.store.get_conversation(record.id, record.owner) or gone(record.id)
            stack = admission.pop_all()  # held until the turn ends
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

    mount_page(app)  # the web page at /
    return app


def gone(conversation_id: str) -> NoReturn:
    raise HTTPException(404, f"no conversation {conversation_id!r}")


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
                raise HTTPException(413, f"the {field} file is over {megabytes(limit)}")
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
            return error_response(request, 413, f"the request is over {megabytes(2 * limit)}", "PayloadTooLarge")
        return await call_next(request)

    return middleware


def megabytes(size: int) -> str:
    return f"{size / 2**20:.3g} MB"


def error_response(
    request: Request, status: int, message: str, kind: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """An error in the shape its client expects: {"error", "kind"} on the native API, an OpenAI error object
    ({"error": {"message", "type", "param", "code"}}) under /v1, which the openai client raises with its message."""
    if request.url.path.startswith("/v1/"):
        body: dict = {"error": {"message": message, "type": kind, "param": None, "code": status}}
    else:
        body = error_body(message, kind)
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI, service: Service) -> None:
    """One JSON shape for every error; nothing internal leaks out."""

    @app.exception_handler(RecagentError)
    async def recagent_error(request: Request, exc: RecagentError) -> JSONResponse:
        kind = exc.__class__.__name__
        service.count_error(exc)  # one raised outside a turn (the database down while listing...) counts too
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, BusyError) else None
        return error_response(request, error_status(kind), service.public(str(exc)), kind, headers)

    @app.exception_handler(StarletteHTTPException)  # FastAPI's own, and the router's 404 and 405
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(request, exc.status_code, str(exc.detail), "HTTPError", exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        broken = next((e for e in errors if e.get("type") == "json_invalid"), None)
        if broken is not None:  # not JSON at all: a bad request, not a field to name
            detail = (broken.get("ctx") or {}).get("error")
            message = "the body is not valid JSON" + (f" ({detail})" if detail else "")
            return error_response(request, 400, message, "HTTPError")
        problems = [
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg')}" for e in errors
        ]
        return error_response(request, 422, "; ".join(problems) or "malformed request", "ValidationError")

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        reference = uuid.uuid4().hex[:8]
        log.exception("internal error %s on %s %s", reference, request.method, request.url.path)
        return error_response(request, 500, f"internal error (reference {reference})", "InternalError")
