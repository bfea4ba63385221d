"""Talking to recagent: ask (one turn), chat (the REPL), forget (a user's feedback)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from recagent.agent.conversation import Conversation
from recagent.agent.repl import run_repl
from recagent.tools.errors import ConfigError
from recagent.tools.feedback import forget_user
from recagent.tools.settings import Settings

from .app import main
from .options import agent_for, asr_options, feedback_options, llm_options, with_asr


@main.command()
@click.argument("text", required=False)
@click.option("--catalog", "-c", default="movies", show_default=True)
@click.option(
    "--image",
    type=click.Path(dir_okay=False),
    help='A photo: items that look like it, changed as TEXT says ("like this but in black").',
)
@click.option("--audio", type=click.Path(dir_okay=False), help="A recording to transcribe (instead of TEXT).")
@click.option(
    "--conversation",
    "conversation_file",
    type=click.Path(dir_okay=False),
    help="Read the conversation from this JSON file first and write it back updated.",
)
@click.option("--json", "as_json", is_flag=True, help="Print {reply, items, tool_calls, timings}.")
@llm_options
@asr_options
@click.pass_obj
def ask(
    settings: Settings,
    text: str | None,
    catalog: str,
    image: str | None,
    audio: str | None,
    conversation_file: str | None,
    as_json: bool,
    llm_kind: str,
    model: str | None,
    base_url: str | None,
    timeout: float,
    asr_backend: str | None,
    asr_model: str | None,
) -> None:
    """One turn without interaction: TEXT in, a reply with recommended items out."""
    conversation = None
    if conversation_file and Path(conversation_file).is_file():
        conversation = Conversation.load(conversation_file)
        catalog = conversation.catalog
    if not (text or "").strip() and not audio and not image:
        raise ConfigError("nothing to ask: give TEXT (or --audio, or --image)")
    agent = agent_for(with_asr(settings, asr_backend, asr_model), catalog, llm_kind, model, base_url, timeout)
    conversation = conversation or agent.new_conversation()
    reply = agent.turn(conversation, text or "", audio=audio, image=image)
    if conversation_file and not reply.error:
        conversation.save(conversation_file)
    if as_json:
        click.echo(json.dumps(reply.to_dict(), ensure_ascii=False, indent=2))
    else:
        click.echo(reply.text)
    if reply.error:
        if not as_json:
            click.echo(f"Error: {reply.error}", err=True)
        sys.exit(1)


@main.command()
@click.option("--catalog", "-c", default="movies", show_default=True)
@llm_options
@asr_options
@feedback_options
@click.pass_obj
def chat(
    settings: Settings,
    catalog: str,
    llm_kind: str,
    model: str | None,
    base_url: str | None,
    timeout: float,
    asr_backend: str | None,
    asr_model: str | None,
    user: str | None,
    feedback: bool | None,
    share_text: bool | None,
) -> None:
    """Talk to recagent in a REPL (/help for commands)."""
    settings = with_asr(settings, asr_backend, asr_model)
    run_repl(
        agent_for(settings, catalog, llm_kind, model, base_url, timeout),
        user=user,
        feedback=feedback,
        share_text=share_text,
    )


@main.command()
@click.argument("user")
@click.pass_obj
def forget(settings: Settings, user: str) -> None:
    """Delete everything stored for USER (their feedback, and any conversation text shared with it)."""
    deleted = forget_user(settings, user)
    if deleted:
        click.echo(
            f"deleted {deleted} stored record{'s' if deleted != 1 else ''} of {user} (feedback and conversations)"
        )
    else:
        click.echo(f"nothing stored for {user}")
