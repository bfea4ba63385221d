"""Benchmarks that print figures and write JSON."""

from __future__ import annotations

import click

from recagent.evals.bench_agent import run_agent_benchmark
from recagent.evals.bench_index import run_index_benchmark
from recagent.evals.common import write_json
from recagent.tools.settings import Settings

from .app import main


@main.group()
def bench() -> None:
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
def bench_index(
    settings: Settings,
    sizes: str,
    queries: int,
    embedded: bool,
    server: bool,
    catalogs: bool,
    big_builds: bool,
    json_out: str | None,
) -> None:
    """Index throughput, query latency p50/p95 (with and without a filter) and recall@10 vs exact search."""
    results = run_index_benchmark(
        settings,
        [int(s) for s in sizes.split(",") if s],
        queries=queries,
        server=server,
        catalogs=catalogs,
        big_builds=big_builds,
        embedded_store=embedded,
    )
    if json_out:
        write_json(results, json_out)
        click.echo(f"wrote {json_out}")


@bench.command("agent")
@click.option(
    "--langchain/--no-langchain",
    default=True,
    show_default=True,
    help="Also run langchain.agents.create_agent with the same model and tools.",
)
@click.option("--model", default="llm", show_default=True, help="Model asset (llm, llm-small) or GGUF path.")
@click.option("--limit", type=int, help="Only the first N of the 20 requests.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the figures here.")
@click.pass_obj
def bench_agent(settings: Settings, langchain: bool, model: str, limit: int | None, json_out: str | None) -> None:
    """Per-turn latency by stage and validity over 20 movie requests, beside a plain LangChain agent."""
    results = run_agent_benchmark(settings, langchain=langchain, model=model, limit=limit)
    if json_out:
        write_json(results, json_out)
        click.echo(f"wrote {json_out}")
