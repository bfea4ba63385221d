"""Beyond one machine, shown on this one (issue 12, point 7): two `recagent serve` replicas on two ports share one
PostgreSQL database, one Chroma server (`chroma run`) and one OpenAI-compatible LLM server; a conversation whose
turns alternate between them behaves as on one, and one API key is one user on both.

The dialogue runs on llama-cpp-python's server with the offline 1.5B model (the 0.5B does not follow "something
older"); turns are sent one at a time, as one user does (that server answers one request at a time). Two turns of
one conversation sent to both replicas at once use the fake LLM server of tests/conftest.py (the answers do not
matter there): exactly one is stored."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from conftest import FakeLLM, Served, run_cli, start_serve
from sqlalchemy import create_engine, text

from recagent.evals.loopback import start_llama_server, stop_server
from recagent.tools.models import resolve_model
from recagent.tools.store import Store

# The faults are injected into the LLM planner's calls, so the LLM plans every turn (code plans off)
PLANNER_EVERY_TURN = {"RECAGENT_CODE_PLANS": "0"}

pytestmark = [pytest.mark.slow, pytest.mark.server]

KEYS = "ana=ana-key-000001,bob=bob-key-000002"  # RECAGENT_API_KEYS, the same for every replica
ANA = {"Authorization": "Bearer ana-key-000001"}
BOB = {"Authorization": "Bearer bob-key-000002"}
TURN_TIMEOUT = httpx.Timeout(300.0)  # a turn of the 1.5B on 2 cores takes about 30 s; nothing waits forever


@pytest.fixture(scope="module")
def chroma_movies(env, chroma_server) -> str:
    """The Chroma server with the movie catalog, indexed by `recagent --chroma-url URL index` (text only: photo
    turns are not part of this test; an index made with images, as tests/test_search.py makes it, serves as well)."""
    done = run_cli(
        env, "--chroma-url", chroma_server, "index", "--catalog", "movies", "--quiet", "--no-images", timeout=900
    )
    assert done.returncode == 0, done.stderr
    assert "9,742" in done.stdout and chroma_server in done.stdout, done.stdout
    return chroma_server


@pytest.fixture(scope="module")
def llama_server(settings, tmp_path_factory) -> Iterator[str]:
    """`python -m llama_cpp.server` with the offline 1.5B GGUF on a free loopback port; its /v1 URL."""
    with open(tmp_path_factory.mktemp("llama-server") / "server.log", "w") as log:
        proc, url = start_llama_server(resolve_model("llm", settings), log)
        yield url
        stop_server(proc)


def start_replicas(settings, chroma: str, db: str, llm: list[str], logs, n: int = 2) -> list[Served]:
    """n replicas started together (each evaluates the planner's prompt before it is ready)."""
    replicas = [
        start_serve(
            settings,
            *llm,
            "--db",
            db,
            log=logs / f"replica-{'ab'[i]}.log",
            global_args=("--chroma-url", chroma),
            env={"RECAGENT_API_KEYS": KEYS, **PLANNER_EVERY_TURN},
            wait=None,
        )
        for i in range(n)
    ]
    try:
        return [r.wait_ready(600) for r in replicas]
    except BaseException:
        for r in replicas:
            r.kill()
        raise


def turn(c: httpx.Client, cid: str, words: str) -> dict:
    response = c.post(f"/conversations/{cid}/turns", json={"text": words})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["error"] is None and body["stored"] is True, body
    return body


def owners(db: str, cid: str) -> list[str]:
    engine = create_engine(db)
    try:
        with engine.connect() as conn:
            return [row[0] for row in conn.execute(text("SELECT owner FROM conversations WHERE id = :id"), {"id": cid})]
    finally:
        engine.dispose()


def test_a_conversation_alternating_between_two_replicas_behaves_as_on_one(
    settings, chroma_movies, llama_server, postgres, tmp_path
):
    db = postgres.new_database()
    llm = ["--llm", "openai", "--base-url", llama_server, "--model", "qwen", "--llm-parallel", "1"]
    a, b = start_replicas(settings, chroma_movies, db, llm, tmp_path)
    try:
        with (
            httpx.Client(base_url=a.url, headers=ANA, timeout=TURN_TIMEOUT) as on_a,
            httpx.Client(base_url=b.url, headers=ANA, timeout=TURN_TIMEOUT) as on_b,
            httpx.Client(base_url=a.url, headers=BOB, timeout=30) as bob_a,
            httpx.Client(base_url=b.url, headers=BOB, timeout=30) as bob_b,
        ):
            cid = on_a.post("/conversations").json()["id"]
            first = turn(on_a, cid, "I loved Toy Story and Finding Nemo, what should my kids watch next?")
            assert len(first["items"]) >= 3 and first["version"] == 1
            on_b_now = on_b.get(f"/conversations/{cid}").json()  # replica B reads what replica A stored
            assert on_b_now["version"] == 1 and len(on_b_now["turns"]) == 1
            assert on_b_now["state"]["shown"] == [i["id"] for i in first["items"]]
            oldest = min(i["year"] for i in first["items"])

            older = turn(on_b, cid, "something older")  # the refinement, on the other replica
            assert older["version"] == 2 and older["items"]
            assert all(i["year"] < oldest for i in older["items"]), [i["year"] for i in older["items"]]
            assert not {i["id"] for i in older["items"]} & {i["id"] for i in first["items"]}  # none shown twice

            third = turn(on_a, cid, "not the first one")  # and back on A: it rejects B's first item
            assert third["version"] == 3 and third["items"]
            assert all(i["year"] < oldest for i in third["items"])
            assert older["items"][0]["id"] not in [i["id"] for i in third["items"]]

            seen_a, seen_b = on_a.get(f"/conversations/{cid}").json(), on_b.get(f"/conversations/{cid}").json()
            assert seen_a == seen_b and seen_a["version"] == 3  # all turns, on either replica
            assert [t["request"]["text"] for t in seen_a["turns"]] == [
                "I loved Toy Story and Finding Nemo, what should my kids watch next?",
                "something older",
                "not the first one",
            ]
            assert [t["reply"]["items"] for t in seen_a["turns"]] == [first["items"], older["items"], third["items"]]
            assert older["items"][0]["id"] in seen_a["state"]["disliked"]

            # one key, one user on both replicas: the same list; another user sees nothing of it on either
            assert on_a.get("/conversations").json() == on_b.get("/conversations").json()
            assert [c["id"] for c in on_b.get("/conversations").json()] == [cid]
            for other in (bob_a, bob_b):
                assert other.get(f"/conversations/{cid}").status_code == 404
                assert other.get("/conversations").json() == []
            liked = third["items"][0]["id"]
            feedback = on_b.post(f"/conversations/{cid}/feedback", json={"item": liked, "kind": "like"})
            assert feedback.status_code == 200 and feedback.json()["stored"] is True, feedback.text

        store = Store(db)  # the pseudonyms agree: the salt is the database's, not a replica's
        ana = store.user_key("ana")
        assert owners(db, cid) == [ana]
        assert [(e["user"], e["item"], e["kind"]) for e in store.feedback_events("movies")] == [(ana, liked, "like")]
    finally:
        for replica in (a, b):
            replica.stop()


def test_one_turn_sent_to_both_replicas_at_once_is_stored_once(
    settings, chroma_movies, fake_llm: FakeLLM, postgres, tmp_path
):
    if not fake_llm.running():
        fake_llm.start()
    db = postgres.new_database()
    llm = ["--llm", "openai", "--base-url", f"{fake_llm.url}/v1", "--model", "fake"]
    a, b = start_replicas(settings, chroma_movies, db, llm, tmp_path)
    try:
        with (
            httpx.Client(base_url=a.url, headers=ANA, timeout=30) as on_a,
            httpx.Client(base_url=b.url, headers=ANA, timeout=30) as on_b,
        ):
            cid = on_a.post("/conversations").json()["id"]
            fake_llm.delay(planner=1)
            with httpx.Client(timeout=30) as both:  # each replica admits its turn: the database decides
                sent = [
                    both.build_request("POST", f"{r.url}/conversations/{cid}/turns", json={"text": w}, headers=ANA)
                    for r, w in ((a, "heist films"), (b, "space adventure"))
                ]
                started = time.time()
                responses = _at_once(both, sent)
            fake_llm.delay()
            assert time.time() - started < 20
            assert sorted(r.status_code for r in responses) == [200, 409], [r.text for r in responses]
            lost = next(r for r in responses if r.status_code == 409).json()
            assert (
                lost["kind"] == "StoreConflict"
                and "changed meanwhile (version 1, not 0); nothing was stored" in (lost["error"])
            )
            won = next(r for r in responses if r.status_code == 200).json()
            for c in (on_a, on_b):
                body = c.get(f"/conversations/{cid}").json()
                assert body["version"] == 1 and len(body["turns"]) == 1
                assert body["turns"][0]["reply"]["items"] == won["items"]
            assert turn(on_b, cid, "something older")["version"] == 2  # and the conversation goes on
    finally:
        fake_llm.delay()
        for replica in (a, b):
            replica.stop()


def _at_once(client: httpx.Client, requests: list[httpx.Request]) -> list[httpx.Response]:
    """Send the requests on threads of their own at the same moment; their responses, in order."""
    results: list[httpx.Response | None] = [None] * len(requests)

    def send(i: int) -> None:
        results[i] = client.send(requests[i])

    threads = [threading.Thread(target=send, args=(i,), daemon=True) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(r is not None for r in results), "a request never came back"
    return [r for r in results if r is not None]
