"""Readable reports of the evaluation dialogues and the simulated users: Markdown and HTML with PNG plots.

A report is built as a list of blocks (headings, paragraphs, tables, images) and written twice, as report.md and
report.html, beside the plots; the HTML embeds nothing remote and opens from the folder as it is.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from recagent.evals.common import pyplot, save_figure

Block = tuple  # ("h", level, text) | ("p", text) | ("table", header, rows) | ("img", file, caption) | ("pre", text)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


# ---- plots ---------------------------------------------------------------------------------------------------


def _save(fig: Any, ax: Any, path: Path, title: str) -> Path:
    """Title, slanted labels, a tight layout; the figure written to path and closed."""
    ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=30)
    return save_figure(fig, path)


def plot_bars(
    path: Path, labels: list[str], values: list[float], title: str, ylabel: str, percent: bool = True
) -> Path:
    """A bar chart of one value per label."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * len(labels) + 2), 3.2))
    bars = ax.bar(labels, values, color="#4c72b0")
    for bar, value in zip(bars, values):
        ax.annotate(
            f"{value:.0%}" if percent else f"{value:g}",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_ylabel(ylabel)
    if percent:
        ax.set_ylim(0, 1.1)
    return _save(fig, ax, path, title)


def plot_latency(path: Path, samples: dict[str, list[float]], title: str) -> Path:
    """Box plots of the seconds spent per stage."""
    plt = pyplot()
    stages = [s for s, v in samples.items() if v]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(stages) + 2), 3.4))
    ax.boxplot([samples[s] for s in stages], showfliers=True)
    ax.set_xticks(range(1, len(stages) + 1), stages)
    ax.set_ylabel("seconds")
    return _save(fig, ax, path, title)


# ---- writing -------------------------------------------------------------------------------------------------


def to_markdown(blocks: list[Block]) -> str:
    """The blocks as Markdown."""
    out = []
    for block in blocks:
        kind = block[0]
        if kind == "h":
            out.append("#" * block[1] + " " + block[2])
        elif kind == "p":
            out.append(block[1])
        elif kind == "pre":
            out.append("```\n" + block[1] + "\n```")
        elif kind == "img":
            out.append(f"![{block[2]}]({block[1]})")
        elif kind == "table":
            header, rows = block[1], block[2]
            lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += [
                "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in row) + " |" for row in rows
            ]
            out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def to_html(blocks: list[Block], title: str) -> str:
    """The blocks as one self-contained HTML page."""
    out = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0;font-size:90%}td,th{border:1px solid #ccc;padding:3px 8px;"
        "text-align:left;vertical-align:top}th{background:#f2f2f2}img{max-width:100%}"
        "pre{background:#f7f7f7;padding:.8em;overflow-x:auto}.fail{color:#b00}.ok{color:#070}</style></head><body>"
    ]
    for block in blocks:
        kind = block[0]
        if kind == "h":
            out.append(f"<h{block[1]}>{html.escape(block[2])}</h{block[1]}>")
        elif kind == "p":
            out.append(f"<p>{html.escape(block[1])}</p>")
        elif kind == "pre":
            out.append(f"<pre>{html.escape(block[1])}</pre>")
        elif kind == "img":
            out.append(
                f"<figure><img src='{html.escape(block[1])}' alt='{html.escape(block[2])}'>"
                f"<figcaption>{html.escape(block[2])}</figcaption></figure>"
            )
        elif kind == "table":
            head = "".join(f"<th>{html.escape(str(h))}</th>" for h in block[1])
            rows = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in block[2])
            out.append(f"<table><tr>{head}</tr>{rows}</table>")
    out.append("</body></html>")
    return "\n".join(out)


def _cell(value: object) -> str:
    text = html.escape(str(value))
    css = " class='fail'" if str(value).startswith("FAIL") else " class='ok'" if str(value) == "pass" else ""
    return f"<td{css}>{text}</td>"


def write_report(blocks: list[Block], folder: str | Path, title: str, name: str = "report") -> dict[str, Path]:
    """report.md and report.html in folder (the plots are already there)."""
    folder = Path(folder)
    md = folder / f"{name}.md"
    page = folder / f"{name}.html"
    md.write_text(to_markdown(blocks), encoding="utf-8")
    page.write_text(to_html(blocks, title), encoding="utf-8")
    return {"markdown": md, "html": page}


# ---- the dialogue report -------------------------------------------------------------------------------------


def dialogue_report(figures: dict, folder: str | Path) -> dict[str, Path]:
    """The report of one `eval dialogues` run: summary, families, expectation kinds, latency, every failure."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    families = figures["by_family"]
    kinds = figures["by_expectation"]
    plot_bars(
        folder / "pass_by_family.png",
        list(families),
        [f["script_pass_rate"] or 0 for f in families.values()],
        "Scripts passed, per family",
        "share of scripts",
    )
    plot_bars(
        folder / "pass_by_expectation.png",
        list(kinds),
        [k["rate"] or 0 for k in kinds.values()],
        "Expectations passed, per kind",
        "share passed",
    )
    turns = [t for s in figures["scripts"] for t in s["turns"]]
    samples = {
        stage: [t["timings"][stage] for t in turns if stage in t["timings"] and not t["error"]]
        for stage in figures["latency"]
    }
    plot_latency(folder / "latency.png", samples, "Seconds per turn, per stage")
    by_turn = figures["failures_by_turn"]
    plot_bars(
        folder / "failures_by_turn.png",
        [f"turn {k}" for k in sorted(by_turn, key=int)],
        [by_turn[k] for k in sorted(by_turn, key=int)],
        "Failed turns, by position in the dialogue",
        "failed turns",
        percent=False,
    )

    hit = ", ".join(f"{k} {_pct(v['rate'])} (n={v['n']})" for k, v in figures["hit_at"].items()) or "none"
    reach = figures["turns_to_success"]
    blocks: list[Block] = [
        ("h", 1, "Evaluation dialogues"),
        (
            "p",
            f"Model {figures['model']}; {figures['n_scripts']} scripts, {figures['n_turns']} turns, "
            f"{figures['n_checks']} expectations checked; run took {figures['seconds']:.0f} s"
            + (
                f" (resumed: {figures['resumed_scripts']} scripts were done before an interruption, their time "
                "not counted)."
                if figures.get("resumed_scripts")
                else "."
            )
            + (
                f" Replayed from {figures['replay']['file']}: "
                + (
                    "identical outcomes."
                    if figures["replay"]["identical"]
                    else f"{len(figures['replay']['differences'])} differences."
                )
                if figures.get("replay")
                else ""
            ),
        ),
        (
            "table",
            ["measure", "value"],
            [
                ["scripts passed (every expectation of every turn)", f"{_pct(figures['script_pass_rate'])}"],
                ["expectations passed", f"{_pct(figures['check_pass_rate'])} of {figures['n_checks']}"],
                ["turns passed", _pct(figures["turn_pass_rate"])],
                ["hit@k (an expected item among the first k)", hit],
                [
                    "turns to success (first turn with a hit)",
                    f"mean {reach['mean']} over {reach['reached']} of {reach['scripts_with_hit']} scripts with a hit "
                    "expectation",
                ],
                [
                    "off-catalog items shown",
                    f"{figures['off_catalog_items']} of {figures['items_shown']} ({_pct(figures['off_catalog_rate'])})",
                ],
                ["invented titles removed from replies", figures["invented_titles_removed"]],
                ["tool errors (planner called a tool wrongly)", figures["tool_errors"]],
                ["failed turns (error)", figures["turn_errors"]],
            ],
        ),
        ("h", 2, "Pass rate per family"),
        (
            "table",
            ["family", "scripts", "passed", "script pass rate", "expectation pass rate"],
            [
                [f, v["scripts"], v["scripts_passed"], _pct(v["script_pass_rate"]), _pct(v["check_pass_rate"])]
                for f, v in families.items()
            ],
        ),
        ("img", "pass_by_family.png", "Scripts passed per family"),
        ("h", 2, "Pass rate per expectation kind"),
        ("p", "no_error, in_catalog and no_repeat are checked on every turn; the others where a script asks for them."),
        (
            "table",
            ["expectation", "passed", "checked", "rate"],
            [[k, v["passed"], v["n"], _pct(v["rate"])] for k, v in kinds.items()],
        ),
        ("img", "pass_by_expectation.png", "Expectations passed per kind"),
        ("h", 2, "Latency per stage"),
        (
            "table",
            ["stage", "p50 s", "p95 s", "turns"],
            [[s, _secs(v["p50"]), _secs(v["p95"]), v["n"]] for s, v in figures["latency"].items()],
        ),
        ("img", "latency.png", "Seconds per turn, per stage"),
        ("h", 2, "Where failures happen"),
        (
            "p",
            "Failed expectations by kind: "
            + (", ".join(f"{k} {v}" for k, v in figures["failures_by_kind"].items()) or "none")
            + ".",
        ),
        ("img", "failures_by_turn.png", "Failed turns by position"),
        ("h", 2, "Scripts"),
        (
            "table",
            ["script", "family", "catalog", "result", "expectations", "failed"],
            [
                [
                    s["name"],
                    s["family"],
                    s["catalog"],
                    "pass" if s["passed"] else "FAIL",
                    f"{s['checks_passed']}/{s['checks']}",
                    _failed_checks(s),
                ]
                for s in figures["scripts"]
            ],
        ),
        ("h", 2, "Failed turns in full"),
    ]
    for s in figures["scripts"]:
        for t in s["turns"]:
            if not t["passed"]:
                blocks += [("h", 3, f"{s['name']}, turn {t['turn']}"), ("pre", _failed_turn(t))]
    return write_report(blocks, folder, "recagent evaluation dialogues")


def _failed_checks(script: dict) -> str:
    """'turn 1 forbid (detail); turn 2 hit (detail)': a script's failed expectations in one cell."""
    return "; ".join(
        f"turn {t['turn']} {c['kind']}" + (f" ({c['detail']})" if c["detail"] else "")
        for t in script["turns"]
        for c in t["checks"]
        if not c["passed"]
    )


def _failed_turn(turn: dict) -> str:
    """A failed turn in full: what the user said (or showed), the tool calls, the reply, what failed."""
    said = turn["text"] if not turn["transcript"] else f"{turn['text']} (heard from {turn['input']})"
    image = f"\nimage: {turn['input']['image']}" if "image" in turn["input"] else ""
    failed = "; ".join(f"{c['kind']}: {c['detail']}" for c in turn["checks"] if not c["passed"])
    return (
        f"user: {said}{image}\ntools: {[(c['name'], c['arguments']) for c in turn['tool_calls']]}\n"
        f"reply: {turn['reply']}\nfailed: {failed}"
    )


# ---- the simulated-user report -------------------------------------------------------------------------------


def simulate_report(figures: dict, folder: str | Path, name: str = "simulate") -> dict[str, Path]:
    """The report of an `eval simulate` run: success@k within the turn budget and turns needed, per mode."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    catalog = figures["catalog"]
    modes = figures["modes"]
    plot_bars(
        folder / f"{name}_{catalog}_success.png",
        list(modes),
        [m["success_rate"] or 0 for m in modes.values()],
        f"{catalog}: success@{figures['k']} within {figures['max_turns']} turns",
        "share of users",
    )
    blocks: list[Block] = [
        ("h", 1, f"Simulated users: {catalog}"),
        (
            "p",
            f"Model {figures['model']}; {figures['n']} users per mode, each with a hidden target "
            f"({figures['targets']}); the agent lists {figures['k']} items a turn; a user stops when the target is "
            f"listed or after {figures['max_turns']} turns."
            + (
                ""
                if figures.get("writer", True)
                else " The reply sentence was not generated (--no-writer): "
                "the items are the agent's own, the latency leaves the writing out."
            )
            + f" Leaks of the target's title into the user's words: "
            f"{figures['leaks']}. Run took {figures['seconds']:.0f} s.",
        ),
        (
            "table",
            [
                "mode",
                "users",
                f"success@{figures['k']}",
                "mean turns (successes)",
                "mean turns (all)",
                "turn p50 s",
                "turn p95 s",
                "failed turns",
            ],
            [
                [
                    m,
                    v["n"],
                    _pct(v["success_rate"]),
                    v["mean_turns_success"],
                    v["mean_turns"],
                    _secs(v["latency_p50"]),
                    _secs(v["latency_p95"]),
                    v["turn_errors"],
                ]
                for m, v in modes.items()
            ],
        ),
        ("img", f"{name}_{catalog}_success.png", "success per mode"),
        ("h", 2, "Success by turn"),
        (
            "table",
            ["mode"] + [f"by turn {n}" for n in range(1, figures["max_turns"] + 1)],
            [[m] + [_pct(x) for x in v["success_by_turn"]] for m, v in modes.items()],
        ),
    ]
    return write_report(blocks, folder, f"recagent simulated users: {catalog}", name=f"{name}_{catalog}")
