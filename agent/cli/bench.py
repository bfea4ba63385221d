"""Benchmarks that print figures and write JSON."""

from __future__ import annotations

from pathlib import Path

import click

from recagent.evals.bench_agent import run_agent_benchmark
from recagent.evals.bench_index import run_index_benchmark
from recagent.evals.bench_serve import ServeBenchConfig, merge_results, run_serve_benchmark
from recagent.evals.common import write_json
from recagent.tools.settings import Settings

from .app import main
from .options import comma_list, llm_options


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
@click.option(
    "--feedback",
    is_flag=True,
    help="Instead of the LangChain agent: recagent without, then with a user's 25 earlier likes and dislikes.",
)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the figures here.")
@click.pass_obj
def bench_agent(
    settings: Settings, langchain: bool, model: str, limit: int | None, feedback: bool, json_out: str | None
) -> None:
    """Per-turn latency by stage and validity over 20 movie requests, beside a plain LangChain agent."""
    results = run_agent_benchmark(settings, langchain=langchain, model=model, limit=limit, feedback=feedback)
    if json_out:
        write_json(results, json_out)
        click.echo(f"wrote {json_out}")


@bench.command("serve")
@click.option("--url", help="Load a running service (http://127.0.0.1:PORT) instead of starting one.")
@click.option("--api-key", help="The key to send to a service that needs one (with --url).")
@click.option("--catalog", "-c", default="movies", show_default=True, help="The catalog served and talked about.")
@llm_options
@click.option(
    "--llm-parallel", type=int, help="LLM calls at once in the service [default: 1; the slots with --llama-server]."
)
@click.option(
    "--llama-server",
    type=click.Path(exists=True, dir_okay=False),
    help="A llama.cpp `llama-server` binary: started on loopback with --model's GGUF and --slots parallel slots, "
    "and the service pointed at it (--llm openai).",
)
@click.option("--slots", default=2, show_default=True, help="llama-server's parallel slots (--parallel).")
@click.option(
    "--ctx-per-slot", default=4096, show_default=True, help="llama-server's context per slot (-c is this x slots)."
)
@click.option("--llm-threads", type=int, help="llama-server's threads [default: every core].")
@click.option("--max-pending", default=16, show_default=True, help="The service's admission limit (more get 503).")
@click.option("--users", default="1,2,4,8", show_default=True, help="Numbers of simultaneous users, one level each.")
@click.option("--turns", "turns_per_user", default=4, show_default=True, help="Turns per user per level.")
@click.option("--min-turns", default=12, show_default=True, help="At least this many turns per level.")
@click.option("--duration", default=600.0, show_default=True, help="Seconds per level; no turn starts after them.")
@click.option("--turn-timeout", default=300.0, show_default=True, help="Seconds a client waits for one turn.")
@click.option("--think", default=0.0, show_default=True, help="Seconds a user waits between turns.")
@click.option(
    "--dialogues",
    type=click.Path(exists=True),
    help="Dialogue scripts (a file or folder) [default: the packaged ones].",
)
@click.option("--uploads/--no-uploads", default=True, show_default=True, help="Send the photo turns as uploads.")
@click.option(
    "--overhead-turns",
    default=30,
    show_default=True,
    help="Turns of the overhead measurement (scripted LLM, over HTTP and in process; 0: skip).",
)
@click.option("--label", default="", help="The setup's name in the table and the JSON.")
@click.option("--server-log", type=click.Path(dir_okay=False), help="Append the servers' output here.")
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False),
    help="Add the figures to this file (a setup with the same label is replaced).",
)
@click.pass_obj
def bench_serve(settings: Settings, users: str, json_out: str | None, **options: object) -> None:
    """`recagent serve` under load on loopback: turns/min, items on screen and whole-turn p50/p95, LLM queue wait,
    errors by kind and whether every completed turn is stored, per number of simultaneous users."""
    config = ServeBenchConfig(users=tuple(int(u) for u in comma_list(users)), **options)  # type: ignore[arg-type]
    results = run_serve_benchmark(settings, config)
    if json_out:
        write_json(merge_results(Path(json_out), results), json_out)
        click.echo(f"wrote {json_out}")
