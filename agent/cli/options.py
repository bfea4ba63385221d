"""Options that several commands share: the LLM backend, speech recognition and feedback."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

from recagent.agent.llm import make_llm
from recagent.agent.loop import Agent
from recagent.tools.settings import Settings

F = TypeVar("F", bound=Callable)


def _stack(func: F, options: list[Callable]) -> F:
    """Apply click options so that --help lists them in the order given."""
    for option in reversed(options):
        func = option(func)
    return func


def llm_options(func: F) -> F:
    """The LLM backend options shared by chat, ask and the evaluations."""
    options = [
        click.option(
            "--llm",
            "llm_kind",
            type=click.Choice(["local", "openai", "scripted"]),
            default="local",
            show_default=True,
            envvar="RECAGENT_LLM",
            help="local: llama.cpp in process; openai: any OpenAI-compatible endpoint; "
            "scripted: answers from a JSON file (for tests).",
        ),
        click.option(
            "--model",
            envvar="RECAGENT_LLM_MODEL",
            help="local: a GGUF path or a model asset (llm, llm-small); openai: the model name; "
            "scripted: the JSON file.",
        ),
        click.option(
            "--base-url", envvar="OPENAI_BASE_URL", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8080/v1."
        ),
        click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for the LLM endpoint."),
    ]
    return _stack(func, options)


def asr_options(func: F) -> F:
    """The speech-recognition options of ask and chat (for --audio and /voice)."""
    options = [
        click.option(
            "--asr-backend",
            type=click.Choice(["faster-whisper", "openai-whisper"]),
            help="Speech recognizer [env RECAGENT_ASR_BACKEND; default faster-whisper].",
        ),
        click.option(
            "--asr-model",
            help="Speech model: whisper-base, whisper-tiny-en, a local model path, or a Whisper name such as "
            "tiny.en (online) [env RECAGENT_ASR_MODEL; default whisper-base].",
        ),
    ]
    return _stack(func, options)


def comma_list(value: str | None) -> list[str]:
    """A comma-separated option as a list (empty names left out)."""
    return [name for name in (value or "").split(",") if name]


def with_asr(settings: Settings, asr_backend: str | None, asr_model: str | None) -> Settings:
    """The settings with the speech options given on the command line (None keeps what the settings say)."""
    return settings.with_(**{k: v for k, v in (("asr_backend", asr_backend), ("asr_model", asr_model)) if v})


def feedback_options(func: F) -> F:
    """Who gives the feedback of /like, /dislike and /accept, and whether and how it is stored."""
    options = [
        click.option(
            "--user",
            help="Whose feedback this is; stored only as a salted hash [env RECAGENT_USER; default the login name].",
        ),
        click.option(
            "--feedback/--no-feedback",
            default=None,
            help="Store /like, /dislike and /accept as feedback for `train-ranker --with-feedback` "
            "[env RECAGENT_FEEDBACK=0 turns it off; default on].",
        ),
        click.option(
            "--share-text/--no-share-text",
            default=None,
            help="Also store the conversation text with each feedback event "
            "[env RECAGENT_FEEDBACK_TEXT=1; default off].",
        ),
    ]
    return _stack(func, options)


def agent_for(
    settings: Settings, catalog: str, llm_kind: str, model: str | None, base_url: str | None, timeout: float
) -> Agent:
    """The agent of ask and chat: the chosen LLM backend on one catalog."""
    return Agent(make_llm(llm_kind, settings, model=model, base_url=base_url, timeout=timeout), catalog, settings)
