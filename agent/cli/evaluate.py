"""Evaluations that print figures and write JSON (and reports)."""

from __future__ import annotations

from pathlib import Path

import click

from recagent.evals import eval_feedback as feedback
from recagent.evals import eval_images as images
from recagent.evals import eval_movielens as movielens
from recagent.evals import eval_redial as redial
from recagent.evals import eval_redial_curve as redial_curve
from recagent.evals import eval_voice as voice
from recagent.evals.common import write_json
from recagent.tools.datasets.redial import PROTOCOLS, compare_mappings, write_mapping
from recagent.tools.settings import Settings

from .app import main
from .options import comma_list


@main.group("eval")
def eval_group() -> None:
    """Evaluations that print figures and write JSON."""


@eval_group.command("voice")
@click.option("--n", default=50, show_default=True, help="How many ReDial seeker turns to speak.")
@click.option(
    "--models", default="whisper-tiny-en,whisper-base", show_default=True, help="Speech models, comma-separated."
)
@click.option(
    "--backends", default="faster-whisper,openai-whisper", show_default=True, help="Speech backends, comma-separated."
)
@click.option(
    "--float32/--no-float32",
    default=True,
    show_default=True,
    help="Also run faster-whisper with float32 weights (shows what int8 changes).",
)
@click.option(
    "--repeats",
    default=1,
    show_default=True,
    help="Time each transcription this many times and keep the fastest (for a busy machine).",
)
@click.option(
    "--sets",
    default="movies",
    show_default=True,
    help="Spoken request sets, comma-separated: movies (ReDial seeker turns), fashion (requests from products), "
    "fr, es, de, it (requests in those languages, spoken by espeak-ng's voice of each).",
)
@click.option(
    "--language",
    type=click.Choice(voice.LANGUAGE_CHOICES),
    default="en",
    show_default=True,
    help="Hear every clip as English (en, as before), in the language detected among en, fr, es, de, it (auto), "
    "or both side by side.",
)
@click.option(
    "--vocabulary",
    type=click.Choice(voice.VOCABULARY_CHOICES),
    default="off",
    show_default=True,
    help="Tell Whisper the catalog's own words (on), not (off: decoded as before), or both side by side.",
)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the figures here.")
@click.pass_obj
def eval_voice(
    settings: Settings,
    n: int,
    models: str,
    backends: str,
    float32: bool,
    repeats: int,
    sets: str,
    vocabulary: str,
    language: str,
    json_out: str | None,
) -> None:
    """Word error rate, speed and retrieval of spoken requests, per speech backend and model."""
    results = voice.run_voice_eval(
        settings,
        n,
        comma_list(models),
        comma_list(backends),
        float32=float32,
        repeats=repeats,
        sets=comma_list(sets),
        vocabulary=vocabulary,
        language=language,
    )
    if json_out:
        write_json(results, json_out)
        click.echo(f"wrote {json_out}")


@eval_group.command("images")
@click.option("--near-duplicates", default=500, show_default=True, help="How many perturbed photos to look up.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the figures here.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.pass_obj
def eval_images(settings: Settings, near_duplicates: int, json_out: str | None, quiet: bool) -> None:
    """Photo retrieval on the 1,000 held-out fashion products: type, colour, text->image, near-duplicates."""
    figures = images.evaluate_images(
        settings, near_duplicates=near_duplicates, progress=not quiet, log=lambda m: click.echo(m, err=True)
    )
    click.echo(images.format_table(figures))
    click.echo(
        f"({figures['gallery']:,} photos, {figures['held_out_queries']} held-out queries, "
        f"{figures['seconds']:.0f} s; encoder {figures['encoder']})"
    )
    if json_out:
        write_json(figures, json_out)
        click.echo(f"wrote {json_out}")


@eval_group.command("redial")
@click.option(
    "--data",
    "data_file",
    type=click.Path(dir_okay=False, exists=True),
    help="ReDial JSON-lines file [default DATA/redial/dev.jsonl].",
)
@click.option("--limit", type=int, help="Only the first N dialogues.")
@click.option(
    "--protocol",
    type=click.Choice(PROTOCOLS),
    default="new-items",
    show_default=True,
    help="new-items: suggested movies not named earlier, earlier mentions left out of the ranking; all-mentions: "
    "every movie a recommender names, repeats included (the protocol of the published tables).",
)
@click.option(
    "--planner",
    type=click.Choice(["none", "local", "openai", "scripted"]),
    default="none",
    show_default=True,
    help="none: the recommendation pipeline without the LLM (fast); local/openai: the "
    "full agent on each sample (slow: use --limit).",
)
@click.option("--model", envvar="RECAGENT_LLM_MODEL", help="The planner's model (as for `ask --model`).")
@click.option("--base-url", envvar="OPENAI_BASE_URL", help="OpenAI-compatible endpoint for --planner openai.")
@click.option("--timeout", default=120.0, show_default=True)
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False, exists=True),
    help="Ranking-head checkpoint [default: the one the agent uses].",
)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the figures here.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.pass_obj
def eval_redial(
    settings: Settings,
    data_file: str | None,
    limit: int | None,
    protocol: str,
    planner: str,
    model: str | None,
    base_url: str | None,
    timeout: float,
    checkpoint: str | None,
    json_out: str | None,
    quiet: bool,
) -> None:
    """Recall@1/10/20/50 on ReDial dialogues (whole MovieLens catalog ranked), beside baselines and published work."""
    path = Path(data_file) if data_file else settings.require_data() / "redial" / "dev.jsonl"
    figures = redial.run_redial_eval(
        settings,
        path,
        limit=limit,
        planner=planner,
        model=model,
        base_url=base_url,
        timeout=timeout,
        checkpoint=checkpoint,
        protocol=protocol,
        progress=not quiet,
        log=lambda m: click.echo(m, err=True),
    )
    click.echo(redial.format_table(figures))
    click.echo(
        f"({figures['samples']} samples from {figures['dialogues']} dialogues of {path.name}; "
        f"{figures['catalog_size']:,} movies ranked; protocol {figures['protocol']}; "
        f"{figures['timings']['total_seconds']:.0f} s in all; system: {figures['system']}; 95% bootstrap intervals "
        "over dialogues)"
    )
    if json_out:
        write_json(figures, json_out)
        click.echo(f"wrote {json_out}")


@eval_group.command("redial-curve")
@click.option(
    "--sizes",
    default=",".join(map(str, redial_curve.SIZES)),
    show_default=True,
    help="Numbers of ReDial train dialogues to learn from, comma-separated.",
)
@click.option("--epochs", default=15, show_default=True, help="Epochs per size (the best on valid is kept).")
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N valid and dev dialogues.")
@click.option("--plot", "plot_out", type=click.Path(dir_okay=False), help="Draw the curve into this PNG.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the figures here.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.pass_obj
def eval_redial_curve(
    settings: Settings,
    sizes: str,
    epochs: int,
    limit: int | None,
    plot_out: str | None,
    json_out: str | None,
    quiet: bool,
) -> None:
    """ReDial dev recall of the head's conversation mixture learned from n train dialogues, for each n."""
    try:
        numbers = tuple(int(n) for n in sizes.split(",") if n.strip())
    except ValueError:
        raise click.BadParameter(f"{sizes!r} is not a comma-separated list of numbers", param_hint="--sizes") from None
    if not numbers or min(numbers) < 1:
        raise click.BadParameter("give at least one number of dialogues, each 1 or more", param_hint="--sizes")
    figures = redial_curve.run_redial_curve(
        settings, numbers, epochs=epochs, limit=limit, progress=not quiet, log=lambda m: click.echo(m, err=True)
    )
    click.echo(redial_curve.format_table(figures))
    click.echo(
        f"({figures['dev_samples']} dev samples from {figures['dev_dialogues']} dialogues, protocol "
        f"{figures['protocol']}; {figures['catalog_size']:,} movies ranked; {figures['seconds']:.0f} s; 95% bootstrap "
        "intervals over dialogues)"
    )
    if plot_out:
        click.echo(f"wrote {redial_curve.plot_curve(figures, plot_out)}")
    if json_out:
        write_json(figures, json_out)
        click.echo(f"wrote {json_out}")


@eval_group.command("movielens")
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False, exists=True),
    help="Ranking-head checkpoint [default: the one the agent uses].",
)
@click.option(
    "--tune/--no-tune",
    default=True,
    show_default=True,
    help="Choose ALS factors and regularisation on the validation item.",
)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the figures here.")
@click.pass_obj
def eval_movielens(settings: Settings, checkpoint: str | None, tune: bool, json_out: str | None) -> None:
    """The ranking head against popularity, item-kNN and ALS on MovieLens (last rating of each user held out)."""
    figures = movielens.run_movielens_eval(
        settings, checkpoint=checkpoint, tune=tune, log=lambda m: click.echo(m, err=True)
    )
    click.echo(movielens.format_table(figures))
    click.echo(f"({figures['users']} users, {figures['items']:,} movies, {figures['seconds']:.0f} s)")
    if json_out:
        write_json(figures, json_out)
        click.echo(f"wrote {json_out}")


@eval_group.command("feedback")
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False, exists=True),
    help="Ranking-head checkpoint [default: the one the agent uses].",
)
@click.option("--tune", is_flag=True, help="Choose the feedback weights on the validation users and print the grid.")
@click.option("--limit", type=int, help="Only the first N users.")
@click.option("--plot", "plot_out", type=click.Path(dir_okay=False), help="Draw the curve over k into this PNG.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the figures here.")
@click.pass_obj
def eval_feedback(
    settings: Settings,
    checkpoint: str | None,
    tune: bool,
    limit: int | None,
    plot_out: str | None,
    json_out: str | None,
) -> None:
    """Recall@10 / NDCG@10 on held-out MovieLens users with k of their likes revealed as feedback, and without."""
    figures = feedback.run_feedback_eval(
        settings, checkpoint=checkpoint, tune=tune, limit=limit, log=lambda m: click.echo(m, err=True)
    )
    click.echo(feedback.format_table(figures))
    click.echo(
        f"({figures['n_users']} {figures['users']} users; weight {figures['weight']:g}, dislike "
        f"{figures['dislike']:g}; {figures['seconds']:.0f} s)"
    )
    if plot_out:
        click.echo(f"wrote {feedback.plot_curve(figures, plot_out)}")
    if json_out:
        write_json(figures, json_out)
        click.echo(f"wrote {json_out}")


@eval_group.command("redial-mapping")
@click.option("--sample", default=100, show_default=True, help="Rows printed for checking by eye.")
@click.option("--seed", default=5, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), help="Write the stricter matcher's mapping (CSV) here.")
@click.pass_obj
def eval_redial_mapping(settings: Settings, sample: int, seed: int, out: str | None) -> None:
    """Compare the shipped ReDial -> MovieLens mapping with recagent's matcher; print rows to check by eye."""
    c = compare_mappings(settings, sample, seed)
    click.echo(
        f"ReDial movies: {c['redial_movies']:,}; shipped mapping: {c['shipped']:,}; recagent's matcher: "
        f"{c['matched']:,} ({c['same']:,} the same, {len(c['different'])} different, {c['only_shipped']} only "
        f"in the shipped one, {c['added']} added)"
    )
    click.echo(f"\n{len(c['shipped_rows'])} random rows of the shipped mapping:")
    for name, title in c["shipped_rows"]:
        click.echo(f"  {name}  ->  {title}")
    click.echo(f"\n{len(c['added_rows'])} random rows that recagent's matcher adds:")
    for name, title, rule in c["added_rows"]:
        click.echo(f"  {name}  ->  {title}  [{rule}]")
    for name, shipped_title, mine_title in c["different"]:
        click.echo(f"different: {name}: shipped {shipped_title}, recagent {mine_title}")
    if out:
        write_mapping(out, c["matches"], c["names"], c["titles"])
        click.echo(f"wrote {out}")
