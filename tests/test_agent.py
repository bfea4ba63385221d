"""The agent loop, driven by the scripted LLM over the real movie index: tools, repair, limits, grounding."""

import json
import threading

import pytest

from recagent.agent import Agent, Conversation, LLMError, ScriptedLLM
from recagent.agent.langchain_export import langchain_tools
from recagent.agent.repl import TurnCancelled
from recagent.tools.errors import ConfigError


def call(tool, **args):
    return {"tool": tool, "args": args}


@pytest.fixture
def make_agent(settings, movies_index):
    def make(*script):
        return Agent(ScriptedLLM(list(script)), "movies", settings.with_(code_plans=False))  # scripts the planner

    return make


def years(agent, ids):
    return [agent.catalog.meta[i]["year"] for i in ids]


def test_similar_items_turn_recommends_real_family_films_and_names_them(make_agent):
    agent = make_agent(
        call("similar_items", titles=["Toy Story", "Finding Nemo"], filters=["genre=Children"]),
        "Here are some family favourites.",
    )
    conv = agent.new_conversation()
    reply = agent.turn(conv, "I loved Toy Story and Finding Nemo, what should my kids watch next?")
    assert reply.error is None and 3 <= len(reply.items) <= 5
    for item in reply.items:
        meta = agent.catalog.meta[item["id"]]  # every item is in the catalog
        assert meta["title"] == item["title"] and "Children" in meta["genres"]
        assert item["title"] in reply.text
    assert "Toy Story (1995)" not in [i["title"] for i in reply.items]  # the liked ones are not suggested back
    assert conv.liked == ["1", "6377"] and conv.shown == [i["id"] for i in reply.items]
    assert [c.name for c in reply.tool_calls] == ["similar_items"]
    assert reply.timings["items_on_screen"] <= reply.timings["total"]


def test_refinements_older_reject_and_no_repeats(make_agent):
    agent = make_agent(
        call("similar_items", titles=["Toy Story", "Finding Nemo"], filters=["genre=Children"]),
        "For the kids.",
        lambda msgs: call("refine_last", filters=["year<" + msgs[-1]["content"].split("year<")[1].split(";")[0]]),
        "Older ones.",
        call("refine_last", filters=[], reject=[]),
        "Others.",  # the planner forgot reject: the words decide
        call("search_catalog", query="comedy", filters=["genre=Comedy", "genre!=Horror"]),
        "Comedies.",
    )
    conv = agent.new_conversation()
    agent.turn(conv, "I loved Toy Story and Finding Nemo, what should my kids watch next?")
    oldest = min(years(agent, conv.shown))
    older = agent.turn(conv, "something older")
    assert older.items and all(y < oldest for y in years(agent, [i["id"] for i in older.items]))
    assert all("Children" in i["genres"] for i in older.items)  # the first turn's filter still holds
    assert conv.constraints == ["genre=Children", f"year<{oldest}"]
    rejected = older.items[0]["id"]
    third = agent.turn(conv, "not the first one")
    assert conv.disliked == [rejected] and all(y < oldest for y in years(agent, [i["id"] for i in third.items]))
    last = agent.turn(conv, "thanks, and a comedy for me, no horror?")
    assert all("Comedy" in i["genres"] and "Horror" not in i["genres"] for i in last.items)
    assert len(conv.shown) == len(set(conv.shown)) == 20  # never shown twice
    assert conv.last_search == {"tool": "search_catalog", "args": {"query": "comedy"}}


def test_filters_the_user_did_not_ask_for_are_dropped(make_agent):
    agent = make_agent(
        call("search_catalog", query="heist", filters=["genre=Crime", "year<1970", "genre=Western"]), "Heists."
    )
    reply = agent.turn(agent.new_conversation(), "a clever heist film")
    assert [i for i in reply.items if "Crime" not in i["genres"]] == []
    assert any(i["year"] >= 1970 for i in reply.items)


def test_broken_json_is_repaired_or_retried_then_falls_back(make_agent):
    fenced = '```json\n{"tool": "search_catalog", "args": {"query": "shark attack", "filters": ["genre=Horror"]'
    agent = make_agent(fenced, "Scary ones.")  # cut off and fenced: repaired
    reply = agent.turn(agent.new_conversation(), "a scary movie about a shark")
    assert "Jaws (1975)" in [i["title"] for i in reply.items[:5]]

    agent = make_agent("sure! I will search", '{"tool": "nonsense"}', "Found these.")  # twice broken: fall back
    reply = agent.turn(agent.new_conversation(), "a scary movie about a shark")
    assert reply.error is None and len(reply.items) == 5
    assert reply.tool_calls[0].name == "search_catalog"
    assert reply.tool_calls[0].arguments["query"] == "a scary movie about a shark"


def test_tool_error_is_given_back_and_step_limit_holds(make_agent):
    agent = make_agent(
        call("item_details", title="A Film That Does Not Exist"),
        call("search_catalog", query="pixar animation", filters=[]),
        "Here you go.",
    )
    reply = agent.turn(agent.new_conversation(), "tell me about A Film That Does Not Exist, or else pixar")
    assert [(c.name, bool(c.error)) for c in reply.tool_calls] == [("item_details", True), ("search_catalog", False)]
    assert "not in the catalog" in reply.tool_calls[0].error and reply.items

    llm_script = [call("item_details", title="Nope")] * 3
    agent = make_agent(*llm_script)
    conv = agent.new_conversation()
    reply = agent.turn(conv, "details of Nope")
    assert reply.error and "no usable tool call in 3 steps" in reply.error
    assert conv.messages == [] and conv.shown == []


def test_invented_titles_are_removed_from_the_reply(make_agent):
    agent = make_agent(
        call("search_catalog", query="shark", filters=["genre=Horror"]),
        'You will love "Sharknado 9" and Jaws 7 (2031). These are great picks for tonight!',
    )
    reply = agent.turn(agent.new_conversation(), "a horror film with a shark")
    assert "Sharknado 9" not in reply.text and "Jaws 7" not in reply.text
    assert "These are great picks for tonight!" in reply.text
    assert set(reply.removed_mentions) >= {"Sharknado 9", "Jaws 7 (2031)"}
    named = [line.split(". ", 1)[1].rsplit(": ", 1)[0] for line in reply.text.splitlines()[1:]]
    assert named == [i["title"] for i in reply.items]


def test_vague_request_gets_one_clarifying_question(make_agent):
    agent = make_agent(call("ask_user", question="What kind of movie are you in the mood for?"))
    conv = agent.new_conversation()
    reply = agent.turn(conv, "recommend something")
    assert reply.clarifying and reply.items == [] and reply.text.endswith("?")
    assert conv.messages[-1].content == reply.text


@pytest.mark.parametrize(
    "failure",
    [
        LLMError("cannot reach the LLM endpoint http://127.0.0.1:9/v1: is it running?"),
        LLMError("the LLM endpoint http://127.0.0.1:9/v1 timed out"),
    ],
)
def test_backend_failure_leaves_the_conversation_intact(make_agent, failure):
    agent = make_agent(
        call("search_catalog", query="pixar", filters=[]),
        "Pixar picks.",
        failure,
        call("search_catalog", query="dinosaurs", filters=[]),
        "Dinosaurs.",
    )
    conv = agent.new_conversation()
    agent.turn(conv, "pixar films")
    before = conv.to_dict()
    failed = agent.turn(conv, "and dinosaurs?")
    assert failed.error == str(failure) and conv.to_dict() == before
    again = agent.turn(conv, "and dinosaurs?")
    assert again.error is None and len(conv.messages) == 4


def test_conversation_round_trips_through_json(make_agent, tmp_path):
    agent = make_agent(call("search_catalog", query="pixar", filters=[]), "Pixar picks.")
    conv = agent.new_conversation()
    agent.turn(conv, "pixar films")
    conv.like(conv.shown[0])
    conv.save(tmp_path / "c.json")
    loaded = Conversation.load(tmp_path / "c.json")
    assert loaded == conv and json.loads((tmp_path / "c.json").read_text())["liked"] == [conv.shown[0]]
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(ConfigError, match="not a recagent conversation"):
        Conversation.load(tmp_path / "bad.json")


def test_one_agent_serves_conversations_from_several_threads(make_agent):
    queries = ["pixar", "dinosaur", "vampire", "boxing"]

    def answer(msgs):  # calls of several threads interleave: answer by what is asked, not by order
        if msgs[0]["content"].startswith("You plan"):
            return call("search_catalog", query=msgs[-1]["content"].split("User: ")[-1], filters=[])
        return "Picks."

    agent = make_agent(*[answer] * 2 * len(queries))
    results = {}

    def run(q):
        conv = agent.new_conversation()
        results[q] = (agent.turn(conv, q), conv)

    threads = [threading.Thread(target=run, args=(q,)) for q in queries]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for q, (reply, conv) in results.items():
        assert reply.error is None and conv.messages[0].content == q
        assert conv.last_search["args"]["query"] == q and conv.shown == [i["id"] for i in reply.items]


def test_catalog_tools_work_as_langchain_tools(make_agent):
    agent = make_agent()
    tools = {t.name: t for t in langchain_tools(agent.catalog)}
    assert set(tools) == {"search_catalog", "similar_items", "refine_last", "item_details"}
    assert "filters narrow it" in tools["search_catalog"].description
    found = tools["search_catalog"].invoke(
        {"query": "great white shark attacks a beach town", "filters": ["genre=Horror"]}
    )
    assert "Jaws (1975) | Action, Horror" in found
    assert "year: 1975" in tools["item_details"].invoke({"title": "Jaws"})
    assert (
        tools["item_details"].invoke({"title": "No Such Film 3000"})
        == "error: 'No Such Film 3000' is not in the catalog"
    )


def test_agent_is_usable_from_langchain(make_agent):
    agent = make_agent(
        call("search_catalog", query="shark attack", filters=[]),
        "Scary.",
        call("refine_last", filters=["year<1975"]),
        "Older.",
    )
    chain = agent.as_runnable()
    first = chain.invoke({"text": "a shark attack movie"})
    assert "Jaws (1975)" in [i["title"] for i in first["items"]]
    second = chain.invoke({"text": "something older", "conversation": first["conversation"]})
    assert all(i["year"] < 1975 for i in second["items"]) and len(second["conversation"]["messages"]) == 4


def test_a_cancelled_turn_leaves_the_conversation_as_it_was(make_agent):
    agent = make_agent(call("search_catalog", query="pixar", filters=[]), "Pixar picks.")
    conv = agent.new_conversation()
    before = conv.to_dict()

    def cancel_when_items_arrive(kind, value):
        if kind == "items":
            raise TurnCancelled()

    with pytest.raises(TurnCancelled):
        agent.turn(conv, "pixar films", on_event=cancel_when_items_arrive)
    assert conv.to_dict() == before
