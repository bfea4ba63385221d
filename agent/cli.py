"""The `recagent` command line: index, search, chat, models, data, bench."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from recagent.tools.catalog import CatalogError, load_catalog
from recagent.tools.data import DownloadError
from recagent.tools.models import MissingModelError
from recagent.tools.settings import ConfigError, Settings
from recagent.tools.index import StoreError
from recagent.agent.llm import LLMError

USER_ERRORS = (ConfigError, CatalogError, StoreError, MissingModelError, DownloadError, LLMError)


class _Group(click.Group):
    """Turns the errors users can fix into one clear line and exit code 1, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except USER_ERRORS as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("\nInterrupted.", err=True)
            ctx.exit(130)


@click.group(cls=_Group)
@click.option("--home", envvar="RECAGENT_HOME", type=click.Path(file_okay=False),
              help="Folder for the index and state [env RECAGENT_HOME; default ~/.local/share/recagent].")
@click.option("--data", envvar="RECAGENT_DATA", type=click.Path(file_okay=False),
              help="Data folder holding movielens/, fashion/, redial/ [env RECAGENT_DATA; default ../shared/data].")
@click.option("--chroma-url", envvar="RECAGENT_CHROMA_URL",
              help="Use a Chroma server (http://HOST:PORT) instead of the embedded store [env RECAGENT_CHROMA_URL].")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), envvar="RECAGENT_CONFIG",
              help="Config file (TOML) [env RECAGENT_CONFIG; default HOME/config.toml].")
@click.version_option(package_name="recagent")
@click.pass_context
def main(ctx, home, data, chroma_url, config_file):
    """recagent: a conversational recommender you talk to in text, by voice or with a photo."""
    ctx.obj = Settings.load(home=home, data=data, chroma_url=chroma_url, config_file=config_file)


def _index_for(settings: Settings, catalog: str):
    from recagent.tools.index import CatalogIndex

    return CatalogIndex(catalog, settings)


@main.command()
@click.option("--catalog", "-c", default="movies", show_default=True,
              help="movies, fashion, or the path of a .csv/.jsonl catalog file.")
@click.option("--batch-size", default=256, show_default=True, help="Items embedded and written per batch.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_obj
def index(settings: Settings, catalog: str, batch_size: int, quiet: bool):
    """Build or update the Chroma index of a catalog (resumable, incremental)."""
    started = time.perf_counter()
    cat = load_catalog(catalog, settings)
    for err in cat.errors[:20]:
        click.echo(f"skipped malformed row {err}", err=True)
    if len(cat.errors) > 20:
        click.echo(f"... and {len(cat.errors) - 20} more malformed rows", err=True)
    if not cat.items:
        raise CatalogError(f"{cat.source}: no usable items")
    idx = _index_for(settings, catalog)
    report = idx.index(cat, batch_size=batch_size, progress=not quiet)
    seconds = time.perf_counter() - started
    where = settings.chroma_url or str(settings.home / "chroma")
    if report.interrupted:
        click.echo(f"Interrupted: {report.added + report.updated} items written, "
                   f"{report.total - report.unchanged - report.added - report.updated} to go. "
                   "Run the same command again to continue.", err=True)
        sys.exit(130)
    if report.changed == 0:
        click.echo(f"{report.collection}: nothing changed ({report.total:,} items up to date, {seconds:.1f} s) in {where}")
    else:
        written = report.added + report.updated
        rate = written / report.seconds if report.seconds else 0
        click.echo(f"{report.collection}: indexed {written:,} items ({report.added:,} new, {report.updated:,} changed, "
                   f"{report.removed:,} removed, {report.unchanged:,} unchanged) in {seconds:.1f} s "
                   f"({rate:,.0f} items/s) in {where}")
    if cat.errors:
        click.echo(f"{len(cat.errors)} malformed rows were skipped (listed above); items already indexed were kept.",
                   err=True)


def _print_hits(hits, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps([h.as_dict() for h in hits], ensure_ascii=False, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(show_lines=False)
    table.add_column("#", justify="right")
    table.add_column("title")
    table.add_column("score", justify="right")
    table.add_column("details")
    for rank, hit in enumerate(hits, 1):
        meta = hit.public_metadata()
        details = "; ".join(
            f"{k}: {', '.join(v) if isinstance(v, list) else v}" for k, v in meta.items()
            if k in ("genres", "articleType", "baseColour", "gender", "usage", "tags")
        )
        table.add_row(str(rank), hit.title, f"{hit.score:.3f}", details)
    Console().print(table)


@main.command()
@click.argument("query")
@click.option("--catalog", "-c", default="movies", show_default=True)
@click.option("--k", "-k", default=10, show_default=True, help="How many items.")
@click.option("--where", "-w", multiple=True,
              help="Filter: FIELD=VALUE, FIELD!=VALUE, FIELD>=N, FIELD<N, FIELD=A..B (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {id, title, score, ...}.")
@click.pass_obj
def search(settings: Settings, query: str, catalog: str, k: int, where: tuple[str, ...], as_json: bool):
    """Print the items that best match QUERY."""
    from recagent.tools.index import parse_where

    idx = _index_for(settings, catalog)
    flt = parse_where(where, idx.fields())
    _print_hits(idx.search(query, k=k, where=flt), as_json)


def llm_options(func):
    """The LLM backend options shared by chat, ask and the evaluations."""
    options = [
        click.option("--llm", "llm_kind", type=click.Choice(["local", "openai", "scripted"]), default="local",
                     show_default=True, envvar="RECAGENT_LLM",
                     help="local: llama.cpp in process; openai: any OpenAI-compatible endpoint; "
                          "scripted: answers from a JSON file (for tests)."),
        click.option("--model", envvar="RECAGENT_LLM_MODEL",
                     help="local: a GGUF path or a model asset (llm, llm-small); openai: the model name; "
                          "scripted: the JSON file."),
        click.option("--base-url", envvar="OPENAI_BASE_URL", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8080/v1."),
        click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for the LLM endpoint."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _agent(settings: Settings, catalog: str, llm_kind: str, model: str | None, base_url: str | None, timeout: float):
    from recagent.agent import Agent, make_llm

    return Agent(make_llm(llm_kind, settings, model=model, base_url=base_url, timeout=timeout), catalog, settings)


@main.command()
@click.argument("text", required=False)
@click.option("--catalog", "-c", default="movies", show_default=True)
@click.option("--image", type=click.Path(dir_okay=False), help="A photo to search by (not available yet).")
@click.option("--audio", type=click.Path(dir_okay=False), help="A recording to transcribe (instead of TEXT).")
@click.option("--conversation", "conversation_file", type=click.Path(dir_okay=False),
              help="Read the conversation from this JSON file first and write it back updated.")
@click.option("--json", "as_json", is_flag=True, help="Print {reply, items, tool_calls, timings}.")
@llm_options
@click.pass_obj
def ask(settings: Settings, text, catalog, image, audio, conversation_file, as_json, llm_kind, model, base_url, timeout):
    """One turn without interaction: TEXT in, a reply with recommended items out."""
    from recagent.agent import Conversation

    conversation = None
    if conversation_file and Path(conversation_file).is_file():
        try:
            conversation = Conversation.load(conversation_file)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        catalog = conversation.catalog
    if image:
        raise ConfigError("image input is not available yet in this version (text and voice only)")
    if not (text or "").strip() and not audio:
        raise ConfigError("nothing to ask: give TEXT (or --audio)")
    agent = _agent(settings, catalog, llm_kind, model, base_url, timeout)
    conversation = conversation or agent.new_conversation()
    reply = agent.turn(conversation, text or "", audio=audio)
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
@click.pass_obj
def chat(settings: Settings, catalog: str, llm_kind, model, base_url, timeout):
    """Talk to recagent in a REPL (/help for commands)."""
    from recagent.agent.repl import run_repl

    run_repl(_agent(settings, catalog, llm_kind, model, base_url, timeout))


@main.group()
def models():
    """The model assets: where they come from, and assembling them."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def models_list(settings: Settings, as_json: bool):
    """Show each model asset and where it resolves (without loading it)."""
    from recagent.tools.models import model_status

    rows = model_status(settings)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        mark = "ok " if row["ok"] else "MISSING"
        click.echo(f"{mark:8} {row['name']:16} {row['description']}\n         -> {row['path']}")
    if not all(r["ok"] for r in rows):
        sys.exit(1)


@models.command("prepare")
@click.pass_obj
def models_prepare(settings: Settings):
    """Assemble and verify every offline model into the cache (once; later runs do nothing)."""
    from recagent.tools.models import ASSETS, resolve_model

    for name in ASSETS:
        started = time.perf_counter()
        path = resolve_model(name, settings)
        click.echo(f"{name:16} {path} ({time.perf_counter() - started:.1f} s)")


@main.group()
def data():
    """Getting the catalogs' data."""


@data.command("download")
@click.option("--dest", type=click.Path(file_okay=False), help="Where to put it [default HOME/data].")
@click.pass_obj
def data_download(settings: Settings, dest: str | None):
    """Download MovieLens latest-small from GroupLens (checksum verified; research use only)."""
    from recagent.tools.data import download_movielens

    target = download_movielens(Path(dest) if dest else settings.home / "data")
    click.echo(f"MovieLens is in {target}. Use it with --data {target.parent} (the default when nothing else is found).")


@main.group()
def bench():
    """Benchmarks that print figures and write JSON."""


@bench.command("index")
@click.option("--sizes", default="10000,100000", show_default=True, help="Random-vector collection sizes.")
@click.option("--queries", default=200, show_default=True)
@click.option("--embedded/--no-embedded", default=True, show_default=True, help="Measure the embedded store.")
@click.option("--server/--no-server", default=True, show_default=True, help="Also measure a Chroma server on loopback.")
@click.option("--catalogs/--no-catalogs", default=True, show_default=True, help="Also measure the real catalogs.")
@click.option("--big-builds", is_flag=True, help="Also build 1M+ collections with recagent's HNSW settings (slow).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the figures here.")
@click.pass_obj
def bench_index(settings: Settings, sizes: str, queries: int, embedded: bool, server: bool, catalogs: bool,
                big_builds: bool, json_out: str | None):
    """Index throughput, query latency p50/p95 (with and without a filter) and recall@10 vs exact search."""
    from recagent.evals.bench_index import run_index_benchmark

    results = run_index_benchmark(settings, [int(s) for s in sizes.split(",") if s], queries=queries,
                                  server=server, catalogs=catalogs, big_builds=big_builds, embedded_store=embedded)
    if json_out:
        Path(json_out).write_text(json.dumps(results, indent=2))
        click.echo(f"wrote {json_out}")


@bench.command("agent")
@click.option("--langchain/--no-langchain", default=True, show_default=True,
              help="Also run langchain.agents.create_agent with the same model and tools.")
@click.option("--model", default="llm", show_default=True, help="Model asset (llm, llm-small) or GGUF path.")
@click.option("--limit", type=int, help="Only the first N of the 20 requests.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the figures here.")
@click.pass_obj
def bench_agent(settings: Settings, langchain: bool, model: str, limit: int | None, json_out: str | None):
    """Per-turn latency by stage and validity over 20 movie requests, beside a plain LangChain agent."""
    from recagent.evals.bench_agent import run_agent_benchmark

    results = run_agent_benchmark(settings, langchain=langchain, model=model, limit=limit)
    if json_out:
        Path(json_out).write_text(json.dumps(results, indent=2))
        click.echo(f"wrote {json_out}")


if __name__ == "__main__":
    main()
