"""`recagent serve`: the agent over HTTP (agent/service/)."""

from __future__ import annotations

import logging

import click
import uvicorn

from recagent.agent.service import Service, ServiceConfig, create_app
from recagent.agent.service.config import parse_api_keys
from recagent.tools.settings import Settings

from .app import main
from .options import llm_options


@main.command()
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to bind; any other than loopback needs API keys."
)
@click.option("--port", default=8000, show_default=True)
@click.option(
    "--catalog",
    "-c",
    "catalogs",
    multiple=True,
    help="A catalog to serve (repeatable; the model `recagent-NAME` picks it) [default: movies].",
)
@llm_options
@click.option(
    "--llm-parallel",
    default=None,
    type=int,
    help="LLM calls at once: 1 for the in-process model; the server's slots for --llm openai [default 1, "
    "or 4 with --llm openai].",
)
@click.option(
    "--db",
    "db_url",
    help="Database URL for conversations and feedback (SQLAlchemy: sqlite:///FILE, "
    "postgresql+psycopg://...) [env RECAGENT_DB; default HOME/recagent.sqlite3].",
)
@click.option(
    "--api-key",
    "api_keys",
    multiple=True,
    help="NAME=KEY: a user and their key (repeatable) [env RECAGENT_API_KEYS=NAME=KEY,...].",
)
@click.option(
    "--max-pending",
    default=16,
    show_default=True,
    help="Turns in hand at once (waiting or running); more are answered 503 with Retry-After.",
)
@click.option("--max-upload-mb", default=20, show_default=True, help="Largest audio or image upload.")
@click.option("--cors-origin", "cors_origins", multiple=True, help="Allow browser pages from this origin (repeatable).")
@click.pass_obj
def serve(
    settings: Settings,
    host: str,
    port: int,
    catalogs: tuple[str, ...],
    llm_kind: str,
    model: str | None,
    base_url: str | None,
    timeout: float,
    llm_parallel: int | None,
    db_url: str | None,
    api_keys: tuple[str, ...],
    max_pending: int,
    max_upload_mb: int,
    cors_origins: tuple[str, ...],
) -> None:
    """Serve recagent over HTTP: a native API with streaming, and an OpenAI-compatible /v1/chat/completions."""
    config = ServiceConfig(
        settings=settings.with_(db_url=db_url) if db_url else settings,
        catalogs=catalogs or ("movies",),
        llm_kind=llm_kind,
        model=model,
        base_url=base_url,
        timeout=timeout,
        llm_parallel=llm_parallel or (4 if llm_kind == "openai" else 1),
        host=host,
        api_keys=parse_api_keys(api_keys),
        max_pending=max_pending,
        max_upload_bytes=max_upload_mb * 2**20,
        cors_origins=cors_origins,
    )
    config.check()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    service = Service(config)
    click.echo(
        f"recagent serving {', '.join(config.catalogs)} on http://{host}:{port} (open it in a browser; the API: "
        f"/docs); LLM {service.llm.name}; loading models (GET /readyz says when ready)",
        err=True,
    )
    uvicorn.run(create_app(service), host=host, port=port, log_level="warning")
