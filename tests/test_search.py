"""Acceptance searches on the real catalogs, through the real command, on the embedded store and a Chroma server."""

import json

import pytest
from conftest import run_cli


@pytest.fixture(scope="module", params=["embedded", "server"])
def store(request, settings, env, tmp_path_factory):
    """Both catalogs indexed by `recagent index`, in the embedded store or in a Chroma server on loopback."""
    if request.param == "embedded":
        request.getfixturevalue("movies_index")
        request.getfixturevalue("fashion_index")
        return env
    url = request.getfixturevalue("chroma_server")
    server_env = {**env, "RECAGENT_CHROMA_URL": url}
    for catalog in ("movies", "fashion"):
        done = run_cli(server_env, "index", "--catalog", catalog, "-q", timeout=900)
        assert done.returncode == 0, done.stderr
        assert f"indexed {9742 if catalog == 'movies' else 9583:,} items" in done.stdout
        assert url in done.stdout
    return server_env


def search(env, *args) -> list[dict]:
    done = run_cli(env, "search", *args, "--json", timeout=120)
    assert done.returncode == 0, done.stderr
    hits = json.loads(done.stdout)
    assert all({"id", "title", "score"} <= set(h) for h in hits)
    return hits


def test_toy_story_for_toys_that_come_to_life(store):
    hits = search(store, "animated movie about toys that come to life")
    assert "Toy Story (1995)" in [h["title"] for h in hits[:5]]
    assert len(hits) == 10 and hits[0]["score"] >= hits[-1]["score"]


def test_star_wars_for_jedi_knights(store):
    hits = search(store, "space opera with jedi knights", "--k", "5")
    assert len(hits) == 5 and any(h["title"].startswith("Star Wars") for h in hits)


def test_where_filter_returns_only_matching_movies(store):
    hits = search(store, "funny road trip", "--where", "genre=Comedy", "--where", "year=1980..1989", "--k", "20")
    assert len(hits) == 20
    assert all("Comedy" in h["genres"] and 1980 <= h["year"] <= 1989 for h in hits)
    unfiltered = search(store, "funny road trip", "--k", "20")
    assert any(not (1980 <= h.get("year", 0) <= 1989) for h in unfiltered)  # the filter did something


def test_red_dress_for_a_summer_wedding(store):
    hits = search(store, "red dress for a summer wedding", "--catalog", "fashion")
    red_dresses = [h for h in hits if h["articleType"] == "Dresses" and h["baseColour"] == "Red"]
    # The catalog holds exactly three red dresses: all of them lead, and the rest is red or a dress.
    assert len(red_dresses) == 3 and all(hits.index(h) < 5 for h in red_dresses)
    assert sum(h["articleType"] == "Dresses" or h["baseColour"] == "Red" for h in hits) >= 9


def test_fashion_filters_on_colour_and_type(store):
    hits = search(
        store, "shoes for the office", "--catalog", "fashion", "--where", "colour=black", "--where", "type=Formal Shoes"
    )
    assert len(hits) == 10 and all(h["baseColour"] == "Black" and h["articleType"] == "Formal Shoes" for h in hits)


def test_second_index_run_says_nothing_changed(store):
    done = run_cli(store, "index", "--catalog", "movies")
    assert done.returncode == 0 and "nothing changed (9,742 items up to date" in done.stdout
