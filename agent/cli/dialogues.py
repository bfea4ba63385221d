"""The evaluations that talk to the agent: scripted dialogues and simulated users (recorded, resumable, replayable)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from recagent.agent.llm import LLM, ReplayLLM, make_llm
from recagent.evals import eval_dialogues as dialogues
from recagent.evals import report, simulate
from recagent.evals.common import write_json
from recagent.tools.errors import ConfigError, ScriptError
from recagent.tools.settings import Settings

from .evaluate import eval_group
from .options import F, comma_list, llm_options


def eval_run_options(
    record: str, replay: str, resume: str, more: Sequence[Callable[[Any], Any]] = ()
) -> Callable[[F], F]:
    """The options of a recorded evaluation run, in this order: --record, --replay, --resume (with the help texts
    given), `more`, the LLM backend, --threads and --quiet."""
    options: list[Callable[[Any], Any]] = [
        click.option("--record", type=click.Path(dir_okay=False), help=record),
        click.option("--replay", type=click.Path(dir_okay=False, exists=True), help=replay),
        click.option("--resume", is_flag=True, help=resume),
        *more,
        llm_options,
        click.option(
            "--threads",
            type=int,
            help="CPU threads of the local LLM [default: every core]; 1 is faster "
            "on a machine that other jobs keep busy.",
        ),
        click.option("--quiet", "-q", is_flag=True, help="No progress bar."),
    ]

    def decorate(func: F) -> F:
        for option in reversed(options):  # --help lists them in the order above
            func = option(func)
        return func

    return decorate


def _eval_llm(
    settings: Settings,
    replay: str | None,
    llm_kind: str,
    model: str | None,
    base_url: str | None,
    timeout: float,
    threads: int | None = None,
) -> LLM:
    """The LLM of an evaluation: a recorded run's answers with --replay (no model is loaded), else the backend."""
    if replay:
        return ReplayLLM(replay)
    llm = make_llm(llm_kind, settings, model=model, base_url=base_url, timeout=timeout)
    if threads and hasattr(llm, "threads"):
        llm.threads = threads  # read when the model loads
    return llm


def _write_outputs(
    figures: dict, json_out: str | None, report_dir: str | None, write_report: Callable[[dict, str], dict[str, Path]]
) -> None:
    """The end of an evaluation run: the figures as JSON (--json), then the report (--report), each said where."""
    if json_out:
        write_json(figures, json_out)
        click.echo(f"wrote {json_out}")
    if report_dir:
        written = write_report(figures, report_dir)
        click.echo(f"wrote {written['markdown']} and {written['html']}")


def _say_recorded(recording: str | None) -> None:
    """Where the run's LLM calls were recorded (nothing on replay)."""
    if recording:
        click.echo(f"LLM calls recorded in {recording} (replay with --replay {recording})")


@eval_group.command("dialogues")
@click.argument("path", required=False, type=click.Path(exists=True))
@click.option(
    "--family",
    "families",
    help=f"Only these families, comma-separated ({', '.join(dialogues.FAMILIES)}).",
)
@click.option("--limit", type=int, help="Only the first N scripts (after --family).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write every turn and the figures here.")
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False),
    help="Write report.md, report.html and the plots into this folder.",
)
@eval_run_options(
    record="Record the LLM calls here (JSON lines) [default: OUT.llm.jsonl beside --json, else in --report, "
    "else HOME/eval-recordings/].",
    replay="Answer from a recording of an earlier run instead of an LLM (no model is loaded), and compare "
    "the outcomes with the recorded ones.",
    resume="Continue an interrupted run from its recording (--record or the default): finished scripts are kept, "
    "the rest run.",
    more=[click.option("--validate", is_flag=True, help="Only check the scripts (form, items, files) and exit.")],
)
@click.pass_obj
def eval_dialogues(
    settings: Settings,
    path: str | None,
    families: str | None,
    limit: int | None,
    json_out: str | None,
    report_dir: str | None,
    record: str | None,
    replay: str | None,
    resume: bool,
    validate: bool,
    llm_kind: str,
    model: str | None,
    base_url: str | None,
    timeout: float,
    threads: int | None,
    quiet: bool,
) -> None:
    """Run the scripted evaluation dialogues (PATH: a script or a folder; default the packaged ones) and check
    every expectation: pass rates per script, expectation and family, hit@k, off-catalog items, latency."""
    try:
        scripts = dialogues.load_scripts(path, comma_list(families) or None, limit)
        if validate:
            problems = dialogues.validate_scripts(scripts, settings)
            for problem in problems:
                click.echo(problem, err=True)
            click.echo(
                f"{len(scripts)} scripts, {sum(len(s.turns) for s in scripts)} turns: "
                + (f"{len(problems)} problems" if problems else "all valid")
            )
            sys.exit(1 if problems else 0)
        llm = _eval_llm(settings, replay, llm_kind, model, base_url, timeout, threads)
        recording = dialogues.recording_path(record, replay, json_out, report_dir, settings)
        figures = dialogues.run_dialogues(
            scripts, settings, llm, record=recording, replay=replay, resume=resume, progress=not quiet
        )
    except ScriptError as exc:
        raise ConfigError(str(exc)) from None
    click.echo(dialogues.format_summary(figures))
    _write_outputs(figures, json_out, report_dir, report.dialogue_report)
    _say_recorded(figures["recording"])
    if replay and not figures["replay"]["identical"]:
        for line in figures["replay"]["differences"][:20]:
            click.echo(line, err=True)
        sys.exit(1)


@eval_group.command("simulate")
@click.option("--catalog", "-c", type=click.Choice(["movies", "fashion"]), default="movies", show_default=True)
@click.option("--n", default=30, show_default=True, help="Simulated users (hidden targets) per mode.")
@click.option("--modes", default="text", show_default=True, help="Comma-separated: text, voice, image.")
@click.option(
    "--k",
    default=10,
    show_default=True,
    help="Items the agent lists each turn; success means the target is among them.",
)
@click.option("--turns", "max_turns", default=5, show_default=True, help="The most turns a user takes.")
@click.option("--seed", default=0, show_default=True, help="Which targets are drawn.")
@click.option(
    "--writer/--no-writer",
    default=True,
    show_default=True,
    help="Let the LLM write each reply's sentence; --no-writer puts a fixed one (the items are the same, "
    "a turn takes about half the time; latency then leaves the writing out).",
)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write every dialogue and the figures here.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False), help="Write a Markdown/HTML report here.")
@eval_run_options(
    record="Record the LLM calls here (JSON lines).",
    replay="Answer from a recording of an earlier run instead of an LLM.",
    resume="Continue an interrupted run from its recording: finished users are kept.",
)
@click.pass_obj
def eval_simulate(
    settings: Settings,
    catalog: str,
    n: int,
    modes: str,
    k: int,
    max_turns: int,
    seed: int,
    writer: bool,
    json_out: str | None,
    report_dir: str | None,
    record: str | None,
    replay: str | None,
    resume: bool,
    llm_kind: str,
    model: str | None,
    base_url: str | None,
    timeout: float,
    threads: int | None,
    quiet: bool,
) -> None:
    """Simulated users with a hidden target describe it turn by turn (never naming it): success@k within the
    turn budget, turns needed and title leaks, per mode (text, voice, image)."""
    llm = _eval_llm(settings, replay, llm_kind, model, base_url, timeout, threads)
    recording = dialogues.recording_path(record, replay, json_out, None, settings)
    figures = simulate.run_simulation(
        settings,
        llm,
        catalog,
        n,
        comma_list(modes),
        k=k,
        max_turns=max_turns,
        seed=seed,
        record=recording,
        replay=replay,
        writer=writer,
        resume=resume,
        progress=not quiet,
    )
    click.echo(simulate.format_simulation(figures))
    _say_recorded(figures["recording"])
    _write_outputs(figures, json_out, report_dir, report.simulate_report)
    if figures["leaks"]:
        click.echo(f"Error: the simulated user named its target {figures['leaks']} times", err=True)
        sys.exit(1)
