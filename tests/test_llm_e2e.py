"""The real local LLM end to end: in process (llama.cpp) and over HTTP (llama-cpp-python's OpenAI-compatible
server on loopback, through the openai backend). Slow: a few minutes on 2 cores; CI runs it."""

import json
import subprocess

import pytest
from conftest import run_cli

from recagent.agent.catalog_view import CatalogView
from recagent.evals.eval_images import held_out_items
from recagent.evals.loopback import start_llama_server, stop_server
from recagent.tools.models import resolve_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def llama_server(settings, tmp_path_factory):
    """`python -m llama_cpp.server` with the same GGUF, on a free loopback port."""
    with open(tmp_path_factory.mktemp("llama-server") / "server.log", "w") as log:
        proc, url = start_llama_server(resolve_model("llm", settings), log)
        yield url
        stop_server(proc)


def ask(env, conv, text, *backend):
    done = run_cli(env, "ask", text, "--json", "--conversation", str(conv), *backend, timeout=600)
    assert done.returncode == 0, done.stderr + done.stdout
    return json.loads(done.stdout)


@pytest.mark.parametrize("backend", ["local", "openai"])
def test_four_turn_dialogue_follows_every_refinement(backend, env, tmp_path, movies_index, request):
    args = ["--llm", "local"]
    if backend == "openai":
        args = ["--llm", "openai", "--base-url", request.getfixturevalue("llama_server"), "--model", "qwen"]
    catalog = CatalogView(movies_index)
    conv = tmp_path / "conversation.json"
    shown: list[str] = []

    first = ask(env, conv, "I loved Toy Story and Finding Nemo, what should my kids watch next?", *args)
    assert len(first["items"]) >= 3
    for item in first["items"]:
        meta = catalog.meta[item["id"]]  # in the catalog, under that title
        assert meta["title"] == item["title"] and item["title"] in first["reply"]
        assert {"Children", "Animation"} & set(meta["genres"])
    oldest = min(i["year"] for i in first["items"])

    older = ask(env, conv, "something older", *args)
    assert older["items"] and all(i["year"] < oldest for i in older["items"])

    third = ask(env, conv, "not the first one", *args)
    saved = json.loads(conv.read_text())
    assert older["items"][0]["id"] in saved["disliked"]
    assert third["items"] and all(i["year"] < oldest for i in third["items"])

    comedy = ask(env, conv, "thanks, and a comedy for me?", *args)
    assert comedy["items"] and all("Comedy" in i["genres"] for i in comedy["items"])

    for turn in (first, older, third, comedy):
        shown += [i["id"] for i in turn["items"]]
        assert (
            turn["error"] is None
            and turn["removed_mentions"] == []
            or all(m not in turn["reply"] for m in turn["removed_mentions"])
        )
    assert len(shown) == len(set(shown))  # no item shown twice
    assert json.loads(conv.read_text())["shown"] == shown


def test_spoken_request_finds_jaws(env, tmp_path, movies_index):
    wav = tmp_path / "request.wav"
    subprocess.run(["espeak-ng", "-s", "140", "-w", str(wav), "I want a scary movie about a shark"], check=True)
    done = run_cli(env, "ask", "--audio", str(wav), "--json", timeout=600)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["transcript"].lower().rstrip(".") == "i want a scary movie about a shark"
    assert "Jaws (1975)" in [i["title"] for i in out["items"][:5]]


@pytest.mark.parametrize("colour,kind", [("Red", "Tshirts"), ("Blue", "Casual Shoes")])
def test_photo_like_this_but_in_black(env, settings, colour, kind):
    """Acceptance: a photo of a coloured item + "but in black" -> black items of the same type, real planner."""
    [item] = held_out_items(settings, 1, articleType=kind, baseColour=colour)
    indexed = run_cli(env, "index", "--catalog", "fashion", "--quiet")
    assert indexed.returncode == 0, indexed.stderr
    done = run_cli(
        env,
        "ask",
        "something like this but in black",
        "--catalog",
        "fashion",
        "--image",
        item.image,
        "--json",
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    items = json.loads(done.stdout)["items"][:5]
    assert len(items) == 5 and all(i["baseColour"] == "Black" for i in items), items
    assert sum(i["articleType"] == kind for i in items) >= 4, items
