"""Training commands: the image encoder and the ranking head."""

from __future__ import annotations

from pathlib import Path

import click

from recagent.tools.ranking import checkpoint_path
from recagent.tools.settings import Settings
from recagent.tools.train.image_encoder import recalibrate as recalibrate_checkpoint
from recagent.tools.train.image_encoder import train_image_encoder

from .app import main


@main.command("train-image-encoder")
@click.option(
    "--catalog",
    "-c",
    type=click.Choice(["movies", "fashion", "all"]),
    default="all",
    show_default=True,
    help="Whose image-text pairs to learn from (the 1,000 evaluation products are always held out).",
)
@click.option("--epochs", default=14, show_default=True)
@click.option("--batch-size", default=256, show_default=True)
@click.option("--limit", type=int, help="Train on only this many pairs (a quick check).")
@click.option(
    "--instance-weight",
    default=0.0,
    show_default=True,
    help="Weight of a second loss pulling two augmented views of a photo together (0: one view, faster).",
)
@click.option(
    "--heads",
    default="articleType,baseColour",
    show_default=True,
    help="Catalog fields the tower learns to predict from a photo (used to re-rank photo searches); "
    "fields the items lack are skipped; '' for none.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    help="Checkpoint to write [default HOME/image-encoder/catalog-clip-CATALOG.pt]; a .state.pt beside "
    "it holds the last epoch, and the same command resumes from it.",
)
@click.option(
    "--recalibrate",
    type=click.Path(exists=True, dir_okay=False),
    help="Do not train: choose this checkpoint's head weights again on the validation photos (rewrites it).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.pass_obj
def train_image_encoder_command(
    settings: Settings,
    catalog: str,
    epochs: int,
    batch_size: int,
    limit: int | None,
    instance_weight: float,
    heads: str,
    out: str | None,
    recalibrate: str | None,
    quiet: bool,
) -> None:
    """Train the offline image encoder (CLIP form, locked MiniLM text tower) on the catalogs' photos."""
    if recalibrate:
        weights = recalibrate_checkpoint(
            Path(recalibrate), settings, progress=not quiet, log=lambda m: click.echo(m, err=True)
        )
        click.echo(f"rewrote {recalibrate} with head weights {weights}")
        return
    catalogs = ["movies", "fashion"] if catalog == "all" else [catalog]
    target = Path(out) if out else settings.home / "image-encoder" / f"catalog-clip-{catalog}.pt"
    result = train_image_encoder(
        catalogs,
        settings,
        target,
        epochs=epochs,
        batch_size=batch_size,
        limit=limit,
        instance_weight=instance_weight,
        heads=tuple(h for h in heads.split(",") if h),
        progress=not quiet,
        log=lambda m: click.echo(m, err=True),
    )
    click.echo(
        f"wrote {result['checkpoint']} after {result['seconds'] / 60:.1f} min of training. Use it with "
        f"RECAGENT_MODEL_IMAGE_ENCODER={result['checkpoint']} (then rerun `recagent index`)."
    )


@main.command("train-ranker")
@click.option(
    "--epochs", default=12, show_default=True, help="At most this many epochs (early stopping may end sooner)."
)
@click.option("--patience", default=3, show_default=True, help="Stop after this many epochs without improvement.")
@click.option("--batch-size", default=64, show_default=True)
@click.option("--lr", default=0.005, show_default=True, help="Adam learning rate.")
@click.option(
    "--ml-per-epoch",
    default=3000,
    show_default=True,
    help="MovieLens examples drawn per epoch (the ReDial train examples are all used, twice).",
)
@click.option("--seed", default=0, show_default=True)
@click.option("--limit", type=int, help="Only this many ReDial train dialogues and MovieLens users (a quick check).")
@click.option("--with-feedback", is_flag=True, help="Also learn from the feedback store (/like, /dislike).")
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    help="Checkpoint to write [default HOME/ranker/ranker-movies.pt, which the agent then uses]; a "
    ".state.pt beside it holds the last epoch, and the same command resumes from it.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.pass_obj
def train_ranker_command(
    settings: Settings,
    epochs: int,
    patience: int,
    batch_size: int,
    lr: float,
    ml_per_epoch: int,
    seed: int,
    limit: int | None,
    with_feedback: bool,
    out: str | None,
    quiet: bool,
) -> None:
    """Train the ranking head on MovieLens ratings and ReDial train dialogues (validation: ReDial valid)."""
    from recagent.tools.train.ranker import train_ranker  # noqa: PLC0415  (imports torch: heavy, only to train)

    target = Path(out) if out else checkpoint_path(settings, "movies")
    result = train_ranker(
        settings,
        target,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        ml_per_epoch=ml_per_epoch,
        patience=patience,
        seed=seed,
        limit=limit,
        with_feedback=with_feedback,
        progress=not quiet,
        log=lambda m: click.echo(m, err=True),
    )
    stop = "early stopping" if result["stopped_early"] else "the last epoch"
    click.echo(
        f"wrote {result['checkpoint']} (best epoch {result['best_epoch']} of {result['epochs_run']}, "
        f"{stop}) after {result['seconds'] / 60:.1f} min. "
        + (
            "The agent uses it from now on."
            if not out
            else f"Use it with RECAGENT_MODEL_RANKER={result['checkpoint']}."
        )
    )
