"""`recagent serve`'s OpenAI-compatible endpoint, used with the official `openai` client against a real
`recagent serve` process on loopback: models, completions plain and streamed with the items machine-readable, the
growing message list continuing one stored conversation, a photo as an image_url data URL, speech as input_audio,
and errors as the client's APIStatusError. The protocol runs on the scripted backend; the three-turn chat with its
refinements runs on the real local model (slow)."""

from __future__ import annotations

import base64
import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import openai
import pytest
from conftest import RECAGENT

from recagent.evals.eval_images import held_out_items
from recagent.evals.loopback import free_port, start_server, stop_server
from recagent.tools.settings import Settings

KEY = "ana-key-0001"
SHARK = "a scary movie about a shark"
# Every answer of the scripted backend is this sentence: as the planner's answer it is no tool call, so each turn
# falls back to a plain search of the user's words, and as the writer's answer it is the reply's opening. Every
# turn takes three answers whatever the order of the tests, so any one of them can run alone.
ANSWER = "Here you go."


def start(settings: Settings, args: list[str], log: Path, timeout: float) -> tuple[subprocess.Popen, str]:
    """`recagent serve ARGS` on the test home and data, on a free loopback port, once ready (GET /readyz answers
    200); (the process, its base URL)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [RECAGENT, "--home", str(settings.home), "--data", str(settings.data), "serve", "--port", str(port), *args]
    ready = lambda: urllib.request.urlopen(url + "/readyz", timeout=2).read()  # noqa: E731
    with open(log, "w") as out:
        proc = start_server(cmd, ready, timeout, out, "recagent serve")
    return proc, url


def client(url: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=300)


def chat(api: openai.OpenAI, model: str, messages: list[dict], stream: bool = False) -> Any:
    """A chat completion (a ChatCompletion, or with `stream` the ChatCompletionChunks), as any client asks it."""
    return api.chat.completions.create(model=model, messages=cast(Any, messages), stream=stream)


def recagent(response: Any) -> dict:
    """The machine-readable part of a completion or a chunk (empty when it has none)."""
    return (response.model_extra or {}).get("recagent") or {}


def conversations(url: str) -> list[dict]:
    """The key's conversations, as the native API lists them."""
    return httpx.get(f"{url}/conversations", headers={"Authorization": f"Bearer {KEY}"}).raise_for_status().json()


def streamed(chunks: list[Any]) -> tuple[int, int, str]:
    """Of a streamed completion: the index of the first chunk with the items, that of the first with text, and the
    text the client puts together."""
    items_at = next(n for n, c in enumerate(chunks) if "items" in recagent(c))
    text_at = next(n for n, c in enumerate(chunks) if c.choices and c.choices[0].delta.content)
    return items_at, text_at, "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


@pytest.fixture(scope="module")
def server(settings, movies_index, fashion_images, tmp_path_factory) -> Iterator[str]:
    """A real `recagent serve` on the scripted backend, serving movies and fashion, with one API key."""
    folder = tmp_path_factory.mktemp("serve-openai")
    (folder / "script.json").write_text(json.dumps([ANSWER] * 300))
    args = ["--llm", "scripted", "--model", str(folder / "script.json"), "--catalog", "movies", "--catalog", "fashion"]
    args += ["--db", f"sqlite:///{folder / 'recagent.sqlite3'}", "--api-key", f"ana={KEY}"]
    proc, url = start(settings, args, folder / "serve.log", 120)
    yield url
    stop_server(proc)


def test_models_list_the_catalogs_served(server):
    assert [m.id for m in client(server).models.list()] == ["recagent-movies", "recagent-fashion"]
    for path in ("/v1/models", "/v1/chat/completions"):  # no CORS without --cors-origin
        preflight = {"Origin": "http://chat.example", "Access-Control-Request-Method": "POST"}
        response = httpx.options(server + path, headers=preflight)
        assert not [h for h in response.headers if h.lower().startswith("access-control-")], response.headers


def test_a_completion_carries_the_items_in_its_text_and_in_the_recagent_field(server):
    api = client(server)
    messages = [{"role": "system", "content": "You are a movie expert."}, {"role": "user", "content": SHARK}]
    first = chat(api, "recagent-movies", messages)
    text, extra = first.choices[0].message.content, recagent(first)
    items = extra["items"]
    assert first.object == "chat.completion" and first.model == "recagent-movies"
    assert first.choices[0].finish_reason == "stop" and first.choices[0].message.role == "assistant"
    assert "Jaws (1975)" in [i["title"] for i in items] and len(items) == 5
    assert text.startswith(ANSWER) and all(f"{n}. {i['title']}" in text for n, i in enumerate(items, 1))
    assert extra["version"] == 1 and extra["tool_calls"][0]["name"] == "search_catalog"
    assert all(i["image"] == f"/items/movies/{i['id']}/image" for i in items)

    messages += [{"role": "assistant", "content": text}, {"role": "user", "content": "and a funny one about sharks"}]
    second = recagent(chat(api, "recagent-movies", messages))
    assert second["conversation_id"] == extra["conversation_id"] and second["version"] == 2  # the same conversation
    assert not {i["id"] for i in items} & {i["id"] for i in second["items"]}  # nothing shown twice

    again = recagent(chat(api, "recagent-movies", messages[:2]))  # a new chat: a new conversation
    assert again["conversation_id"] != extra["conversation_id"] and again["version"] == 1


def test_a_streamed_completion_sends_the_items_before_the_text(server):
    api = client(server)
    messages = [{"role": "user", "content": SHARK}]
    chunks = list(chat(api, "recagent-movies", messages, stream=True))
    items_at, text_at, text = streamed(chunks)
    assert items_at < text_at
    assert all(c.object == "chat.completion.chunk" for c in chunks) and chunks[-1].choices[0].finish_reason == "stop"
    final = recagent(chunks[-1])
    assert text == final["reply"] and text.startswith(ANSWER) and "Jaws (1975)" in text
    assert recagent(chunks[items_at])["items"] == final["items"]

    # the client sends back the text it put together: that continues the same conversation
    messages += [{"role": "assistant", "content": text}, {"role": "user", "content": "and a funny one about sharks"}]
    second = recagent(chat(api, "recagent-movies", messages))
    assert second["conversation_id"] == final["conversation_id"] and second["version"] == 2


def test_a_photo_as_an_image_url_data_url(server, settings):
    [red] = held_out_items(settings, 1, articleType="Tshirts", baseColour="Red")
    assert red.image
    photo = base64.b64encode(Path(red.image).read_bytes()).decode()
    content = [
        {"type": "text", "text": "something like this but in black"},
        {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{photo}"}},
    ]
    items = recagent(chat(client(server), "recagent-fashion", [{"role": "user", "content": content}]))["items"]
    assert len(items) == 5 and all(i["baseColour"] == "Black" for i in items), items
    assert sum(i["articleType"] == "Tshirts" for i in items) >= 4, items


def test_speech_as_an_input_audio_part(server, tmp_path):
    wav = tmp_path / "shark.wav"
    subprocess.run(["espeak-ng", "-s", "140", "-w", str(wav), "I want a scary movie about a shark"], check=True)
    speech = {"data": base64.b64encode(wav.read_bytes()).decode(), "format": "wav"}
    messages = [{"role": "user", "content": [{"type": "input_audio", "input_audio": speech}]}]
    extra = recagent(chat(client(server), "recagent-movies", messages))
    assert "shark" in extra["transcript"].lower() and "Jaws (1975)" in [i["title"] for i in extra["items"]]


def test_errors_surface_as_api_status_errors_with_a_clear_message(server, settings):
    api = client(server)
    shark = [{"role": "user", "content": SHARK}]
    not_an_image = base64.b64encode(b"this is not an image").decode()
    bad_photo = f"data:image/jpeg;base64,{not_an_image}"

    def parts(*content: dict) -> list[dict]:
        return [{"role": "user", "content": list(content)}]

    cases: list[tuple[type[openai.APIStatusError], int, str, str, list[dict]]] = [
        (openai.NotFoundError, 404, "model 'recagent-books' does not exist here; this service serves "
         "recagent-movies, recagent-fashion", "recagent-books", shark),
        (openai.NotFoundError, 404, "does not exist here", "gpt-4o", shark),
        (openai.BadRequestError, 400, "the last message must be the user's", "recagent-movies",
         [*shark, {"role": "assistant", "content": "Jaws."}]),
        (openai.BadRequestError, 400, "the last user message is empty", "recagent-movies",
         [{"role": "user", "content": "  "}]),
        (openai.BadRequestError, 400, "an image must be sent as a data URL", "recagent-fashion",
         parts({"type": "image_url", "image_url": {"url": "https://example.com/shirt.jpg"}})),
        (openai.BadRequestError, 400, "the image: not an image file (or a format that cannot be read)",
         "recagent-fashion", parts({"type": "image_url", "image_url": {"url": bad_photo}})),
        (openai.BadRequestError, 400, "speech.wav: not a readable audio file", "recagent-movies",
         parts({"type": "input_audio", "input_audio": {"data": not_an_image, "format": "wav"}})),
        (openai.BadRequestError, 400, "the input_audio is not valid base64", "recagent-movies",
         parts({"type": "input_audio", "input_audio": {"data": "%%%", "format": "wav"}})),
        (openai.UnprocessableEntityError, 422, "messages: List should have at least 1 item", "recagent-movies", []),
    ]  # fmt: skip
    stored = conversations(server)
    for error, status, words, model, messages in cases:
        with pytest.raises(error) as raised:
            chat(api, model, messages)
        assert raised.value.status_code == status and words in raised.value.message, raised.value.message
        assert isinstance(raised.value.body, dict) and words in raised.value.body["message"]
        assert str(settings.home) not in raised.value.message and "/tmp/" not in raised.value.message
    assert conversations(server) == stored  # nothing was stored for any of them
    for stream in (False, True):
        with pytest.raises(openai.AuthenticationError) as denied:
            chat(client(server, "wrong-key-000"), "recagent-movies", shark, stream=stream)
        assert denied.value.status_code == 401 and "a valid API key is needed" in denied.value.message
    with pytest.raises(openai.AuthenticationError):
        client(server, "wrong-key-000").models.list()


# ---- the real local model -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_three_turns_with_the_local_model_behave_as_in_the_repl(settings, movies_index, tmp_path):
    """A chat client's growing message list, on the in-process 1.5B model: the first list holds Jaws, "something
    older" gives only older films (streamed: the items before the text), "not the first one" drops the first."""
    args = ["--llm", "local", "--db", f"sqlite:///{tmp_path / 'recagent.sqlite3'}", "--api-key", f"ana={KEY}"]
    clock = time.perf_counter()
    proc, url = start(settings, args, tmp_path / "serve.log", 300)
    seconds = [time.perf_counter() - clock]
    try:
        api = client(url)
        messages = [{"role": "user", "content": SHARK}]
        clock = time.perf_counter()
        first = chat(api, "recagent-movies", messages)
        seconds.append(time.perf_counter() - clock)
        first_items = recagent(first)["items"]
        assert "Jaws (1975)" in [i["title"] for i in first_items], first_items
        oldest = min(i["year"] for i in first_items)

        messages += [{"role": "assistant", "content": first.choices[0].message.content}]
        messages += [{"role": "user", "content": "something older"}]
        clock, arrivals, chunks = time.perf_counter(), [], []
        for chunk in chat(api, "recagent-movies", messages, stream=True):
            arrivals.append(time.perf_counter() - clock)
            chunks.append(chunk)
        seconds.append(arrivals[-1])
        items_at, text_at, text = streamed(chunks)
        assert items_at < text_at and arrivals[items_at] < arrivals[text_at]
        final = recagent(chunks[-1])
        older = final["items"]
        assert older and all(i["year"] < oldest for i in older), (oldest, older)
        assert text == final["reply"]

        messages += [{"role": "assistant", "content": text}, {"role": "user", "content": "not the first one"}]
        clock = time.perf_counter()
        third = recagent(chat(api, "recagent-movies", messages))
        seconds.append(time.perf_counter() - clock)
        assert third["items"] and older[0]["id"] not in [i["id"] for i in third["items"]]
        assert third["conversation_id"] == final["conversation_id"] and third["version"] == 3
        print(
            f"\nready in {seconds[0]:.1f} s; turns {seconds[1]:.1f} / {seconds[2]:.1f} / {seconds[3]:.1f} s; streamed "
            f"turn: items at {arrivals[items_at]:.2f} s, first text at {arrivals[text_at]:.2f} s"
        )
    finally:
        stop_server(proc)
