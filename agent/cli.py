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


def feedback_options(func):
    """Who gives the feedback of /like, /dislike and /accept, and whether and how it is stored."""
    options = [
        click.option("--user", envvar="RECAGENT_USER",
                     help="Whose feedback this is; stored only as a salted hash [env RECAGENT_USER; default the login "
                          "name]."),
        click.option("--feedback/--no-feedback", default=None,
                     help="Store /like, /dislike and /accept as feedback for `train-ranker --with-feedback` "
                          "[env RECAGENT_FEEDBACK=0 turns it off; default on]."),
        click.option("--share-text/--no-share-text", default=None,
                     help="Also store the conversation text with each feedback event "
                          "[env RECAGENT_FEEDBACK_TEXT=1; default off]."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@main.command()
@click.option("--catalog", "-c", default="movies", show_default=True)
@llm_options
@asr_options
@feedback_options
@click.pass_obj
def chat(settings: Settings, catalog: str, llm_kind, model, base_url, timeout, asr_backend, asr_model, user, feedback,
         share_text):
    """Talk to recagent in a REPL (/help for commands)."""
    from recagent.agent.repl import run_repl

    _use_asr(asr_backend, asr_model)
    run_repl(_agent(settings, catalog, llm_kind, model, base_url, timeout), user=user, feedback=feedback,
             share_text=share_text)


@main.command()
@click.argument("user")
@click.pass_obj
def forget(settings: Settings, user: str):
    """Delete everything stored for USER (their feedback, and any conversation text shared with it)."""
    from recagent.tools.feedback import forget_user

    deleted = forget_user(settings, user)
    if deleted:
        click.echo(f"deleted {deleted} feedback event{'s' if deleted != 1 else ''} of {user}")
    else:
        click.echo(f"nothing stored for {user}")


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
@click.option("--heads", default="articleType,baseColour", show_default=True,
              help="Catalog fields the tower learns to predict from a photo (used to re-rank photo searches); "
                   "fields the items lack are skipped; '' for none.")
@click.option("--out", type=click.Path(dir_okay=False),
              help="Checkpoint to write [default HOME/image-encoder/catalog-clip-CATALOG.pt]; a .state.pt beside "
                   "it holds the last epoch, and the same command resumes from it.")
@click.option("--recalibrate", type=click.Path(exists=True, dir_okay=False),
              help="Do not train: choose this checkpoint's head weights again on the validation photos (rewrites it).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.pass_obj
def train_image_encoder_command(settings: Settings, catalog: str, epochs: int, batch_size: int, limit: int | None,
                                instance_weight: float, heads: str, out: str | None, recalibrate: str | None,
                                quiet: bool):
    """Train the offline image encoder (CLIP form, locked MiniLM text tower) on the catalogs' photos."""
    from recagent.tools.train_image_encoder import recalibrate as recalibrate_checkpoint
    from recagent.tools.train_image_encoder import train_image_encoder

    if recalibrate:
        weights = recalibrate_checkpoint(Path(recalibrate), settings, progress=not quiet,
                                         log=lambda m: click.echo(m, err=True))
        click.echo(f"rewrote {recalibrate} with head weights {weights}")
        return
    catalogs = ["movies", "fashion"] if catalog == "all" else [catalog]
    target = Path(out) if out else settings.home / "image-encoder" / f"catalog-clip-{catalog}.pt"
    result = train_image_encoder(catalogs, settings, target, epochs=epochs, batch_size=batch_size, limit=limit,
                                 instance_weight=instance_weight, heads=tuple(h for h in heads.split(",") if h),
                                 progress=not quiet, log=lambda m: click.echo(m, err=True))
    click.echo(f"wrote {result['checkpoint']} after {result['seconds'] / 60:.1f} min of training. Use it with "
               f"RECAGENT_MODEL_IMAGE_ENCODER={result['checkpoint']} (then rerun `recagent index`).")


@main.command("train-ranker")
@click.option("--epochs", default=12, show_default=True, help="At most this many epochs (early stopping may end sooner).")
@click.option("--patience", default=3, show_default=True, help="Stop after this many epochs without improvement.")
@click.option("--batch-size", default=64, show_default=True)
@click.option("--lr", default=0.005, show_default=True, help="Adam learning rate.")
@click.option("--ml-per-epoch", default=3000, show_default=True,
              help="MovieLens examples drawn per epoch (the ReDial train examples are all used, twice).")
@click.option("--seed", default=0, show_default=True)
@click.option("--limit", type=int, help="Only this many ReDial train dialogues and MovieLens users (a quick check).")
@click.option("--with-feedback", is_flag=True, help="Also learn from the feedback store (/like, /dislike).")
@click.option("--out", type=click.Path(dir_okay=False),
              help="Checkpoint to write [default HOME/ranker/ranker-movies.pt, which the agent then uses]; a "
                   ".state.pt beside it holds the last epoch, and the same command resumes from it.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.pass_obj
def train_ranker_command(settings: Settings, epochs: int, patience: int, batch_size: int, lr: float, ml_per_epoch: int,
                         seed: int, limit: int | None, with_feedback: bool, out: str | None, quiet: bool):
    """Train the ranking head on MovieLens ratings and ReDial train dialogues (validation: ReDial valid)."""
    from recagent.tools.ranker import checkpoint_path
    from recagent.tools.train_ranker import train_ranker

    if with_feedback:
        try:
            from recagent.tools.feedback import feedback_events  # noqa: F401
        except ImportError:
            raise ConfigError("--with-feedback needs the feedback store (tools/feedback.py), which this version of "
                              "recagent does not have yet; train without the flag") from None
    target = Path(out) if out else checkpoint_path(settings, "movies")
    result = train_ranker(settings, target, epochs=epochs, batch_size=batch_size, lr=lr, ml_per_epoch=ml_per_epoch,
                          patience=patience, seed=seed, limit=limit, with_feedback=with_feedback,
                          progress=not quiet, log=lambda m: click.echo(m, err=True))
    stop = "early stopping" if result["stopped_early"] else "the last epoch"
    click.echo(f"wrote {result['checkpoint']} (best epoch {result['best_epoch']} of {result['epochs_run']}, "
               f"{stop}) after {result['seconds'] / 60:.1f} min. "
               + ("The agent uses it from now on." if not out else
                  f"Use it with RECAGENT_MODEL_RANKER={result['checkpoint']}."))


@eval_group.command("redial")
@click.option("--data", "data_file", type=click.Path(dir_okay=False, exists=True),
              help="ReDial JSON-lines file [default DATA/redial/dev.jsonl].")
@click.option("--limit", type=int, help="Only the first N dialogues.")
@click.option("--planner", type=click.Choice(["none", "local", "openai", "scripted"]), default="none",
              show_default=True, help="none: the recommendation pipeline without the LLM (fast); local/openai: the "
                                      "full agent on each sample (slow: use --limit).")
@click.option("--model", envvar="RECAGENT_LLM_MODEL", help="The planner's model (as for `ask --model`).")
@click.option("--base-url", envvar="OPENAI_BASE_URL", help="OpenAI-compatible endpoint for --planner openai.")
@click.option("--timeout", default=120.0, show_default=True)
@click.option("--checkpoint", type=click.Path(dir_okay=False, exists=True),
              help="Ranking-head checkpoint [default: the one the agent uses].")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the figures here.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.pass_obj
def eval_redial(settings: Settings, data_file: str | None, limit: int | None, planner: str, model: str | None,
                base_url: str | None, timeout: float, checkpoint: str | None, json_out: str | None, quiet: bool):
    """Recall@1/10/50 on ReDial dialogues (whole MovieLens catalog ranked), beside baselines and published systems."""
    from recagent.evals.eval_redial import format_table, run_redial_eval, write_json

    path = Path(data_file) if data_file else settings.require_data() / "redial" / "dev.jsonl"
    figures = run_redial_eval(settings, path, limit=limit, planner=planner, model=model, base_url=base_url,
                              timeout=timeout, checkpoint=checkpoint, progress=not quiet,
                              log=lambda m: click.echo(m, err=True))
    click.echo(format_table(figures))
    click.echo(f"({figures['samples']} samples from {figures['dialogues']} dialogues of {path.name}; "
               f"{figures['catalog_size']:,} movies ranked; {figures['timings']['total_seconds']:.0f} s in all; "
               f"system: {figures['system']})")
    if json_out:
        write_json(figures, json_out)
        click.echo(f"wrote {json_out}")


@eval_group.command("movielens")
@click.option("--checkpoint", type=click.Path(dir_okay=False, exists=True),
              help="Ranking-head checkpoint [default: the one the agent uses].")
@click.option("--tune/--no-tune", default=True, show_default=True,
              help="Choose ALS factors and regularisation on the validation item.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the figures here.")
@click.pass_obj
def eval_movielens(settings: Settings, checkpoint: str | None, tune: bool, json_out: str | None):
    """The ranking head against popularity, item-kNN and ALS on MovieLens (last rating of each user held out)."""
    from recagent.evals.eval_movielens import format_table, run_movielens_eval, write_json

    figures = run_movielens_eval(settings, checkpoint=checkpoint, tune=tune, log=lambda m: click.echo(m, err=True))
    click.echo(format_table(figures))
    click.echo(f"({figures['users']} users, {figures['items']:,} movies, {figures['seconds']:.0f} s)")
    if json_out:
        write_json(figures, json_out)
        click.echo(f"wrote {json_out}")


@eval_group.command("redial-mapping")
@click.option("--sample", default=100, show_default=True, help="Rows printed for checking by eye.")
@click.option("--seed", default=5, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), help="Write the stricter matcher's mapping (CSV) here.")
@click.pass_obj
def eval_redial_mapping(settings: Settings, sample: int, seed: int, out: str | None):
    """Compare the shipped ReDial -> MovieLens mapping with recagent's matcher; print rows to check by eye."""
    import random

    from recagent.tools.redial import default_mapping, match_titles, redial_dir, redial_titles, write_mapping

    cat = load_catalog("movies", settings)
    titles = {it.id: it.title for it in cat.items}
    names = redial_titles(redial_dir(settings) / "movies_with_mentions.csv")
    shipped = default_mapping(settings)
    mine = match_titles(names, cat.items)
    same = sum(1 for r, m in shipped.items() if r in mine and mine[r][0] == m)
    differ = [r for r, m in shipped.items() if r in mine and mine[r][0] != m]
    added = sorted((r for r in mine if r not in shipped), key=int)
    click.echo(f"ReDial movies: {len(names):,}; shipped mapping: {len(shipped):,}; recagent's matcher: {len(mine):,} "
               f"({same:,} the same, {len(differ)} different, {len(shipped) - same - len(differ)} only in the shipped "
               f"one, {len(added)} added)")
    rng = random.Random(seed)
    click.echo(f"\n{min(sample, len(shipped))} random rows of the shipped mapping:")
    for r in rng.sample(sorted(shipped, key=int), min(sample, len(shipped))):
        click.echo(f"  {names.get(r, r)}  ->  {titles.get(shipped[r], shipped[r])}")
    click.echo(f"\n{min(sample, len(added))} random rows that recagent's matcher adds:")
    for r in rng.sample(added, min(sample, len(added))):
        click.echo(f"  {names.get(r, r)}  ->  {titles.get(mine[r][0])}  [{mine[r][1]}]")
    for r in differ:
        click.echo(f"different: {names.get(r, r)}: shipped {titles.get(shipped[r])}, recagent {titles.get(mine[r][0])}")
    if out:
        write_mapping(out, mine, names, titles)
        click.echo(f"wrote {out}")



# ---- evaluation dialogues and simulated users (issue 6) ----------------------------------------------------

def _eval_llm(settings: Settings, replay: str | None, llm_kind: str, model: str | None, base_url: str | None,
              timeout: float, threads: int | None = None):
    """The LLM of an evaluation: a recorded run's answers with --replay (no model is loaded), else the backend."""
    from recagent.agent.llm import ReplayLLM, make_llm

    if replay:
        return ReplayLLM(replay)
    llm = make_llm(llm_kind, settings, model=model, base_url=base_url, timeout=timeout)
    if threads and hasattr(llm, "threads"):
        llm.threads = threads  # read when the model loads
    return llm


@eval_group.command("dialogues")
@click.argument("path", required=False, type=click.Path(exists=True))
@click.option("--family", "families", help="Only these families, comma-separated (basic, refinement, negation, "
                                           "vague, voice, image, adversarial).")
@click.option("--limit", type=int, help="Only the first N scripts (after --family).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write every turn and the figures here.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False),
              help="Write report.md, report.html and the plots into this folder.")
@click.option("--record", type=click.Path(dir_okay=False),
              help="Record the LLM calls here (JSON lines) [default: OUT.llm.jsonl beside --json, else in --report, "
                   "else HOME/eval-recordings/].")
@click.option("--replay", type=click.Path(dir_okay=False, exists=True),
              help="Answer from a recording of an earlier run instead of an LLM (no model is loaded), and compare "
                   "the outcomes with the recorded ones.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its recording (--record or the "
                                          "default): finished scripts are kept, the rest run.")
@click.option("--validate", is_flag=True, help="Only check the scripts (form, items, files) and exit.")
@llm_options
@click.option("--threads", type=int, help="CPU threads of the local LLM [default: every core]; 1 is faster "
                                         "on a machine that other jobs keep busy.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_obj
def eval_dialogues(settings: Settings, path, families, limit, json_out, report_dir, record, replay, resume, validate,
                   llm_kind, model, base_url, timeout, threads, quiet):
    """Run the scripted evaluation dialogues (PATH: a script or a folder; default the packaged ones) and check
    every expectation: pass rates per script, expectation and family, hit@k, off-catalog items, latency."""
    from recagent.evals.eval_dialogues import (ScriptError, default_recording, format_summary, load_scripts,
                                               run_dialogues, validate_scripts, write_json)

    try:
        scripts = load_scripts(path, [f for f in (families or "").split(",") if f] or None, limit)
        if validate:
            problems = validate_scripts(scripts, settings)
            for problem in problems:
                click.echo(problem, err=True)
            click.echo(f"{len(scripts)} scripts, {sum(len(s.turns) for s in scripts)} turns: "
                       + (f"{len(problems)} problems" if problems else "all valid"))
            sys.exit(1 if problems else 0)
        llm = _eval_llm(settings, replay, llm_kind, model, base_url, timeout, threads)
        recording = None if replay else Path(record) if record else default_recording(json_out, report_dir, settings)
        figures = run_dialogues(scripts, settings, llm, record=recording, replay=replay, resume=resume,
                                progress=not quiet)
    except ScriptError as exc:
        raise ConfigError(str(exc)) from None
    click.echo(format_summary(figures))
    if json_out:
        write_json(figures, json_out)
        click.echo(f"wrote {json_out}")
    if report_dir:
        from recagent.evals.report import dialogue_report

        written = dialogue_report(figures, report_dir)
        click.echo(f"wrote {written['markdown']} and {written['html']}")
    if recording:
        click.echo(f"LLM calls recorded in {recording} (replay with --replay {recording})")
    if replay and not figures["replay"]["identical"]:
        for line in figures["replay"]["differences"][:20]:
            click.echo(line, err=True)
        sys.exit(1)


@eval_group.command("simulate")
@click.option("--catalog", "-c", type=click.Choice(["movies", "fashion"]), default="movies", show_default=True)
@click.option("--n", default=30, show_default=True, help="Simulated users (hidden targets) per mode.")
@click.option("--modes", default="text", show_default=True, help="Comma-separated: text, voice, image.")
@click.option("--k", default=10, show_default=True, help="Items the agent lists each turn; success means the "
                                                         "target is among them.")
@click.option("--turns", "max_turns", default=5, show_default=True, help="The most turns a user takes.")
@click.option("--seed", default=0, show_default=True, help="Which targets are drawn.")
@click.option("--writer/--no-writer", default=True, show_default=True,
              help="Let the LLM write each reply's sentence; --no-writer puts a fixed one (the items are the same, "
                   "a turn takes about half the time; latency then leaves the writing out).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write every dialogue and the figures here.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False), help="Write a Markdown/HTML report here.")
@click.option("--record", type=click.Path(dir_okay=False), help="Record the LLM calls here (JSON lines).")
@click.option("--replay", type=click.Path(dir_okay=False, exists=True),
              help="Answer from a recording of an earlier run instead of an LLM.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its recording: finished users are kept.")
@llm_options
@click.option("--threads", type=int, help="CPU threads of the local LLM [default: every core]; 1 is faster "
                                         "on a machine that other jobs keep busy.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_obj
def eval_simulate(settings: Settings, catalog, n, modes, k, max_turns, seed, writer, json_out, report_dir, record,
                  replay, resume, llm_kind, model, base_url, timeout, threads, quiet):
    """Simulated users with a hidden target describe it turn by turn (never naming it): success@k within the
    turn budget, turns needed and title leaks, per mode (text, voice, image)."""
    from recagent.evals.eval_dialogues import write_json
    from recagent.evals.simulate import format_simulation, run_simulation

    llm = _eval_llm(settings, replay, llm_kind, model, base_url, timeout, threads)
    if not replay and not record:
        from recagent.evals.eval_dialogues import default_recording

        record = str(default_recording(json_out, None, settings))
    figures = run_simulation(settings, llm, catalog, n, [m for m in modes.split(",") if m], k=k, max_turns=max_turns,
                             seed=seed, record=None if replay else record, replay=replay, writer=writer,
                             resume=resume, progress=not quiet)
    click.echo(format_simulation(figures))
    if figures["recording"]:
        click.echo(f"LLM calls recorded in {figures['recording']} (replay with --replay {figures['recording']})")
    if json_out:
        write_json(figures, json_out)
        click.echo(f"wrote {json_out}")
    if report_dir:
        from recagent.evals.report import simulate_report

        written = simulate_report(figures, report_dir)
        click.echo(f"wrote {written['markdown']} and {written['html']}")
    if figures["leaks"]:
        click.echo(f"Error: the simulated user named its target {figures['leaks']} times", err=True)
        sys.exit(1)

if __name__ == "__main__":
    main()
