"""Which turns plain code plans without the LLM, and the filters it reads (agent/rules.py)."""

import pytest

from recagent.agent.rules import code_plan, has_name
from recagent.agent.understanding import read_message
from recagent.tools.catalog import catalog_profile

pytestmark = pytest.mark.unit

GENRES = ["Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Horror", "Musical", "Romance", "Sci-Fi"]
MOVIES = {"genres": {"type": "list", "values": GENRES}, "year": {"type": "int"}, "title": {"type": "str"}}
FASHION = {
    "gender": {"type": "str", "values": ["Boys", "Girls", "Men", "Unisex", "Women"]},
    "masterCategory": {"type": "str", "values": ["Accessories", "Apparel", "Footwear"]},
    "subCategory": {"type": "str", "values": ["Bags", "Shoes", "Topwear", "Watches"]},
    "articleType": {
        "type": "str",
        "values": ["Casual Shoes", "Handbags", "Sandals", "Sports Shoes", "Tshirts", "Watches"],
    },
    "baseColour": {"type": "str", "values": ["Black", "Blue", "Brown", "Navy Blue", "White"]},
    "season": {"type": "str", "values": ["Summer", "Winter"]},
}


ENGLISH = set(
    "scary shark funny animated kids heist comedy dinosaurs science fiction action watch men tell jaws die hard "
    "funnier directed romantic set new york rainy day".split()
)


def plan(text, catalog="movies", follow_up=False, titles=()):
    fields = MOVIES if catalog == "movies" else FASHION
    profile = catalog_profile(catalog)
    reading = read_message(text, fields, [], [1990, 1995] if follow_up else [])
    known = ENGLISH.__contains__
    return code_plan(text, reading, list(titles), follow_up, fields, profile.facets, profile.kinds, known, profile.noun)


@pytest.mark.parametrize(
    ("text", "query", "filters"),
    [
        ("I want a scary movie about a shark", "scary shark", ["genres=Horror"]),
        (
            "a funny animated film for my kids",
            "funny animated kids",
            ["genres=Comedy", "genres=Animation", "genres=Children"],
        ),
        ("a heist movie from the 1990s", "heist", ["genres=Crime"]),  # the decade is the reading's
        ("a 90s comedy, no romance", "comedy", ["genres=Comedy"]),  # "romance" stays out of query and filters
        ("a movie about dinosaurs", "dinosaurs", []),
    ],
)
def test_a_first_request_that_only_describes_is_searched_by_code(text, query, filters):
    assert plan(text) == {"tool": "search_catalog", "args": {"query": query, "filters": filters}}


def test_fashion_values_are_named_on_the_most_specific_field_longest_first():
    assert plan("white casual shoes for women", "fashion")["args"]["filters"] == [
        "articleType=Casual Shoes",
        "baseColour=White",
        "gender=Women",
    ]
    watch = plan("a watch for men", "fashion")["args"]
    assert watch == {"query": "watch men", "filters": ["articleType=Watches", "gender=Men"]}
    assert plan("a blue striped t-shirt for men", "fashion")["args"]["filters"] == [
        "baseColour=Blue",
        "articleType=Tshirts",
        "gender=Men",
    ]
    # the negated value is the reading's (articleType!=Sandals), never a wanted one
    assert plan("summer footwear for men, no sandals", "fashion")["args"]["filters"] == [
        "masterCategory=Footwear",
        "gender=Men",
    ]


@pytest.mark.parametrize(
    "text", ["hi", "qwzx blorp fnargle 42", "can you recommend something?", "I need something to wear"]
)
def test_a_message_with_nothing_to_search_for_gets_a_question(text):
    found = plan(text)
    assert found["tool"] == "ask_user" and "What kind of movie" in found["args"]["question"]


@pytest.mark.parametrize(
    "text",
    [
        "Tell me about Jaws, and then recommend something similar",
        "Die Hard, but funnier",
        "who directed the shark movie?",
        "a romantic comedy set in New York",  # a name: maybe a title, the planner reads it
    ],
)
def test_questions_and_names_go_to_the_planner(text):
    assert plan(text) is None


def test_a_reference_resolved_by_the_reading_is_no_unknown_name():
    said = "Something like The Matrix, mind-bending science fiction with action"
    found = plan(said, titles=["Matrix, The (1999)"])
    assert found is not None and found["tool"] == "search_catalog"
    assert "matrix" not in found["args"]["query"] and "science fiction" in found["args"]["query"]


@pytest.mark.parametrize(
    ("text", "filters"),
    [
        ("older ones", []),
        ("not the first one, show me others", []),
        ("no romance please", []),
        ("anything more recent than these?", []),
        ("1990s", []),
        ("adventure ones", ["genres=Adventure"]),
        ("more like these", []),
    ],
)
def test_a_follow_up_that_only_refines_is_a_refinement(text, filters):
    assert plan(text, follow_up=True) == {"tool": "refine_last", "args": {"filters": filters, "reject": []}}


@pytest.mark.parametrize(
    ("text", "catalog"),
    [
        ("I've seen Ghostbusters and Airplane, what else?", "movies"),
        ("they didn't like Shrek, show me different ones", "movies"),
        ("something funnier", "movies"),  # a refinement or a new search: only the LLM can tell
    ],
)
def test_a_follow_up_that_says_something_new_goes_to_the_planner(text, catalog):
    assert plan(text, catalog, follow_up=True) is None


def test_a_follow_up_that_starts_over_is_a_new_search():
    comedy = plan("let's switch to a light comedy, no romance", follow_up=True)
    assert comedy == {"tool": "search_catalog", "args": {"query": "switch light comedy", "filters": ["genres=Comedy"]}}
    assert plan("now something for a rainy day", follow_up=True)["args"] == {"query": "rainy day", "filters": []}
    watch = plan("now a watch to go with them", "fashion", follow_up=True)
    assert watch["tool"] == "search_catalog" and watch["args"]["filters"] == ["articleType=Watches"]


def test_colours_in_a_follow_up_refine():
    assert plan("actually white ones instead", "fashion", follow_up=True)["args"]["filters"] == ["baseColour=White"]


def test_names_are_capitalised_words_inside_a_sentence():
    assert has_name("Tell me about Jaws") and has_name("so. I liked it, Heat too")
    assert not has_name("I want a movie. Something scary") and not has_name("I'm bored")
    assert not has_name("like The Matrix", {"the", "matrix"})


def test_a_list_turned_down_with_more_said_is_the_same_search_told_more():
    found = plan("None of those. It's from the 1990s. Something with holocaust. Think bittersweet.", follow_up=True)
    assert found == {"tool": "refine_last", "args": {"filters": [], "reject": [], "words": "holocaust bittersweet"}}
    assert plan("Not those either. It is also a comedy.", follow_up=True)["args"]["filters"] == ["genres=Comedy"]
    assert plan("No, none of these. Something like Heat with Al Pacino", follow_up=True) is None  # names: the planner
