"""ReDial: the protocol's samples, rendering of mentions, the mapping matcher, and `recagent eval redial`."""

from __future__ import annotations

import json
import re

import pytest
from conftest import run_cli

from recagent.tools.catalog import load_catalog
from recagent.tools.datasets.redial import (
    MENTION,
    compare_mappings,
    default_mapping,
    load_dialogues,
    match_titles,
    protocol_samples,
    redial_dir,
    redial_titles,
    render,
    split_year,
)
from recagent.tools.text import title_key


@pytest.fixture(scope="module")
def titles(movies):
    return {it.id: it.title for it in movies.items}


def test_dev_has_the_protocols_860_samples(settings, titles):
    dialogues = load_dialogues(redial_dir(settings) / "dev.jsonl")
    mapping = default_mapping(settings)
    samples = protocol_samples(dialogues, mapping, titles)
    assert len(dialogues) == 340
    assert len(samples) == 860
    for s in samples:
        assert s.target not in s.exclude  # never mentioned in an earlier message
        assert s.target in titles
        assert all(role in ("seeker", "recommender") for role, _ in s.messages)
        # every mapped mention in the input is rendered as its MovieLens "Title (Year)"
        for _, text in s.messages:
            assert not any(rid in mapping for rid in MENTION.findall(text))


def test_the_all_mentions_protocol_counts_repeats_and_leaves_nothing_out(settings, titles):
    dialogues = load_dialogues(redial_dir(settings) / "dev.jsonl")
    mapping = default_mapping(settings)
    new = protocol_samples(dialogues, mapping, titles)
    every = protocol_samples(dialogues, mapping, titles, protocol="all-mentions")
    assert len(every) > len(new)
    assert all(not s.exclude for s in every)
    repeats = [s for s in every if s.target in {m.item for m in s.mentions}]
    assert repeats  # a movie named again by the recommender is a sample here, never under new-items
    assert {(s.dialogue, s.turn, s.target) for s in new} <= {(s.dialogue, s.turn, s.target) for s in every}
    with pytest.raises(ValueError, match="unknown ReDial protocol"):
        protocol_samples(dialogues[:1], mapping, titles, protocol="everything")


def test_samples_see_only_the_messages_before_the_suggestion(settings, titles):
    dialogue = load_dialogues(redial_dir(settings) / "dev.jsonl", limit=1)[0]
    samples = protocol_samples([dialogue], default_mapping(settings), titles)
    assert samples
    for s in samples:
        assert len(s.messages) == s.turn
        suggesting = dialogue["messages"][s.turn]
        assert suggesting["senderWorkerId"] == dialogue["respondentWorkerId"]
        rid = {v: k for k, v in default_mapping(settings).items() if k in dialogue["movieMentions"]}[s.target]
        assert f"@{rid}" in suggesting["text"]
        assert dialogue["respondentQuestions"][rid]["suggested"] == 1
    first = samples[0]
    assert "Super Troopers (2001)" in first.messages[0][1]  # "@111776" rendered


def test_one_renderer_for_the_protocol_and_for_speech():
    dialogue = {"movieMentions": {"1": "Police Academy  (1984)", "2": "Heat (1995)", "4": ""}}
    text = "Have you seen @1 or @2 ?  Or @3 , @4"
    # the protocol: the MovieLens "Title (Year)" when the id maps, else ReDial's name; unknown ids stay
    assert (
        render(text, dialogue, {"2": "6"}, {"6": "Heat (1995)"})
        == "Have you seen Police Academy (1984) or Heat (1995) ?  Or @3 , @4"
    )
    # spoken: no years, names from movies_with_mentions.csv when the dialogue has none, unknown ids left out
    assert (
        render(text, dialogue, names={"3": "Jaws (1975)"}, spoken=True)
        == "Have you seen Police Academy or Heat? Or Jaws,"
    )


def test_the_mapping_comparison_adds_up(settings):
    c = compare_mappings(settings, sample=5, seed=5)
    assert c["same"] + len(c["different"]) + c["only_shipped"] == c["shipped"] == len(default_mapping(settings))
    assert c["matched"] == len(c["matches"]) == c["same"] + len(c["different"]) + c["added"]
    assert len(c["shipped_rows"]) == len(c["added_rows"]) == 5
    assert all(rule in ("exact", "year±1", "title-only") for _, _, rule in c["added_rows"])
    assert compare_mappings(settings, sample=5, seed=5)["shipped_rows"] == c["shipped_rows"]  # the seed decides


def test_matcher_keeps_every_shipped_match_and_finds_more(settings, movies, titles):
    names = redial_titles(redial_dir(settings) / "movies_with_mentions.csv")
    shipped = default_mapping(settings)
    mine = match_titles(names, movies.items)
    assert all(mine[r][0] == m for r, m in shipped.items())  # no shipped row contradicted or lost
    added = {r: v for r, v in mine.items() if r not in shipped}
    assert len(added) > 300
    by_name = {names[r]: titles[m] for r, (m, _) in mine.items()}
    assert by_name["WALL-E (2008)"] == "WALL·E (2008)"
    assert by_name["Super8"] == "Super 8 (2011)"  # spaces ignored
    assert re.match(r"Taxi Driver \(1976\)", by_name["Taxi Driver  (1977)"])  # a year one apart
    # a name without a year is matched only when one MovieLens film has that title
    count: dict[str, int] = {}
    for it in movies.items:
        key = title_key(it.metadata["title"])
        count[key] = count.get(key, 0) + 1
    no_year = [(r, m) for r, (m, rule) in mine.items() if rule == "title-only"]
    assert no_year
    for r, _m in no_year:
        assert split_year(names[r])[1] is None
        assert count.get(title_key(split_year(names[r])[0]), 1) <= 1


def test_eval_redial_writes_the_figures(settings, env, tmp_path):
    out = tmp_path / "redial.json"
    run = run_cli(env, "eval", "redial", "--limit", "6", "--json", str(out), "-q", timeout=600)
    assert run.returncode == 0, run.stderr
    figures = json.loads(out.read_text())
    for key in ("recall@1", "recall@10", "recall@50", "samples", "dialogues", "timings", "systems"):
        assert key in figures
    assert figures["dialogues"] == 6
    titles = {it.id: it.title for it in load_catalog("movies", settings).items}
    expected = protocol_samples(
        load_dialogues(redial_dir(settings) / "dev.jsonl", 6), default_mapping(settings), titles
    )
    assert figures["samples"] == len(expected) > 0
    for row in figures["systems"].values():
        assert 0.0 <= row["recall@1"] <= row["recall@10"] <= row["recall@20"] <= row["recall@50"] <= 1.0
        for key, (low, high) in row["interval"].items():
            assert low <= row[key] <= high
    assert figures["protocol"] == "new-items"
    assert figures["timings"]["total_seconds"] > 0
    assert "| system | Recall@1 | Recall@10 | Recall@20 | Recall@50 |" in run.stdout
    assert "UniCRS (new items only)" in run.stdout


def test_eval_redial_curve_learns_from_more_dialogues_and_writes_figures_and_a_plot(settings, env, tmp_path):
    out, png = tmp_path / "curve.json", tmp_path / "curve.png"
    run = run_cli(
        env,
        "eval",
        "redial-curve",
        "--sizes",
        "40,20",
        "--epochs",
        "2",
        "--limit",
        "20",
        "-q",
        "--json",
        str(out),
        "--plot",
        str(png),
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    figures = json.loads(out.read_text())
    rows = figures["sizes"]
    assert [r["train_dialogues"] for r in rows] == [20, 40]  # sorted
    assert 0 < rows[0]["train_samples"] < rows[1]["train_samples"]
    assert rows[1]["dialogues"] == 40 + figures["valid_dialogues"] == 60
    titles = {it.id: it.title for it in load_catalog("movies", settings).items}
    dev = protocol_samples(load_dialogues(redial_dir(settings) / "dev.jsonl", 20), default_mapping(settings), titles)
    assert figures["dev_samples"] == len(dev) > 0
    for row in rows:
        assert 0.0 <= row["recall@1"] <= row["recall@10"] <= row["recall@20"] <= row["recall@50"] <= 1.0
        assert row["recall@50"] > 0  # the mixture finds some targets among 9,742 movies
        for key, (low, high) in row["interval"].items():
            assert low <= row[key] <= high
        assert 1 <= row["epoch"] <= 2
        assert 0.0 < row["targets_suggested"] < 1.0  # some dev targets were suggested in those 20-40 dialogues
    assert rows[0]["targets_suggested"] <= rows[1]["targets_suggested"]  # the 40 hold the 20
    assert set(figures["fits"]) == {"recall@1", "recall@10", "recall@50"}
    assert "| train dialogues | samples | Recall@1 |" in run.stdout and "per doubling" in run.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_redial_curve_refuses_sizes_that_are_not_numbers_and_an_empty_limit(env):
    run = run_cli(env, "eval", "redial-curve", "--sizes", "ten,20", timeout=120)
    assert run.returncode == 2
    assert "not a comma-separated list of numbers" in run.stderr and "Traceback" not in run.stderr
    run = run_cli(env, "eval", "redial-curve", "--limit", "0", timeout=120)
    assert run.returncode == 2 and "--limit" in run.stderr and "Traceback" not in run.stderr
