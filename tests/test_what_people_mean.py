"""What people mean, over the real indexes with the scripted LLM playing a planner that gets it wrong: code reads
decades, relative time, negations and references (agent/understanding.py) and the items shown follow the words."""

import pytest

from recagent.agent import Agent, ScriptedLLM
from recagent.tools.text import plain_words, title_key

WELL_KNOWN = [
    "The Matrix",
    "Toy Story",
    "Jaws",
    "Star Wars",
    "The Godfather",
    "Alien",
    "Die Hard",
    "Shrek",
    "Finding Nemo",
    "Titanic",
    "Jurassic Park",
    "Back to the Future",
    "The Lion King",
    "The Terminator",
    "Pulp Fiction",
    "Fight Club",
    "Inception",
    "Forrest Gump",
    "The Dark Knight",
    "Heat",
]


def call(tool, **args):
    return {"tool": tool, "args": args}


@pytest.fixture
def make_agent(settings, movies_index):
    def make(*script, catalog="movies"):
        return Agent(ScriptedLLM(list(script)), catalog, settings.with_(code_plans=False))  # a planner at its worst

    return make


def years(items):
    return [int(i["year"]) for i in items]


def test_something_like_x_never_shows_x_nor_its_sequels(make_agent):
    """The planner does the worst thing, searching for the title itself; the list still never holds X."""
    script = []
    for title in WELL_KNOWN:
        script += [call("search_catalog", query=title, filters=[]), "Here are some."]
    agent = make_agent(*script)
    for title in WELL_KNOWN:
        conv = agent.new_conversation()
        reply = agent.turn(conv, f"Something like {title}, please")
        ref = agent.catalog.find_reference(title)
        assert ref, title
        shown = [i["title"] for i in reply.items]
        assert len(shown) == 5 and ref not in [i["id"] for i in reply.items], (title, shown)
        key = title_key(agent.catalog.title(ref))
        assert not [s for s in shown if title_key(s) == key or title_key(s).startswith(key + " ")], (title, shown)
        assert ref in conv.liked  # it guides the ranking, and stays out of later lists


def test_a_decade_newer_than_shown_and_a_negation_on_the_right_field(make_agent):
    agent = make_agent(
        call("search_catalog", query="heist movie", filters=["year<1990"]),  # "1990s" read as before 1990
        "Heists.",
        call("refine_last", filters=["year>1990"]),  # "newer" read against the oldest
        "Newer.",
        call("search_catalog", query="family adventure", filters=["colour!=Black"]),  # a field that does not exist
        "Family films.",
        call("refine_last", filters=["genre=Animation"]),
        "Animated too.",
    )
    conv = agent.new_conversation()
    nineties = agent.turn(conv, "a heist movie from the 1990s")
    assert nineties.items and all(1990 <= y <= 1999 for y in years(nineties.items)), years(nineties.items)
    assert conv.constraints == ["year=1990..1999"]
    newer = agent.turn(conv, "something newer")
    assert newer.items and min(years(newer.items)) > max(years(nineties.items)), (years(nineties.items), newer.items)
    assert conv.constraints == [f"year>{max(years(nineties.items))}"]

    conv = agent.new_conversation()
    family = agent.turn(conv, "a family adventure movie, not animated")
    assert family.items and not [i for i in family.items if "Animation" in i["genres"]], family.items
    assert conv.constraints == ["genres!=Animation"]
    taken_back = agent.turn(conv, "actually, animation is fine")
    assert "genres!=Animation" not in conv.constraints and taken_back.items


def test_items_a_person_cannot_tell_apart_are_shown_once(settings, fashion_index):
    agent = Agent(
        ScriptedLLM([call("search_catalog", query="Basics Men Blue Striped T-shirt", filters=[]), "Shirts."]),
        "fashion",
        settings,
    )
    reply = agent.turn(agent.new_conversation(), "Basics Men Blue Striped T-shirt")
    names = [plain_words(i["title"]) for i in reply.items]
    assert len(names) == 5 and len(set(names)) == 5, names
    same = agent.catalog.by_title.get(title_key("Basics Men Blue Striped T-shirt"), [])
    assert len(same) >= 2  # the catalog does hold several products of that name


def test_code_plans_the_turns_it_can_read_whole_and_the_planner_the_rest(settings, movies_index):
    """With code plans on (the default), a description and a pure refinement need only the writer: one LLM call a
    turn, none of them the planner's; a question goes to the planner."""
    llm = ScriptedLLM(
        ["Nineties heists.", "Newer.", "No comedies.", "Horror."]
        + [call("item_details", title="Jaws"), call("search_catalog", query="shark", filters=[]), "Sharks."]
    )
    agent = Agent(llm, "movies", settings)
    conv = agent.new_conversation()
    nineties = agent.turn(conv, "a heist movie from the 1990s")
    assert [(c.name, c.planner) for c in nineties.tool_calls] == [("search_catalog", "code")]
    assert nineties.tokens["llm_calls"] == 1 and nineties.text.startswith("Nineties heists.")
    assert all(1990 <= y <= 1999 for y in years(nineties.items))
    assert sum("Crime" in i["genres"] for i in nineties.items) == len(nineties.items)
    newer = agent.turn(conv, "something newer")
    assert [(c.name, c.planner) for c in newer.tool_calls] == [("refine_last", "code")]
    assert min(years(newer.items)) > max(years(nineties.items))
    funny = agent.turn(conv, "no comedies")
    assert funny.items and not [i for i in funny.items if "Comedy" in i["genres"]]
    horror = agent.turn(conv, "let's switch to horror films")  # starts over; "no comedies" still holds
    assert [(c.name, c.planner) for c in horror.tool_calls] == [("search_catalog", "code")]
    assert all("Horror" in i["genres"] and "Comedy" not in i["genres"] for i in horror.items), horror.items
    assert conv.constraints == ["genres=Horror", "genres!=Comedy"]
    asked = agent.turn(agent.new_conversation(), "who directed Jaws?")
    assert [(c.name, c.planner) for c in asked.tool_calls] == [("item_details", "llm"), ("search_catalog", "llm")]
    assert len(llm.calls) == 7 and not llm.script  # 4 writers; then the planner twice and the writer
