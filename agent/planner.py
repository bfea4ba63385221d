"""Planning: the planner's prompt and output schema, the state it is shown, and a valid tool call from its answer.

The planner answers with one JSON tool call, {"tool": NAME, "args": {...}}, constrained to a schema built from the
tools' type hints (one alternative per tool). A broken answer is repaired (code fences, prose around it, a cut-off
end), then asked again once, then replaced by a plain search of the user's words, so a turn always goes on.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from langchain_core.tools import StructuredTool
from pydantic import BaseModel

from recagent.prompts import load_prompt

from .catalog_view import CatalogView
from .conversation import Conversation
from .llm import Completion

MAX_LIST_ARGS = 4  # the most titles, filters or rejections in one tool call: small models loop over every value
HISTORY_TURNS = 2  # earlier user messages shown to the planner
PLAN_TOKENS = 120

Tools = dict[str, Callable]


@dataclass(frozen=True)
class PlannerSpec:
    """The planner's fixed system prompt and the JSON schema of its answer: the same for every turn."""

    system: str
    schema: dict

    @classmethod
    def build(cls, tools: Tools, view: CatalogView) -> PlannerSpec:
        schemas = tool_schemas(tools)
        return cls(planner_prompt(tools, schemas, view), plan_schema(schemas))


def tool_schemas(tools: Tools) -> dict[str, dict]:
    """name -> JSON schema of the arguments, built from the type hints (via LangChain's StructuredTool)."""
    return {name: simplify_schema(_args_model(func).model_json_schema()) for name, func in tools.items()}


def _args_model(func: Callable) -> type[BaseModel]:
    """The pydantic model LangChain builds from a function's type hints."""
    model = StructuredTool.from_function(func).args_schema
    assert isinstance(model, type) and issubclass(model, BaseModel)
    return model


def simplify_schema(schema: dict) -> dict:
    """Drop titles and turn Optional[X] (anyOf X|null) into X: shorter prompts and grammars; lists capped."""
    props = {}
    for key, prop in schema.get("properties", {}).items():
        prop = {k: v for k, v in prop.items() if k not in ("title", "default")}
        if "anyOf" in prop:
            non_null = [p for p in prop.pop("anyOf") if p.get("type") != "null"]
            prop.update(non_null[0] if non_null else {})
        if prop.get("type") == "array":
            prop["maxItems"] = MAX_LIST_ARGS
        props[key] = prop
    return {"type": "object", "properties": props, "required": schema.get("required", [])}


def plan_schema(schemas: dict[str, dict]) -> dict:
    """JSON schema for one tool call: {"tool": NAME, "args": {...}}, one alternative per tool."""
    return {
        "anyOf": [
            {"type": "object", "properties": {"tool": {"const": name}, "args": schema}, "required": ["tool", "args"]}
            for name, schema in schemas.items()
        ]
    }


def planner_prompt(tools: Tools, schemas: dict[str, dict], view: CatalogView) -> str:
    """The system prompt: the tools with their signatures and docstrings, and the fields the user can filter on."""
    lines = []
    for name, func in tools.items():
        args = ", ".join(f"{k}: {_type_name(v)}" for k, v in schemas[name]["properties"].items())
        lines.append(f"- {name}({args}): {(func.__doc__ or '').strip()}")
    fields = []
    for key, info in view.fields.items():
        if key in view.profile.hidden:
            continue
        values = info.get("values")
        fields.append(
            f"{key} ({', '.join(values[:25])})" if values and len(values) <= 25 else f"{key} ({info['type']})"
        )
    return load_prompt("planner").format(
        kind=view.profile.kind, noun=view.profile.noun, tools="\n".join(lines), fields="; ".join(fields)
    )


def _type_name(schema: dict) -> str:
    if schema.get("type") == "array":
        return f"list[{_type_name(schema.get('items', {}))}]"
    return {"string": "str", "integer": "int", "number": "float", "boolean": "bool"}.get(schema.get("type", ""), "any")


def planner_messages(
    spec: PlannerSpec, conversation: Conversation, view: CatalogView, text: str, photo_looks: list[str] | None = None
) -> list[dict]:
    """The planner's messages for a new user message (before it is added to the conversation)."""
    note = f"The user attached a photo; it looks most like: {'; '.join(photo_looks)}.\n" if photo_looks else ""
    return [
        {"role": "system", "content": spec.system},
        {"role": "user", "content": render_state(conversation, view) + note + f"User: {text}"},
    ]


def render_state(conversation: Conversation, view: CatalogView) -> str:
    """The compact state the planner needs: recent requests, the last search, the items shown with their years."""
    lines = []
    earlier = [m.content for m in conversation.messages if m.role == "user"][-HISTORY_TURNS:]
    if earlier:
        lines.append("Earlier requests: " + " / ".join(f'"{e[:120]}"' for e in earlier) + ".")
    last = conversation.last_items()
    if last:
        shown = " ".join(f"{n}. {view.title(i)}" for n, i in enumerate(last, 1))
        time = view.profile.time_field
        years = [view.meta[i][time] for i in conversation.shown if i in view.meta and time in view.meta[i]]
        span = f" Oldest {min(years)}, newest {max(years)}." if years else ""
        if years:  # give the small model the numbers it would otherwise have to work out
            span += f" (older: {time}<{min(years)}; newer: {time}>{max(years)})"
        search = conversation.last_search
        lines.append(
            f"Last search: {search.get('tool')} {json.dumps(search.get('args', {}))}, filters "
            f"{json.dumps(conversation.constraints)}. Shown: {shown}.{span}"
        )
    return "\n".join(lines) + ("\n" if lines else "")


# ---- reading the answer ----------------------------------------------------------------------------------


def parse_json_object(text: str) -> dict:
    """The first JSON object in an LLM answer, tolerating code fences, prose around it and a cut-off end."""
    cleaned = re.sub(r"```(?:json)?", "", text).strip()
    start = cleaned.find("{")
    if start < 0:
        raise ValueError("no JSON object in the answer")
    try:
        obj, _ = json.JSONDecoder().raw_decode(cleaned[start:])
    except json.JSONDecodeError:
        obj = json.loads(close_brackets(cleaned[start:]))
    if not isinstance(obj, dict):
        raise ValueError("the answer is not a JSON object")
    return obj


def close_brackets(text: str) -> str:
    """Close the strings, arrays and objects left open by a truncated answer."""
    stack, in_string, escape = [], False, False
    for ch in text:
        if in_string:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            stack.append("]" if ch == "[" else "}")
        elif ch in "]}" and stack:
            stack.pop()
    text = text + ('"' if in_string else "")
    text = re.sub(r",\s*$", "", text)
    return text + "".join(reversed(stack))


def parse_plan(raw: str, tools: Tools) -> dict:
    """The tool call in a planner answer: {"tool": a known tool, "args": a dict}; a ValueError says what is wrong."""
    plan = parse_json_object(raw)
    if plan.get("tool") not in tools or not isinstance(plan.get("args", {}), dict):
        raise ValueError(f"unknown tool {plan.get('tool')!r}")
    return plan


def plan_tool_call(
    complete: Callable[..., Completion], messages: list[dict], spec: PlannerSpec, tools: Tools, user_text: str
) -> tuple[dict, str]:
    """A valid tool call and the raw answer it came from: the constrained answer, repaired; else asked once more;
    else a plain search of the user's words (so the turn goes on). `complete` is the LLM's complete method."""
    last_error = ""
    for _attempt in range(2):
        raw = complete(messages, schema=spec.schema, max_tokens=PLAN_TOKENS).text
        try:
            return parse_plan(raw, tools), raw
        except ValueError as exc:
            last_error = str(exc)
            messages = messages + [
                {"role": "assistant", "content": raw},
                {"role": "user", "content": f"That was not a valid tool call ({exc}). Answer with the JSON only."},
            ]
    return (
        {"tool": "search_catalog", "args": {"query": user_text, "filters": []}, "repaired": last_error},
        json.dumps({"tool": "search_catalog", "args": {"query": user_text}}),
    )


def accepted_args(args: dict, func: Callable) -> dict:
    """Keep only the arguments the function takes (LLMs add extra keys)."""
    params = inspect.signature(func).parameters
    return {k: v for k, v in args.items() if k in params}
