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
from recagent.tools.images import ImageError
from recagent.tools.index import StoreError
from recagent.agent.llm import LLMError

USER_ERRORS = (ConfigError, CatalogError, StoreError, MissingModelError, DownloadError, LLMError, ImageError)


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
@click.option("--images/--no-images", default=True, show_default=True,
              help="Also embed every item's image (posters, product photos) for search by photo.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_obj
def index(settings: Settings, catalog: str, batch_size: int, images: bool, quiet: bool):
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
    if images and any(it.image for it in cat.items):
        _index_images(settings, idx, cat, quiet)


def _index_images(settings: Settings, idx, cat, quiet: bool) -> None:
    from recagent.tools.images import image_encoder

    report = idx.index_images(cat, image_encoder(settings, catalog=idx.catalog), progress=not quiet)
    for err in report.errors[:10]:
        click.echo(f"skipped image of {err}", err=True)
    if report.interrupted:
        click.echo("Interrupted while embedding images: run the same command again to continue.", err=True)
        sys.exit(130)
    written = report.added + report.updated
    if written or report.removed:
        rate = written / report.seconds if report.seconds else 0
        click.echo(f"{report.collection}: embedded {written:,} images ({report.removed:,} removed, "
                   f"{report.unchanged:,} unchanged) in {report.seconds:.1f} s ({rate:,.0f} images/s)")
    else:
        click.echo(f"{report.collection}: nothing changed ({report.total:,} images up to date)")
    if report.errors:
        click.echo(f"{len(report.errors)} images could not be read (the items stay searchable by text).", err=True)


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
@click.argument("query", required=False, default="")
@click.option("--catalog", "-c", default="movies", show_default=True)
@click.option("--k", "-k", default=10, show_default=True, help="How many items.")
@click.option("--where", "-w", multiple=True,
              help="Filter: FIELD=VALUE, FIELD!=VALUE, FIELD>=N, FIELD<N, FIELD=A..B (repeatable).")
@click.option("--image", "image", type=click.Path(dir_okay=False),
              help="Search by photo: items that look like it (with QUERY too: both, fused).")
@click.option("--by", type=click.Choice(["text", "image", "fused"]), default=None,
              help="text: QUERY against item texts; image: QUERY (or --image) against item photos; fused: both. "
                   "Default: text, or fused with --image.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {id, title, score, ...}.")
@click.pass_obj
def search(settings: Settings, query: str, catalog: str, k: int, where: tuple[str, ...], image: str | None,
           by: str | None, as_json: bool):
    """Print the items that best match QUERY (text) and/or a photo."""
    from recagent.tools.index import parse_where
    from recagent.tools.retrieval import retrieve_candidates

    if not query and not image:
        raise click.UsageError("give a QUERY, an --image, or both")
    idx = _index_for(settings, catalog)
    flt = parse_where(where, idx.fields())
    _print_hits(retrieve_candidates(idx, query or None, photo=image, by=by, k=k, where=flt), as_json)


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


def asr_options(func):
    """The speech-recognition options of ask and chat (for --audio and /voice)."""
    options = [
        click.option("--asr-backend", type=click.Choice(["faster-whisper", "openai-whisper"]),
                     help="Speech recognizer [env RECAGENT_ASR_BACKEND; default faster-whisper]."),
        click.option("--asr-model",
                     help="Speech model: whisper-base, whisper-tiny-en, a local model path, or a Whisper name such as "
                          "tiny.en (online) [env RECAGENT_ASR_MODEL; default whisper-base]."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _use_asr(backend: str | None, model: str | None) -> None:
    """Hand the speech options to transcribe_audio, which reads them from the environment when the agent calls it."""
    import os

    if backend:
        os.environ["RECAGENT_ASR_BACKEND"] = backend
    if model:
        os.environ["RECAGENT_ASR_MODEL"] = model


def _agent(settings: Settings, catalog: str, llm_kind: str, model: str | None, base_url: str | None, timeout: float):
    from recagent.agent import Agent, make_llm

    return Agent(make_llm(llm_kind, settings, model=model, base_url=base_url, timeout=timeout), catalog, settings)


@main.command()
@click.argument("text", required=False)
@click.option("--catalog", "-c", default="movies", show_default=True)
@click.option("--image", type=click.Path(dir_okay=False),
              help="A photo: items that look like it, changed as TEXT says (\"like this but in black\").")
@click.option("--audio", type=click.Path(dir_okay=False), help="A recording to transcribe (instead of TEXT).")
@click.option("--conversation", "conversation_file", type=click.Path(dir_okay=False),
              help="Read the conversation from this JSON file first and write it back updated.")
@click.option("--json", "as_json", is_flag=True, help="Print {reply, items, tool_calls, timings}.")
@llm_options
@asr_options
@click.pass_obj
def ask(settings: Settings, text, catalog, image, audio, conversation_file, as_json, llm_kind, model, base_url, timeout,
        asr_backend, asr_model):
    """One turn without interaction: TEXT in, a reply with recommended items out."""
    from recagent.agent import Conversation

    _use_asr(asr_backend, asr_model)

    conversation = None
    if conversation_file and Path(conversation_file).is_file():
        try:
            conversation = Conversation.load(conversation_file)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        catalog = conversation.catalog
    if not (text or "").strip() and not audio and not image:
        raise ConfigError("nothing to ask: give TEXT (or --audio, or --image)")
    agent = _agent(settings, catalog, llm_kind, model, base_url, timeout)
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
@click.pass_obj
def chat(settings: Settings, catalog: str, llm_kind, model, base_url, timeout, asr_backend, asr_model):
    """Talk to recagent in a REPL (/help for commands)."""
    from recagent.agent.repl import run_repl

    _use_asr(asr_backend, asr_model)
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


@main.group("eval")
def eval_group():
    """Evaluations that print figures and write JSON."""


@eval_group.command("voice")
@click.option("--n", default=50, show_default=True, help="How many ReDial seeker turns to speak.")
@click.option("--models", default="whisper-tiny-en,whisper-base", show_default=True,
              help="Speech models, comma-separated.")
@click.option("--backends", default="faster-whisper,openai-whisper", show_default=True,
              help="Speech backends, comma-separated.")
@click.option("--float32/--no-float32", default=True, show_default=True,
              help="Also run faster-whisper with float32 weights (shows what int8 changes).")
@click.option("--repeats", default=1, show_default=True,
              help="Time each transcription this many times and keep the fastest (for a busy machine).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the figures here.")
@click.pass_obj
def eval_voice(settings: Settings, n: int, models: str, backends: str, float32: bool, repeats: int,
               json_out: str | None):
    """Word error rate, speed and retrieval of spoken ReDial requests, per speech backend and model."""
    from recagent.evals.eval_voice import run_voice_eval, write_json

    results = run_voice_eval(settings, n, [m for m in models.split(",") if m], [b for b in backends.split(",") if b],
                             float32=float32, repeats=repeats)
    if json_out:
        write_json(results, json_out)
        click.echo(f"wrote {json_out}")


@eval_group.command("images")
@click.option("--near-duplicates", default=500, show_default=True, help="How many perturbed photos to look up.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the figures here.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.pass_obj
def eval_images(settings: Settings, near_duplicates: int, json_out: str | None, quiet: bool):
    """Photo retrieval on the 1,000 held-out fashion products: type, colour, text->image, near-duplicates."""
    from recagent.evals.eval_images import evaluate_images, format_table, write_json

    figures = evaluate_images(settings, near_duplicates=near_duplicates, progress=not quiet,
                              log=lambda m: click.echo(m, err=True))
    click.echo(format_table(figures))
    click.echo(f"({figures['gallery']:,} photos, {figures['held_out_queries']} held-out queries, "
               f"{figures['seconds']:.0f} s; encoder {figures['encoder']})")
    if json_out:
        write_json(figures, json_out)
        click.echo(f"wrote {json_out}")


@main.command("train-image-encoder")
@click.option("--catalog", "-c", type=click.Choice(["movies", "fashion", "all"]), default="all", show_default=True,
              help="Whose image-text pairs to learn from (the 1,000 evaluation products are always held out).")
@click.option("--epochs", default=14, show_default=True)
@click.option("--batch-size", default=256, show_default=True)
@click.option("--limit", type=int, help="Train on only this many pairs (a quick check).")
@click.option("--instance-weight", default=0.0, show_default=True,
              help="Weight of a second loss pulling two augmented views of a photo together (0: one view, faster).")
@click.option("--out", type=click.Path(dir_okay=False),
              help="Checkpoint to write [default HOME/image-encoder/catalog-clip-CATALOG.pt]; a .state.pt beside "
                   "it holds the last epoch, and the same command resumes from it.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.pass_obj
def train_image_encoder_command(settings: Settings, catalog: str, epochs: int, batch_size: int, limit: int | None,
                                instance_weight: float, out: str | None, quiet: bool):
    """Train the offline image encoder (CLIP form, locked MiniLM text tower) on the catalogs' photos."""
    from recagent.tools.train_image_encoder import train_image_encoder

    catalogs = ["movies", "fashion"] if catalog == "all" else [catalog]
    target = Path(out) if out else settings.home / "image-encoder" / f"catalog-clip-{catalog}.pt"
    result = train_image_encoder(catalogs, settings, target, epochs=epochs, batch_size=batch_size, limit=limit,
                                 instance_weight=instance_weight, progress=not quiet, log=lambda m: click.echo(m, err=True))
    click.echo(f"wrote {result['checkpoint']} after {result['seconds'] / 60:.1f} min of training. Use it with "
               f"RECAGENT_MODEL_IMAGE_ENCODER={result['checkpoint']} (then rerun `recagent index`).")


if __name__ == "__main__":
    main()
