"""Catalog commands: index, search, models, data."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from recagent.tools.catalog import Catalog, load_catalog
from recagent.tools.data import download_movielens
from recagent.tools.errors import CatalogError
from recagent.tools.filters import parse_where
from recagent.tools.images import image_encoder
from recagent.tools.index import CatalogIndex, Hit
from recagent.tools.models import ASSETS, model_status, resolve_model
from recagent.tools.ranking import find_checkpoint, load_ranker
from recagent.tools.retrieval import retrieve_candidates
from recagent.tools.settings import Settings

from .app import main


def _index_for(settings: Settings, catalog: str) -> CatalogIndex:
    return CatalogIndex(catalog, settings)


@main.command()
@click.option(
    "--catalog",
    "-c",
    default="movies",
    show_default=True,
    help="movies, fashion, or the path of a .csv/.jsonl catalog file.",
)
@click.option("--batch-size", default=256, show_default=True, help="Items embedded and written per batch.")
@click.option(
    "--images/--no-images",
    default=True,
    show_default=True,
    help="Also embed every item's image (posters, product photos) for search by photo.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_obj
def index(settings: Settings, catalog: str, batch_size: int, images: bool, quiet: bool) -> None:
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
        click.echo(
            f"Interrupted: {report.added + report.updated} items written, "
            f"{report.total - report.unchanged - report.added - report.updated} to go. "
            "Run the same command again to continue.",
            err=True,
        )
        sys.exit(130)
    if report.changed == 0:
        click.echo(
            f"{report.collection}: nothing changed ({report.total:,} items up to date, {seconds:.1f} s) in {where}"
        )
    else:
        written = report.added + report.updated
        rate = written / report.seconds if report.seconds else 0
        click.echo(
            f"{report.collection}: indexed {written:,} items ({report.added:,} new, {report.updated:,} changed, "
            f"{report.removed:,} removed, {report.unchanged:,} unchanged) in {seconds:.1f} s "
            f"({rate:,.0f} items/s) in {where}"
        )
    if cat.errors:
        click.echo(
            f"{len(cat.errors)} malformed rows were skipped (listed above); items already indexed were kept.", err=True
        )
    if images and any(it.image for it in cat.items):
        _index_images(settings, idx, cat, quiet)
    if find_checkpoint(settings, catalog) is not None:
        # The ranking head's signals are prepared here from the data folder, once, so that serving never reads it.
        ranker = load_ranker(settings, catalog)
        if ranker is not None:
            click.echo(f"ranking head ready ({Path(ranker.meta['path']).name})")


def _index_images(settings: Settings, idx: CatalogIndex, cat: Catalog, quiet: bool) -> None:
    report = idx.index_images(cat, image_encoder(settings, catalog=idx.catalog), progress=not quiet)
    for err in report.errors[:10]:
        click.echo(f"skipped image of {err}", err=True)
    if report.interrupted:
        click.echo("Interrupted while embedding images: run the same command again to continue.", err=True)
        sys.exit(130)
    written = report.added + report.updated
    if written or report.removed:
        rate = written / report.seconds if report.seconds else 0
        click.echo(
            f"{report.collection}: embedded {written:,} images ({report.removed:,} removed, "
            f"{report.unchanged:,} unchanged) in {report.seconds:.1f} s ({rate:,.0f} images/s)"
        )
    else:
        click.echo(f"{report.collection}: nothing changed ({report.total:,} images up to date)")
    if report.errors:
        click.echo(f"{len(report.errors)} images could not be read (the items stay searchable by text).", err=True)


def _print_hits(hits: list[Hit], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps([h.as_dict() for h in hits], ensure_ascii=False, indent=2))
        return
    table = Table(show_lines=False)
    table.add_column("#", justify="right")
    table.add_column("title")
    table.add_column("score", justify="right")
    table.add_column("details")
    for rank, hit in enumerate(hits, 1):
        meta = hit.public_metadata()
        details = "; ".join(
            f"{k}: {', '.join(v) if isinstance(v, list) else v}"
            for k, v in meta.items()
            if k in ("genres", "articleType", "baseColour", "gender", "usage", "tags")
        )
        table.add_row(str(rank), hit.title, f"{hit.score:.3f}", details)
    Console().print(table)


@main.command()
@click.argument("query", required=False, default="")
@click.option("--catalog", "-c", default="movies", show_default=True)
@click.option("--k", "-k", default=10, show_default=True, help="How many items.")
@click.option(
    "--where",
    "-w",
    multiple=True,
    help="Filter: FIELD=VALUE, FIELD!=VALUE, FIELD>=N, FIELD<N, FIELD=A..B (repeatable).",
)
@click.option(
    "--image",
    "image",
    type=click.Path(dir_okay=False),
    help="Search by photo: items that look like it (with QUERY too: both, fused).",
)
@click.option(
    "--by",
    type=click.Choice(["text", "image", "fused"]),
    default=None,
    help="text: QUERY against item texts; image: QUERY (or --image) against item photos; fused: both. "
    "Default: text, or fused with --image.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {id, title, score, ...}.")
@click.pass_obj
def search(
    settings: Settings,
    query: str,
    catalog: str,
    k: int,
    where: tuple[str, ...],
    image: str | None,
    by: str | None,
    as_json: bool,
) -> None:
    """Print the items that best match QUERY (text) and/or a photo."""
    if not query and not image:
        raise click.UsageError("give a QUERY, an --image, or both")
    idx = _index_for(settings, catalog)
    flt = parse_where(where, idx.fields())
    _print_hits(retrieve_candidates(idx, query or None, photo=image, by=by, k=k, where=flt), as_json)


@main.group()
def models() -> None:
    """The model assets: where they come from, and assembling them."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def models_list(settings: Settings, as_json: bool) -> None:
    """Show each model asset and where it resolves (without loading it)."""
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
def models_prepare(settings: Settings) -> None:
    """Assemble and verify every offline model into the cache (once; later runs do nothing)."""
    for name in ASSETS:
        started = time.perf_counter()
        path = resolve_model(name, settings)
        click.echo(f"{name:16} {path} ({time.perf_counter() - started:.1f} s)")


@main.group()
def data() -> None:
    """Getting the catalogs' data."""


@data.command("download")
@click.option("--dest", type=click.Path(file_okay=False), help="Where to put it [default HOME/data].")
@click.pass_obj
def data_download(settings: Settings, dest: str | None) -> None:
    """Download MovieLens latest-small from GroupLens (checksum verified; research use only)."""
    target = download_movielens(Path(dest) if dest else settings.home / "data")
    click.echo(
        f"MovieLens is in {target}. Use it with --data {target.parent} (the default when nothing else is found)."
    )
