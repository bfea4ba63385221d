"""`recagent serve`'s native HTTP API, in process through FastAPI's TestClient over the real indexes and a real
SQLite database, with the scripted LLM: conversations, turns (JSON, multipart photo and speech, SSE), refinements,
feedback, forgetting, health, readiness and metrics; bad requests (right status, one clear line, nothing stored);
409 and 503 under contention; security defaults. Real `recagent serve` processes check the public-address rule and,
with the real local model (slow), a streamed turn and a refinement over loopback HTTP."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import RECAGENT, run_cli
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from recagent.agent.llm import ScriptedLLM
from recagent.agent.service import Service, ServiceConfig, create_app
from recagent.evals.eval_images import held_out_items
from recagent.evals.loopback import free_port, start_server, stop_server
from recagent.tools.catalog import load_catalog
from recagent.tools.settings import Settings

KEYS = {"ana-key-0001": "ana", "bob-key-0002": "bob", "cy-key-00003": "cy"}
ANA = {"Authorization": "Bearer ana-key-0001"}
BOB = {"Authorization": "Bearer bob-key-0002"}
CY = {"X-API-Key": "cy-key-00003"}  # the other way to give a key
SSE = {"Accept": "text/event-stream"}
ASK_JSON_KEYS = {"reply", "items", "tool_calls", "timings", "clarifying", "error", "error_kind", "removed_mentions"}
LIMIT = 2**20  # the test services' upload limit: 1 MB


def call(tool: str, **args: Any) -> dict:
    return {"tool": tool, "args": args}


SHARK = [call("search_catalog", query="scary shark attack", filters=["genre=Horror"]), "Here are some scary ones."]


def older(messages: list[dict]) -> dict:
    """The planner's "older": the bound the state it is shown gives (as the local model reads it)."""
    bound = re.search(r"older: year<(\d+)", messages[-1]["content"])
    assert bound, messages[-1]["content"]
    return call("refine_last", filters=[f"year<{bound.group(1)}"])


def words_of_the_user(messages: list[dict]) -> dict:
    """A planner that searches for what the user said (shows that a transcript is what the turn is about)."""
    return call("search_catalog", query=messages[-1]["content"].rsplit("User: ", 1)[-1], filters=[])


def wait_ready(client: TestClient, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while client.get("/readyz").status_code != 200:
        assert time.time() < deadline, "the service never became ready"
        time.sleep(0.05)


def config(settings: Settings, db: Path, **changes: Any) -> ServiceConfig:
    """A service on its own database file, with three users' keys and a 1 MB upload limit. torch's threads are left
    as they are: the service would set them for the whole test process."""
    values: dict[str, Any] = {"llm_kind": "scripted", "api_keys": KEYS, "max_upload_bytes": LIMIT, **changes}
    values.setdefault("torch_threads", None)
    # The scripted LLM answers as the planner too: every turn is planned by it (code_plans off)
    return ServiceConfig(settings=settings.with_(db_url=f"sqlite:///{db}", code_plans=False), **values)


def sse_events(body: str) -> list[tuple[str, Any]]:
    """Server-sent events as (event, data) pairs, in the order sent."""
    events = []
    for block in body.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def metrics(client: TestClient) -> dict[tuple[str, tuple], float]:
    """/metrics as {(sample name, sorted labels): value}."""
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def stored(client: TestClient, cid: str, headers: dict) -> tuple[int, list, dict]:
    """What the database holds for a conversation: its version, its turns and its state."""
    response = client.get(f"/conversations/{cid}", headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    return body["version"], body["turns"], body["state"]


def no_internal_paths(text: str, settings: Settings) -> None:
    """Nothing of the server's file system in a response: no home, data, cache or temporary folder, no traceback."""
    for secret in (str(settings.home), str(settings.data), str(settings.cache), tempfile.gettempdir() + "/"):
        assert secret not in text, f"{secret} in {text[:500]}"
    assert "Traceback" not in text and 'File "' not in text and "site-packages" not in text


def all_strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from all_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from all_strings(v)


# ---- the services under test ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def service(settings, movies_index, tmp_path_factory) -> Service:
    return Service(config(settings, tmp_path_factory.mktemp("serve-db") / "recagent.sqlite3"), llm=ScriptedLLM())


@pytest.fixture(scope="module")
def client(service) -> Iterator[TestClient]:
    with TestClient(create_app(service)) as c:
        wait_ready(c)
        yield c


@pytest.fixture
def script(service) -> Callable[..., ScriptedLLM]:
    """Give the service's LLM the answers of the next turns (planner, writer, ...); returns the scripted LLM."""

    def answers(*entries: Any) -> ScriptedLLM:
        llm = ScriptedLLM(list(entries))
        service.llm.inner = llm
        return llm

    return answers


@pytest.fixture
def conversation(client, script) -> str:
    """Ana's conversation after one turn (Jaws and other shark films shown): version 1."""
    script(*SHARK)
    cid = client.post("/conversations", headers=ANA).json()["id"]
    response = client.post(f"/conversations/{cid}/turns", json={"text": "a scary movie about a shark"}, headers=ANA)
    assert response.status_code == 200 and response.json()["version"] == 1, response.text
    return cid


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("serve-audio")
    request = "I want a scary movie about a shark"
    subprocess.run(["espeak-ng", "-s", "140", "-w", str(folder / "shark.wav"), request], check=True)
    return folder


class Gate:
    """A scripted LLM answer that waits until the test opens the gate: a turn held in the middle."""

    def __init__(self, answer: Any):
        self.answer, self.entered, self.opened = answer, threading.Event(), threading.Event()

    def __call__(self, messages: list[dict]) -> Any:
        self.entered.set()
        assert self.opened.wait(60), "the test never opened the gate"
        return self.answer

    def wait_entered(self) -> None:
        assert self.entered.wait(30), "the turn never reached the LLM"


def in_thread(func: Callable[[], Any]) -> tuple[threading.Thread, dict]:
    out: dict = {}
    thread = threading.Thread(target=lambda: out.setdefault("result", func()), daemon=True)
    thread.start()
    return thread, out


# ---- conversations and turns --------------------------------------------------------------------------------------


def test_conversations_are_created_read_listed_and_deleted(client):
    created = client.post("/conversations", json={"catalog": "movies"}, headers=ANA)
    assert created.status_code == 201
    conv = created.json()
    assert conv["catalog"] == "movies" and conv["version"] == 0 and len(conv["id"]) >= 16
    plain = client.post("/conversations", headers=ANA).json()  # no body: the first catalog served
    assert plain["catalog"] == "movies" and plain["id"] != conv["id"]

    read = client.get(f"/conversations/{conv['id']}", headers=ANA).json()
    assert read["turns"] == [] and read["state"]["messages"] == [] and read["version"] == 0
    mine = [c["id"] for c in client.get("/conversations", headers=ANA).json()]
    assert {conv["id"], plain["id"]} <= set(mine)
    assert not {conv["id"], plain["id"]} & {c["id"] for c in client.get("/conversations", headers=BOB).json()}

    assert client.delete(f"/conversations/{conv['id']}", headers=ANA).status_code == 204
    assert client.get(f"/conversations/{conv['id']}", headers=ANA).status_code == 404
    assert conv["id"] not in [c["id"] for c in client.get("/conversations", headers=ANA).json()]
    assert client.delete(f"/conversations/{conv['id']}", headers=ANA).status_code == 404


def test_a_json_turn_answers_as_ask_json_does_and_is_stored(client, script, settings):
    llm = script(*SHARK)
    cid = client.post("/conversations", headers=ANA).json()["id"]
    response = client.post(f"/conversations/{cid}/turns", json={"text": "a scary movie about a shark"}, headers=ANA)
    assert response.status_code == 200, response.text
    body = response.json()
    assert ASK_JSON_KEYS <= set(body) and body["error"] is None and body["stored"] is True and body["version"] == 1
    titles = [i["title"] for i in body["items"]]
    assert "Jaws (1975)" in titles and len(titles) == 5
    assert all({"id", "title", "score"} <= set(i) for i in body["items"])
    assert body["tool_calls"][0]["name"] == "search_catalog" and "items_on_screen" in body["timings"]
    assert body["reply"].startswith("Here are some scary ones.") and "1. " in body["reply"]
    assert len(llm.calls) == 2  # the planner and the writer, nothing else

    version, turns, state = stored(client, cid, ANA)
    assert version == 1 and len(turns) == 1 and turns[0]["request"] == {"text": "a scary movie about a shark"}
    assert [i["id"] for i in turns[0]["reply"]["items"]] == [i["id"] for i in body["items"]]
    assert state["shown"] == [i["id"] for i in body["items"]]
    summary = next(c for c in client.get("/conversations", headers=ANA).json() if c["id"] == cid)
    assert summary["title"] == "a scary movie about a shark" and summary["version"] == 1

    # items carry their image as a URL of the service, never a file path; the URL serves the poster
    jaws = next(i for i in body["items"] if i["title"] == "Jaws (1975)")
    assert jaws["image"] == f"/items/movies/{jaws['id']}/image"
    for text in (response.text, client.get(f"/conversations/{cid}", headers=ANA).text):
        no_internal_paths(text, settings)
        assert [s for s in all_strings(json.loads(text)) if s.startswith("/") and not s.startswith("/items/")] == []
    poster = client.get(jaws["image"])
    assert poster.status_code == 200 and poster.headers["content-type"].startswith("image/")
    assert poster.content == Path(movies_poster(settings, jaws["id"])).read_bytes()
    for bad in ("/items/movies/no-such-id/image", "/items/nope/1387/image", "/items/movies/..%2F..%2Fetc%2Fpasswd"):
        missing = client.get(bad)
        assert missing.status_code == 404 and missing.json()["error"] in ("no such image", "Not Found"), bad


def movies_poster(settings: Settings, item_id: str) -> str:
    [item] = [i for i in load_catalog("movies", settings).items if i.id == item_id]
    assert item.image
    return item.image


def test_refinements_build_on_the_stored_conversation(client, script):
    script(*SHARK, older, "Some older ones.", call("refine_last", filters=[], reject=[]), "Others.")
    cid = client.post("/conversations", headers=ANA).json()["id"]
    first = client.post(f"/conversations/{cid}/turns", json={"text": "a scary movie about a shark"}, headers=ANA)
    oldest = min(i["year"] for i in first.json()["items"])
    second = client.post(f"/conversations/{cid}/turns", json={"text": "something older"}, headers=ANA).json()
    assert second["items"] and all(i["year"] < oldest for i in second["items"]), (oldest, second["items"])
    assert second["version"] == 2
    third = client.post(f"/conversations/{cid}/turns", json={"text": "not the first one"}, headers=ANA).json()
    rejected = second["items"][0]["id"]
    assert rejected not in [i["id"] for i in third["items"]] and all(i["year"] < oldest for i in third["items"])
    version, turns, state = stored(client, cid, ANA)
    assert version == 3 and [t["request"]["text"] for t in turns] == [
        "a scary movie about a shark",
        "something older",
        "not the first one",
    ]
    assert state["disliked"] == [rejected] and f"year<{oldest}" in state["constraints"]


def test_a_streamed_turn_sends_the_items_before_the_first_token_then_the_reply(client, script, settings):
    script(*SHARK)
    cid = client.post("/conversations", headers=ANA).json()["id"]
    response = client.post(
        f"/conversations/{cid}/turns", json={"text": "a scary movie about a shark"}, headers=ANA | SSE
    )
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    kinds = [k for k, _ in events]
    assert kinds.count("items") == 1 and "token" in kinds and kinds[-1] == "reply" and "error" not in kinds
    assert kinds.index("items") < kinds.index("token")
    assert ("status", "planning") in events
    items = dict(events)["items"]
    reply = events[-1][1]
    assert ASK_JSON_KEYS <= set(reply) and reply["stored"] is True and reply["version"] == 1
    assert [i["id"] for i in reply["items"]] == [i["id"] for i in items] and "Jaws (1975)" in reply["reply"]
    assert all(i["image"].startswith("/items/movies/") for i in items)
    streamed = [v for k, v in events if k == "token"]
    assert streamed[0] == "Here are some scary ones." and reply["reply"] == "\n".join(streamed)
    no_internal_paths(response.text, settings)
    assert stored(client, cid, ANA)[0] == 1


def test_a_photo_turn_in_a_multipart_form(settings, fashion_images, tmp_path):
    """A real product photo (a red T-shirt) and "like this but in black": black T-shirts."""
    [red] = held_out_items(settings, 1, articleType="Tshirts", baseColour="Red")
    assert red.image
    service = Service(
        config(settings, tmp_path / "db.sqlite3", catalogs=("fashion",)),
        llm=ScriptedLLM([call("search_catalog", query="t-shirt in black", filters=[]), "Here are black ones."]),
    )
    with TestClient(create_app(service)) as client:
        wait_ready(client)
        cid = client.post("/conversations", json={"catalog": "fashion"}, headers=ANA).json()["id"]
        response = client.post(
            f"/conversations/{cid}/turns",
            data={"text": "something like this but in black"},
            files={"image": ("shirt.jpg", Path(red.image).read_bytes(), "image/jpeg")},
            headers=ANA,
        )
        assert response.status_code == 200, response.text
        items = response.json()["items"]
        assert len(items) == 5 and all(i["baseColour"] == "Black" for i in items), items
        assert sum(i["articleType"] == "Tshirts" for i in items) >= 4, items
        assert red.id not in [i["id"] for i in items]
        version, turns, state = stored(client, cid, ANA)
        assert version == 1 and turns[0]["request"]["image"] == {"bytes": Path(red.image).stat().st_size}
        assert state["photo"]["source"] == "photo" and len(state["photo"]["vector"]) > 100
        no_internal_paths(response.text + json.dumps(state), settings)


def test_a_spoken_turn_in_a_multipart_form(client, script, recordings, settings):
    script(words_of_the_user, "Shark films.")
    cid = client.post("/conversations", headers=ANA).json()["id"]
    wav = (recordings / "shark.wav").read_bytes()
    response = client.post(
        f"/conversations/{cid}/turns", files={"audio": ("request.wav", wav, "audio/wav")}, headers=ANA
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "shark" in body["transcript"].lower() and body["stored"]
    assert "Jaws (1975)" in [i["title"] for i in body["items"]]
    assert body["tool_calls"][0]["arguments"]["query"] == body["transcript"]
    assert body["timings"]["transcription"] > 0
    version, turns, _ = stored(client, cid, ANA)
    assert version == 1 and turns[0]["request"]["audio"] == {"name": "request.wav", "bytes": len(wav)}
    no_internal_paths(response.text, settings)


# ---- feedback and forgetting ------------------------------------------------------------------------------------


def test_feedback_is_stored_under_a_pseudonym_and_steers_the_conversation(client, script, service, conversation):
    version, turns, state = stored(client, conversation, ANA)
    first, second, third = state["shown"][:3]
    before = len(service.store.feedback_events("movies"))
    for item, kind in ((first, "dislike"), (second, "like"), (third, "accept")):
        answer = client.post(f"/conversations/{conversation}/feedback", json={"item": item, "kind": kind}, headers=ANA)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"item": item, "kind": kind, "version": version + 1, "stored": True}
        version += 1

    events = service.store.feedback_events("movies")[before:]
    assert [(e["item"], e["signal"], e["kind"]) for e in events] == [
        (first, -1, "dislike"),
        (second, 1, "like"),
        (third, 1, "accept"),
    ]
    owner = service.store.user_key("ana")
    assert {e["user"] for e in events} == {owner} and "ana" not in owner and len(owner) == 64
    _, _, state = stored(client, conversation, ANA)
    assert state["disliked"] == [first] and state["liked"] == [second, third]

    shown = client.post(f"/conversations/{conversation}/feedback", json={"item": "1", "kind": "like"}, headers=ANA)
    assert shown.status_code == 400 and shown.json()["error"] == "item '1' was not shown in this conversation"
    assert len(service.store.feedback_events("movies")) == before + 3 and stored(client, conversation, ANA)[0] == 4

    script(call("refine_last", filters=[]), "More.")
    again = client.post(f"/conversations/{conversation}/turns", json={"text": "more like these"}, headers=ANA).json()
    assert again["items"] and first not in [i["id"] for i in again["items"]]


def test_forget_deletes_everything_stored_for_the_user_and_only_that(client, script, service):
    script(*SHARK)
    cid = client.post("/conversations", headers=CY).json()["id"]
    items = client.post(f"/conversations/{cid}/turns", json={"text": "a scary movie about a shark"}, headers=CY)
    item = items.json()["items"][0]["id"]
    assert client.post(f"/conversations/{cid}/feedback", json={"item": item, "kind": "like"}, headers=CY).is_success
    ana_conversations = client.get("/conversations", headers=ANA).json()
    ana_events = [e for e in service.store.feedback_events() if e["user"] == service.store.user_key("ana")]
    cy = service.store.user_key("cy")
    assert [e for e in service.store.feedback_events() if e["user"] == cy]

    forgot = client.delete("/users/me", headers=CY)
    assert forgot.status_code == 200 and forgot.json()["deleted"] >= 3  # the feedback, the turn, the conversation
    assert client.get("/conversations", headers=CY).json() == []
    assert client.get(f"/conversations/{cid}", headers=CY).status_code == 404
    assert [e for e in service.store.feedback_events() if e["user"] == cy] == []
    assert client.get("/conversations", headers=ANA).json() == ana_conversations
    assert [e for e in service.store.feedback_events() if e["user"] == service.store.user_key("ana")] == ana_events
    assert client.delete("/users/me", headers=CY).json() == {"deleted": 0}


# ---- health, readiness, metrics ---------------------------------------------------------------------------------


def test_health_and_readiness_wait_for_the_warm_up(settings, movies_index, tmp_path):
    """The in-process model's warm-up (the planner's fixed prompt) is held at a gate: 503 until it is done."""
    gate = Gate("{}")
    service = Service(config(settings, tmp_path / "db.sqlite3", llm_kind="local"), llm=ScriptedLLM([gate]))
    with TestClient(create_app(service)) as client:
        gate.wait_entered()
        assert client.get("/healthz").json() == {"status": "ok"}
        waiting = client.get("/readyz")
        assert waiting.status_code == 503 and waiting.json()["ready"] is False
        gate.opened.set()
        wait_ready(client, 30)
        ready = {"ready": True, "catalogs": ["movies"], "llm": "scripted", "problems": []}
        assert client.get("/readyz").json() == ready
    [warm_up] = service.llm.inner.calls  # type: ignore[attr-defined]
    assert warm_up["messages"][0]["content"].startswith("You plan") and warm_up["schema"]


def test_a_catalog_that_cannot_be_served_keeps_the_service_not_ready_and_says_why(settings, tmp_path):
    """A home where nothing is indexed: alive, never ready, and /readyz names the catalog and the fix."""
    empty = settings.with_(home=tmp_path / "empty-home")
    service = Service(config(empty, tmp_path / "db.sqlite3"), llm=ScriptedLLM())
    with TestClient(create_app(service)) as client:
        deadline = time.time() + 60
        while not service.ready:
            assert time.time() < deadline, "the warm-up never ended"
            time.sleep(0.05)
        assert client.get("/healthz").status_code == 200
        answer = client.get("/readyz")
        assert answer.status_code == 503 and answer.json()["ready"] is False
        [problem] = answer.json()["problems"]
        assert problem.startswith("movies: ") and "recagent index" in problem
        assert str(tmp_path) not in problem


def test_metrics_count_turns_errors_stages_queue_and_conversations(client, script, service):
    before = metrics(client)
    script(*SHARK)
    cid = client.post("/conversations", headers=ANA).json()["id"]
    assert client.post(
        f"/conversations/{cid}/turns", json={"text": "a scary movie about a shark"}, headers=ANA
    ).is_success
    broken = client.post(
        f"/conversations/{cid}/turns", files={"image": ("x.jpg", b"not an image", "image/jpeg")}, headers=ANA
    )
    assert broken.status_code == 400
    after = metrics(client)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("recagent_turns_total", catalog="movies", outcome="ok") == 1
    assert delta("recagent_turns_total", catalog="movies", outcome="error") == 1
    assert delta("recagent_errors_total", kind="ImageError") == 1
    for stage in ("total", "items_on_screen", "retrieval", "ranking", "llm_prompt", "llm_generation"):
        assert delta("recagent_turn_stage_seconds_count", stage=stage) >= 1, stage
        assert ("recagent_turn_stage_seconds_bucket", (("le", "+Inf"), ("stage", stage))) in after
    assert delta("recagent_llm_queue_wait_seconds_count") == 2  # the planner's and the writer's calls
    assert after[("recagent_llm_queue_depth", ())] == 0 and after[("recagent_turns_in_progress", ())] == 0
    assert after[("recagent_conversations_stored", ())] == service.store.count_conversations() >= 1


# ---- bad requests: the right status, one clear line, nothing stored -----------------------------------------------


BAD_TURNS: dict[str, tuple[dict[str, Any], int, str]] = {
    # name: (request keyword arguments, status, words of the message)
    "oversized image": (
        {"files": {"image": ("big.jpg", b"\xff" * (LIMIT + 1), "image/jpeg")}, "data": {"text": "like this"}},
        413,
        "the image file is over 1 MB",
    ),
    "oversized request": (
        {"files": {"audio": ("big.wav", b"\0" * (3 * LIMIT), "audio/wav")}},
        413,
        "the request is over 2 MB",
    ),
    "not an image": (
        {"files": {"image": ("notes.jpg", b"this is not an image", "image/jpeg")}, "data": {"text": "like this"}},
        400,
        "not an image file (or a format that cannot be read)",
    ),
    "empty image": ({"files": {"image": ("empty.png", b"", "image/png")}}, 400, "the file is empty"),
    "not audio": (
        {"files": {"audio": ("notes.mp3", b"this is not audio", "audio/mpeg")}},
        400,
        "notes.mp3: not a readable audio file",
    ),
    "empty audio": ({"files": {"audio": ("empty.wav", b"", "audio/wav")}}, 400, "empty.wav: the file is empty"),
    "odd audio name": ({"files": {"audio": ("..", b"this is not audio", "audio/wav")}}, 400, "not a readable audio"),
    "empty text": ({"json": {"text": ""}}, 400, "nothing to answer: give text, an audio recording or an image"),
    "blank text": ({"json": {"text": "  \n "}}, 400, "nothing to answer"),
    "empty form": ({"data": {"text": ""}, "files": {"other": ("x.txt", b"x", "text/plain")}}, 400, "nothing to answer"),
    "malformed JSON": (
        {"content": b'{"text": "sharks', "headers": {"Content-Type": "application/json"}},
        400,
        "the body is not valid JSON",
    ),
    "missing field": ({"json": {"txt": "sharks"}}, 422, "text: Field required"),
    "wrong type": ({"json": {"text": ["sharks"]}}, 422, "text: Input should be a valid string"),
    "not an object": ({"json": ["sharks"]}, 422, "Input should be a valid dictionary"),
    "another type": ({"content": b"sharks", "headers": {"Content-Type": "text/plain"}}, 415, "send JSON"),
}


@pytest.mark.parametrize("case", list(BAD_TURNS))
def test_a_bad_turn_gets_its_status_and_a_clear_message_and_nothing_is_stored(
    client, script, conversation, service, settings, case
):
    request, status, words = BAD_TURNS[case]
    before = stored(client, conversation, ANA)
    llm = script()  # no answer: the LLM is never reached
    conversations = service.store.count_conversations()
    request = {**request, "headers": {**ANA, **request.get("headers", {})}}
    response = client.post(f"/conversations/{conversation}/turns", **request)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert words in error and "\n" not in error and len(error) < 300, error
    no_internal_paths(response.text, settings)
    assert llm.calls == [] and stored(client, conversation, ANA) == before
    assert service.store.count_conversations() == conversations


def test_requests_about_conversations_that_are_not_yours_or_do_not_exist(client, script, conversation, settings):
    before = stored(client, conversation, ANA)
    llm = script(*SHARK)
    turn = {"json": {"text": "and dinosaurs?"}}
    cases: list[tuple[str, str, dict[str, str], dict[str, Any], int, str]] = [
        ("post", f"/conversations/{conversation}/turns", BOB, turn, 404, f"no conversation '{conversation}'"),
        ("get", f"/conversations/{conversation}", BOB, {}, 404, "no conversation"),
        ("delete", f"/conversations/{conversation}", BOB, {}, 404, "no conversation"),
        ("post", f"/conversations/{conversation}/feedback", BOB, {"json": {"item": "1387", "kind": "like"}}, 404, ""),
        ("post", "/conversations/no-such-conversation/turns", ANA, turn, 404, "no conversation 'no-such-conversation'"),
        ("post", f"/conversations/{conversation}/turns", {}, turn, 401, "a valid API key is needed"),
        ("post", f"/conversations/{conversation}/turns", {"Authorization": "Bearer wrong-key-0"}, turn, 401, "API key"),
        ("post", f"/conversations/{conversation}/turns", {"Authorization": "ana-key-0001"}, turn, 401, "API key"),
        ("get", "/conversations", {"X-API-Key": "nope"}, {}, 401, "API key"),
        ("delete", "/users/me", {}, {}, 401, "API key"),
        ("post", "/conversations", ANA, {"json": {"catalog": "books"}}, 400, "this service serves movies, not 'books'"),
        (
            "post",
            "/conversations",
            ANA,
            {"content": b"{", "headers": {"Content-Type": "application/json"}},
            400,
            "JSON",
        ),
        (
            "post",
            f"/conversations/{conversation}/feedback",
            ANA,
            {"json": {"item": "1387"}},
            422,
            "kind: Field required",
        ),
        ("post", f"/conversations/{conversation}/feedback", ANA, {"json": {"item": "1", "kind": "love"}}, 422, "kind"),
        (
            "post",
            f"/conversations/{conversation}/feedback",
            ANA,
            {"content": b"item=1", "headers": {"Content-Type": "application/json"}},
            400,
            "not valid JSON",
        ),
    ]
    conversations = len(client.get("/conversations", headers=ANA).json())
    for method, path, headers, request, status, words in cases:
        request = {**request, "headers": {**headers, **request.get("headers", {})}}
        response = client.request(method.upper(), path, **request)
        assert response.status_code == status, (method, path, response.text)
        error = response.json()["error"]
        assert words in error and "\n" not in error, (path, error)
        no_internal_paths(response.text, settings)
    assert llm.calls == [] and stored(client, conversation, ANA) == before
    assert len(client.get("/conversations", headers=ANA).json()) == conversations


def test_a_second_turn_while_one_runs_gets_409_and_the_first_is_stored(client, script, conversation, settings):
    gate = Gate(call("search_catalog", query="pixar animation", filters=[]))
    script(gate, "Pixar.")
    url = f"/conversations/{conversation}/turns"
    thread, out = in_thread(lambda: client.post(url, json={"text": "pixar films"}, headers=ANA))
    gate.wait_entered()
    for extra in ({}, SSE):
        busy = client.post(url, json={"text": "and dinosaurs?"}, headers=ANA | extra)
        assert busy.status_code == 409 and busy.json() == {
            "error": "this conversation has a turn running; wait for its reply",
            "kind": "ConflictError",
        }
    liked = client.post(f"/conversations/{conversation}/feedback", json={"item": "1387", "kind": "like"}, headers=ANA)
    assert liked.status_code == 409, liked.text  # a like now would make the running turn fail to store
    gate.opened.set()
    thread.join(30)
    first = out["result"]
    assert first.status_code == 200 and first.json()["stored"] and first.json()["version"] == 2, first.text
    version, turns, _ = stored(client, conversation, ANA)
    assert version == 2 and [t["request"]["text"] for t in turns] == ["a scary movie about a shark", "pixar films"]


def test_a_full_service_answers_503_with_retry_after_and_stores_nothing(settings, movies_index, tmp_path):
    gate = Gate(call("search_catalog", query="pixar animation", filters=[]))
    llm = ScriptedLLM([gate, "Pixar.", *SHARK])
    service = Service(config(settings, tmp_path / "db.sqlite3", max_pending=1), llm=llm)
    with TestClient(create_app(service)) as client:
        wait_ready(client)
        held, other = (client.post("/conversations", headers=ANA).json()["id"] for _ in range(2))
        thread, out = in_thread(
            lambda: client.post(f"/conversations/{held}/turns", json={"text": "pixar films"}, headers=ANA)
        )
        gate.wait_entered()
        for extra in ({}, SSE):
            started = time.perf_counter()
            full = client.post(f"/conversations/{other}/turns", json={"text": "a shark movie"}, headers=ANA | extra)
            assert time.perf_counter() - started < 5  # answered at once, not queued behind the held turn
            assert full.status_code == 503 and full.json()["kind"] == "BusyError", full.text
            assert full.json()["error"].startswith("the service is busy") and int(full.headers["Retry-After"]) >= 1
        assert stored(client, other, ANA)[:2] == (0, [])
        assert metrics(client)[("recagent_errors_total", (("kind", "busy"),))] == 2
        gate.opened.set()
        thread.join(30)
        assert out["result"].status_code == 200
        later = client.post(f"/conversations/{other}/turns", json={"text": "a scary movie about a shark"}, headers=ANA)
        assert later.status_code == 200 and later.json()["version"] == 1


# ---- security defaults ------------------------------------------------------------------------------------------


def test_a_public_address_without_keys_is_refused(env, tmp_path):
    script_file = tmp_path / "script.json"
    script_file.write_text("[]")
    environment = {k: v for k, v in env.items() if k != "RECAGENT_API_KEYS"}
    done = run_cli(
        environment,
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        "9",
        "--llm",
        "scripted",
        "--model",
        str(script_file),
        timeout=120,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip() == (
        "Error: serving on 0.0.0.0 needs API keys: give --api-key NAME=KEY (or RECAGENT_API_KEYS); without keys the "
        "service only binds 127.0.0.1"
    )
    short = run_cli(
        environment, "serve", "--host", "0.0.0.0", "--api-key", "ana=short", "--llm", "scripted", timeout=120
    )
    assert short.returncode == 1 and short.stderr.strip() == (
        "Error: API key for 'ana' is too short: use at least 8 characters"
    )


def test_cors_headers_only_for_a_configured_origin(settings, tmp_path):
    preflight = {"Origin": "http://chat.example", "Access-Control-Request-Method": "POST"}
    closed = TestClient(create_app(Service(config(settings, tmp_path / "a.sqlite3"), llm=ScriptedLLM())))
    for response in (
        closed.get("/healthz", headers={"Origin": "http://chat.example"}),
        closed.options("/v1/models", headers=preflight),
    ):
        assert not [h for h in response.headers if h.lower().startswith("access-control-")], response.headers
    opened = TestClient(
        create_app(
            Service(config(settings, tmp_path / "b.sqlite3", cors_origins=("http://chat.example",)), llm=ScriptedLLM())
        )
    )
    allowed = opened.options("/v1/chat/completions", headers=preflight)
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "http://chat.example"
    other = opened.get("/healthz", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers


# ---- a real `recagent serve` with the real local model ------------------------------------------------------------


@pytest.mark.slow
def test_a_real_server_streams_the_items_before_the_text_with_the_local_model(settings, movies_index, tmp_path):
    """What a newcomer does with curl: a conversation, a streamed turn (the items arrive before the first word of the
    reply), then "something older" as JSON, on the in-process 1.5B model over loopback HTTP."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [RECAGENT, "--home", str(settings.home), "--data", str(settings.data), "serve", "--port", str(port)]
    cmd += ["--db", f"sqlite:///{tmp_path / 'recagent.sqlite3'}"]
    with open(tmp_path / "serve.log", "w") as log:
        proc = start_server(cmd, lambda: httpx.get(url + "/readyz").raise_for_status(), 300, log, "recagent serve")
    try:
        with httpx.Client(base_url=url, timeout=300) as http:
            cid = http.post("/conversations").json()["id"]
            arrivals: list[tuple[float, str, Any]] = []
            started = time.perf_counter()
            shark = {"text": "a scary movie about a shark"}
            with http.stream("POST", f"/conversations/{cid}/turns", json=shark, headers=SSE) as response:
                assert response.status_code == 200
                kind = None
                for line in response.iter_lines():
                    if line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: "):
                        arrivals.append((time.perf_counter() - started, str(kind), json.loads(line[6:])))
            kinds = [k for _, k, _ in arrivals]
            items_at, token_at = kinds.index("items"), kinds.index("token")
            assert items_at < token_at and arrivals[items_at][0] < arrivals[token_at][0]
            reply = arrivals[-1][2]
            assert kinds[-1] == "reply" and reply["stored"] and "Jaws (1975)" in [i["title"] for i in reply["items"]]
            oldest = min(i["year"] for i in reply["items"])
            older = http.post(f"/conversations/{cid}/turns", json={"text": "something older"}).json()
            assert older["stored"] and older["items"] and all(i["year"] < oldest for i in older["items"]), older
            assert http.get(f"/conversations/{cid}").json()["version"] == 2
        print(f"\nstreamed turn: items at {arrivals[items_at][0]:.2f} s, first words at {arrivals[token_at][0]:.2f} s")
    finally:
        stop_server(proc)
