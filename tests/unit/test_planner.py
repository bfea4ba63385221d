"""Planning: JSON repair, the plan schema from type hints, and the retry-then-fallback of a broken planner."""

import pytest

from recagent.agent.llm import ScriptedLLM
from recagent.agent.planner import (
    PLAN_TOKENS,
    PlannerSpec,
    accepted_args,
    close_brackets,
    parse_json_object,
    parse_plan,
    plan_schema,
    plan_tool_call,
    tool_schemas,
)


def search(query: str, filters: list[str] | None = None) -> None:
    """Find things."""


def ask(question: str) -> None:
    """Ask."""


TOOLS = {"search": search, "ask": ask}


@pytest.mark.parametrize(
    "raw",
    [
        '{"tool": "search", "args": {"query": "sharks"}}',
        '```json\n{"tool": "search", "args": {"query": "sharks"}}\n```',
        'Sure! Here it is: {"tool": "search", "args": {"query": "sharks"}} Hope that helps.',
        '{"tool": "search", "args": {"query": "sharks"',  # cut off by the token limit
        '{"tool": "search", "args": {"query": "sharks",',
    ],
)
def test_broken_answers_are_repaired(raw):
    assert parse_json_object(raw) == {"tool": "search", "args": {"query": "sharks"}}


def test_what_cannot_be_repaired_says_why():
    with pytest.raises(ValueError, match="no JSON object"):
        parse_json_object("I would search for sharks")
    with pytest.raises(ValueError, match="unknown tool 'fly'"):
        parse_plan('{"tool": "fly", "args": {}}', TOOLS)
    assert close_brackets('{"a": ["b", "c') == '{"a": ["b", "c"]}'
    assert close_brackets('{"a": "say \\"hi') == '{"a": "say \\"hi"}'


def test_the_schema_comes_from_the_type_hints():
    schemas = tool_schemas(TOOLS)
    assert schemas["search"] == {
        "type": "object",
        "required": ["query"],
        "properties": {
            "query": {"type": "string"},
            "filters": {"type": "array", "items": {"type": "string"}, "maxItems": 4},
        },
    }
    alternatives = plan_schema(schemas)["anyOf"]
    assert [a["properties"]["tool"] for a in alternatives] == [{"const": "search"}, {"const": "ask"}]
    assert accepted_args({"query": "x", "mood": "y"}, search) == {"query": "x"}


def test_a_broken_planner_is_asked_again_then_replaced_by_a_search_of_the_words():
    spec = PlannerSpec(system="plan", schema=plan_schema(tool_schemas(TOOLS)))
    llm = ScriptedLLM(["nonsense", '{"tool": "ask", "args": {"question": "Which genre?"}}'])
    plan, raw = plan_tool_call(llm.complete, [{"role": "user", "content": "hi"}], spec, TOOLS, "hi")
    assert plan == {"tool": "ask", "args": {"question": "Which genre?"}} and "Which genre" in raw
    assert "not a valid tool call" in llm.calls[1]["messages"][-1]["content"]
    assert llm.calls[0]["schema"] == spec.schema

    llm = ScriptedLLM(["nonsense", "still nonsense"])
    plan, _ = plan_tool_call(llm.complete, [{"role": "user", "content": "sharks"}], spec, TOOLS, "sharks")
    assert plan["tool"] == "search_catalog" and plan["args"] == {"query": "sharks", "filters": []}
    assert plan["repaired"] == "no JSON object in the answer" and PLAN_TOKENS > 0
