"""Agent latency benchmark: recagent's turn loop against a plain LangChain tool-calling agent, same model and tools.

`recagent bench agent --json OUT` runs 20 scripted movie requests, each a fresh conversation, and prints per-turn
latency p50/p95 split into LLM prompt, LLM generation, retrieval and ranking, the time until the items are on
screen, and how often a turn ends with at least 3 valid, in-catalog recommendations; then the same for
`langchain.agents.create_agent` with the same GGUF served by llama-cpp-python's OpenAI-compatible server and
recagent's catalog tools exported as LangChain tools.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Sequence

from pydantic import SecretStr

from recagent.agent.catalog_view import CatalogView
from recagent.agent.langchain_export import langchain_tools
from recagent.agent.llm import make_llm
from recagent.agent.loop import Agent
from recagent.tools.models import resolve_model
from recagent.tools.settings import Settings

from .common import percentile
from .loopback import start_llama_server, stop_server

REQUESTS = [
    "a funny animated film for my kids",
    "a tense thriller set on a submarine",
    "a romantic comedy set in New York",
    "a scary movie about a shark",
    "a space opera with jedi knights",
    "a classic western with gunfights",
    "a heist movie with a clever twist",
    "a documentary about music",
    "a feel-good sports drama",
    "a dark psychological thriller",
    "a superhero action movie",
    "a historical war epic",
    "a musical with great songs",
    "a mind-bending sci-fi film about dreams",
    "a coming of age story",
    "a zombie horror comedy",
    "a courtroom drama",
    "a martial arts action film",
    "a whimsical fantasy adventure",
    "a gangster crime saga",
]
STAGES = ("total", "items_on_screen", "llm_prompt", "llm_generation", "retrieval", "ranking")
COUNTS = ("llm_calls", "prompt_tokens", "generated_tokens")


def run_recagent(
    settings: Settings,
    model: str = "llm",
    requests: Sequence[str] = REQUESTS,
    feedback: Sequence[tuple[str, int]] | None = None,
    agent: Agent | None = None,
) -> dict:
    """recagent's default agent (local llama.cpp) on each request; per-stage timings and validity. feedback: the
    user's earlier likes and dislikes given to every turn (None: none); agent: a warm one to reuse."""
    agent = agent or warm_agent(settings, model)
    turns = []
    for n, text in enumerate(requests, 1):
        reply = agent.turn(agent.new_conversation(), text, feedback=feedback)
        valid = [i for i in reply.items if agent.catalog.meta.get(i["id"], {}).get("title") == i["title"]]
        turns.append(
            {
                "request": text,
                **reply.timings,
                "items": len(reply.items),
                "valid_items": len(valid),
                "clarifying": reply.clarifying,
                "error": reply.error,
                "tools": [c.name for c in reply.tool_calls],
                "planned_by": [c.planner for c in reply.tool_calls],
                "off_catalog_mentions": len(reply.removed_mentions),
                # tokens make the seconds comparable across machines: prompt and generated, all LLM calls
                "llm_calls": reply.tokens.get("llm_calls", 0),
                "prompt_tokens": reply.tokens.get("prompt", 0),
                "generated_tokens": reply.tokens.get("generated", 0),
            }
        )
        print(
            f"  recagent {n:2}/{len(requests)} {reply.timings.get('total', 0):5.1f} s  items {len(valid)}  {text}",
            file=sys.stderr,
            flush=True,
        )
    name = "recagent" if feedback is None else f"recagent, with feedback ({len(feedback)} earlier likes/dislikes)"
    return _summary(name, turns)


def warm_agent(settings: Settings, model: str = "llm") -> Agent:
    """recagent's default agent with the model loaded and the planner's prompt cached by one turn."""
    agent = Agent(make_llm("local", settings, model=model), "movies", settings)
    agent.turn(agent.new_conversation(), "warm up: a good movie")
    return agent


def feedback_events(settings: Settings, likes: int = 20, dislikes: int = 5) -> list[tuple[str, int]]:
    """A fixed user history for the benchmark: the catalog's most rated movies, liked, then the next few disliked."""
    catalog = CatalogView.open("movies", settings)
    ids = sorted(catalog.meta, key=lambda i: -int(catalog.meta[i].get("ratings", 0) or 0))
    return [(i, 1) for i in ids[:likes]] + [(i, -1) for i in ids[likes : likes + dislikes]]


def _summary(name: str, turns: list[dict]) -> dict:
    """Latency p50/p95 per stage (seconds, 2 places), the share of turns with 3+ valid items, the off-catalog rate."""
    out: dict = {
        "system": name,
        "turns": turns,
        "n": len(turns),
        "valid_turn_rate": round(sum(t["valid_items"] >= 3 for t in turns) / len(turns), 3),
    }
    for key in STAGES:
        values = [t[key] for t in turns if t.get(key) is not None]
        if values:
            out[key] = {"p50": percentile(values, 50, digits=2), "p95": percentile(values, 95, digits=2)}
    for key in COUNTS:
        values = [t[key] for t in turns if t.get(key) is not None]
        if values:
            out[key] = {"p50": percentile(values, 50, digits=1), "mean": round(sum(values) / len(values), 1)}
    planned = [t for t in turns if t.get("planned_by")]
    if planned:
        out["code_planned_rate"] = round(sum(t["planned_by"][0] == "code" for t in planned) / len(planned), 3)
    named = sum(t.get("named_titles", t["items"]) for t in turns)
    off = sum(t.get("off_catalog", 0) for t in turns)
    out["off_catalog_rate"] = round(off / named, 3) if named else 0.0
    return out


# ---- the LangChain baseline -------------------------------------------------------------------------

_LISTED = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s*\**\"?([^\n\"*]+?)\"?\**(?:\s*\((\d{4})\))?\s*(?:[-–:]|$)", re.M)


def named_titles(text: str) -> list[str]:
    """Titles an LLM answer names: list entries, quoted or bold names, and 'Title (Year)'."""
    found = [f"{t.strip()} ({y})" if y else t.strip() for t, y in _LISTED.findall(text)]
    found += re.findall(r"\*\*([^*]{2,80})\*\*", text) + re.findall(r"\"([^\"]{2,80})\"", text)
    found += [f"{t.strip()} ({y})" for t, y in re.findall(r"([A-Z][^.,;:!?\n()]{1,60}) \((\d{4})\)", text)]
    return list(dict.fromkeys(f for f in found if len(f) > 1))


def run_langchain(settings: Settings, model: str = "llm", requests: Sequence[str] = REQUESTS) -> dict:
    """`langchain.agents.create_agent` with ChatOpenAI on llama-cpp-python's server and recagent's tools."""
    from langchain.agents import create_agent  # noqa: PLC0415  (heavy: only this baseline needs LangChain's agents)
    from langchain_openai import ChatOpenAI  # noqa: PLC0415  (heavy: only this baseline needs it)

    catalog = CatalogView.open("movies", settings)
    server, url = start_llama_server(resolve_model(model, settings))
    try:
        llm = ChatOpenAI(model="qwen", base_url=url, api_key=SecretStr("none"), temperature=0, timeout=300)
        turns = []
        for n, text in enumerate(requests, 1):
            agent = create_agent(
                llm,
                langchain_tools(catalog),
                system_prompt="You recommend movies from a catalog. Use the tools to find real "
                "movies, then recommend 3 to 5 of them with a one-line reason each.",
            )
            started = time.perf_counter()
            try:
                result = agent.invoke({"messages": [{"role": "user", "content": text}]})
                answer = result["messages"][-1].content
                tool_calls = sum(len(getattr(m, "tool_calls", []) or []) for m in result["messages"])
                error = None
            except Exception as exc:  # a failed turn counts as invalid, not as a crash of the benchmark
                answer, tool_calls, error = "", 0, f"{exc.__class__.__name__}: {exc}"[:200]
            seconds = time.perf_counter() - started
            titles = named_titles(answer)
            in_catalog = [t for t in titles if catalog.find_title(t)]
            turns.append(
                {
                    "request": text,
                    "total": round(seconds, 3),
                    "items": len(in_catalog),
                    "valid_items": len(in_catalog),
                    "named_titles": len(titles),
                    "off_catalog": len(titles) - len(in_catalog),
                    "tool_calls": tool_calls,
                    "error": error,
                }
            )
            print(
                f"  langchain {n:2}/{len(requests)} {seconds:5.1f} s  tools {tool_calls}  in-catalog "
                f"{len(in_catalog)}/{len(titles)}  {text}",
                file=sys.stderr,
                flush=True,
            )
    finally:
        stop_server(server)
    return _summary("langchain create_agent", turns)


def run_agent_benchmark(
    settings: Settings, langchain: bool = True, model: str = "llm", limit: int | None = None, feedback: bool = False
) -> dict:
    """Both systems on the first `limit` requests (all 20 by default); print the table and return the figures.
    feedback: recagent without and with a user's earlier feedback instead, the same agent, one after the other
    (the cost of the taste vector in a turn)."""
    requests = REQUESTS[:limit] if limit else REQUESTS
    if feedback:
        agent = warm_agent(settings, model)
        events = feedback_events(settings)
        systems = [
            run_recagent(settings, model, requests, None, agent),
            run_recagent(settings, model, requests, events, agent),
        ]
        results: dict = {"requests": len(requests), "model": model, "systems": systems}
        print(format_table(results))
        return results
    results = {"requests": len(requests), "model": model, "systems": [run_recagent(settings, model, requests)]}
    if langchain:
        results["systems"].append(run_langchain(settings, model, requests))
    print(format_table(results))
    return results


def format_table(results: dict) -> str:
    """One Markdown row per system: latency per stage, valid turns, off-catalog rate."""
    lines = [
        "| system | turns | whole reply p50 / p95 s | items on screen p50 / p95 s | LLM prompt p50 s | "
        "LLM generation p50 s | retrieval p50 s | ranking p50 s | turns with >= 3 valid items | off-catalog |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in results["systems"]:
        both = " | ".join(_cell(s.get(key)) for key in STAGES[:2])
        p50 = " | ".join(_cell(s.get(key), both=False) for key in STAGES[2:])
        lines.append(
            f"| {s['system']} | {s['n']} | {both} | {p50} | {s['valid_turn_rate']:.0%} | {s['off_catalog_rate']:.0%} |"
        )
    for s in results["systems"]:
        if "prompt_tokens" in s:
            lines.append(
                f"\n{s['system']}: per turn p50 {s['llm_calls']['p50']:g} LLM calls, "
                f"{s['prompt_tokens']['p50']:g} prompt tokens, {s['generated_tokens']['p50']:g} generated tokens; "
                f"planned by code: {s.get('code_planned_rate', 0):.0%} of turns"
            )
    return "\n".join(lines)


def _cell(value: dict | None, both: bool = True) -> str:
    """'p50 / p95' (or the p50 alone) of one stage; '-' when it was not measured."""
    return "-" if not value else (f"{value['p50']} / {value['p95']}" if both else f"{value['p50']}")
