"""`recagent serve` under faults (issue 12, point 9), each on real processes: the service killed with SIGKILL in the
middle of turns and started again; the LLM server killed during turns and started again; a client that goes away in
the middle of a streamed turn; a full service; the database (PostgreSQL) stopped and started again.

The LLM is tests/conftest.py's FakeLLM: a real OpenAI-compatible HTTP server in a process of its own, whose answers
can be delayed (a turn held "in the middle") and which can be killed. The index, the ranking, the database and the
service are the real ones. Every client call has a timeout: nothing here may hang."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import httpx
import pytest
from conftest import PASSWORD, FakeLLM, Served, start_serve
from prometheus_client.parser import text_string_to_metric_families

# The faults are injected into the LLM planner's calls, so the LLM plans every turn (code plans off)
PLANNER_EVERY_TURN = {"RECAGENT_CODE_PLANS": "0"}

pytestmark = pytest.mark.server

KEYS = "ana=ana-key-000001,bob=bob-key-000002"
ANA = {"Authorization": "Bearer ana-key-000001"}
SSE = {"Accept": "text/event-stream"}
TIMEOUT = httpx.Timeout(30.0)  # every call to the service: a hang fails the test instead of holding CI


@pytest.fixture
def llm(fake_llm: FakeLLM) -> FakeLLM:
    """The fake LLM server, running and without delays."""
    if not fake_llm.running():
        fake_llm.start()
    fake_llm.delay()
    return fake_llm


@pytest.fixture
def serve(settings, movies_index, llm, tmp_path) -> Iterator[Callable[..., Served]]:
    """Start `recagent serve` processes on the fake LLM (ana's and bob's keys) with a database URL and more options;
    whatever is still running at the end is killed."""
    started: list[Served] = []

    def start(db: str, *options: str) -> Served:
        args = ["--llm", "openai", "--base-url", f"{llm.url}/v1", "--model", "fake", "--db", db, *options]
        served = start_serve(
            settings,
            *args,
            log=tmp_path / f"serve-{len(started) + 1}.log",
            env={"RECAGENT_API_KEYS": KEYS, **PLANNER_EVERY_TURN},
        )
        started.append(served)
        return served

    yield start
    for served in started:
        served.kill()


def client(served: Served) -> httpx.Client:
    return httpx.Client(base_url=served.url, headers=ANA, timeout=TIMEOUT)


def new_conversation(c: httpx.Client) -> str:
    response = c.post("/conversations")
    assert response.status_code == 201, response.text
    return response.json()["id"]


def post_turn(c: httpx.Client, cid: str, text: str) -> httpx.Response:
    return c.post(f"/conversations/{cid}/turns", json={"text": text})


def post_once(served: Served, cid: str, text: str) -> httpx.Response:
    """A turn on a connection of its own (for turns sent from threads)."""
    with client(served) as c:
        return post_turn(c, cid, text)


def stored(c: httpx.Client, cid: str) -> tuple[int, list[dict], dict]:
    """The conversation as the database holds it, checked to be whole: its version is its number of turns, and its
    state holds exactly those turns (their words, one answer each, the items they showed)."""
    response = c.get(f"/conversations/{cid}")
    assert response.status_code == 200, response.text
    body = response.json()
    version, turns, state = body["version"], body["turns"], body["state"]
    assert version == len(turns) and [t["number"] for t in turns] == list(range(1, len(turns) + 1))
    assert [m["content"] for m in state["messages"] if m["role"] == "user"] == [t["request"]["text"] for t in turns]
    assert sum(m["role"] == "assistant" for m in state["messages"]) == len(turns)
    assert state["shown"] == [item["id"] for t in turns for item in t["reply"]["items"]]
    return version, turns, state


def metrics(c: httpx.Client) -> dict[tuple[str, tuple], float]:
    """/metrics as {(sample name, sorted labels): value}."""
    response = c.get("/metrics")
    assert response.status_code == 200, response.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def errors(c: httpx.Client, kind: str) -> float:
    return metrics(c).get(("recagent_errors_total", (("kind", kind),)), 0.0)


def wait_idle(c: httpx.Client, seconds: float = 60) -> None:
    """Until the service has no turn in hand (a turn whose client left runs to its end)."""
    deadline = time.time() + seconds
    while metrics(c)[("recagent_turns_in_progress", ())] > 0:
        assert time.time() < deadline, "a turn never ended"
        time.sleep(0.1)


def in_thread(func: Callable[[], Any]) -> tuple[threading.Thread, dict]:
    """Run func on a thread; its result or exception lands in the dict returned."""
    out: dict = {}

    def run() -> None:
        try:
            out["result"] = func()
        except Exception as error:  # looked at by the test
            out["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def outcome(out: dict) -> Any:
    """What the function run by in_thread returned (its exception raised again here)."""
    if "error" in out:
        raise out["error"]
    assert "result" in out, "the thread has not finished"
    return out["result"]


def streamed(served: Served, cid: str, text: str, until: str | None = None) -> list[tuple[str, Any]]:
    """POST a turn with Accept: text/event-stream and read its events; with `until`, drop the connection as soon as
    that event arrived (a client that goes away)."""
    events: list[tuple[str, Any]] = []
    with client(served) as c, c.stream("POST", f"/conversations/{cid}/turns", json={"text": text}, headers=SSE) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        kind = ""
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((kind, json.loads(line.removeprefix("data: "))))
                if kind == until:
                    break
    return events


# ---- (a) the service killed in the middle of turns -----------------------------------------------------------------
@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_a_service_killed_mid_turn_keeps_exactly_the_completed_turns(db, serve, llm, tmp_path, request):
    url = f"sqlite:///{tmp_path / 'recagent.sqlite3'}"
    if db == "postgresql":
        url = request.getfixturevalue("postgres").new_database()
    first = serve(url)
    with client(first) as c:
        ids = [new_conversation(c) for _ in range(4)]
    llm.delay(planner=0.3, writer=0.3)  # each turn spends ~0.6 s in the LLM: a kill finds turns in the middle
    sent: dict[str, list[str]] = {cid: [] for cid in ids}
    answered: dict[str, list[dict]] = {cid: [] for cid in ids}
    refused: list[str] = []

    def talk(cid: str) -> None:  # one user: turn after turn, until the service is gone
        time.sleep(0.15 * ids.index(cid))  # out of step: at the kill, turns are at different stages
        with client(first) as c:
            for n in range(1, 100):
                sent[cid].append(f"adventure films, turn {n}")
                try:
                    response = post_turn(c, cid, sent[cid][-1])
                except httpx.TransportError:
                    return
                if response.status_code != 200:
                    refused.append(response.text)
                    return
                answered[cid].append(response.json())

    users = [in_thread(partial(talk, cid))[0] for cid in ids]
    deadline = time.time() + 60
    while sum(map(len, answered.values())) < 8 or sum(llm.inflight().values()) < 3:
        assert time.time() < deadline and not refused, refused
        time.sleep(0.02)
    first.kill()  # SIGKILL, with turns held in the LLM and others between it and the database
    for user in users:
        user.join(30)
        assert not user.is_alive()
    assert not refused, refused

    second = serve(url)  # started again on the same database
    lost = 0
    with client(second) as c:
        for cid in ids:
            version, turns, _ = stored(c, cid)
            texts = [t["request"]["text"] for t in turns]
            assert texts == sent[cid][: len(turns)]  # the turns in the order sent, none missing, none twice
            # every answered turn is there; at most one more: stored just before the kill, its answer never sent
            assert len(answered[cid]) <= len(turns) <= len(answered[cid]) + 1
            for got, answer in zip(turns, answered[cid]):
                assert got["reply"]["reply"] == answer["reply"] and got["reply"]["items"] == answer["items"]
            lost += len(sent[cid]) - len(turns)
            after = post_turn(c, cid, "adventure films, after the restart")  # each conversation goes on
            assert after.status_code == 200 and after.json()["version"] == version + 1, after.text
            assert stored(c, cid)[0] == version + 1
    assert lost >= 2  # the turns in the middle of the LLM when the service died: not stored, not half stored


# ---- (b) the LLM server killed during turns ------------------------------------------------------------------------
def test_b_llm_server_killed_mid_turn_fails_those_turns_and_the_service_recovers(serve, llm, tmp_path):
    served = serve(f"sqlite:///{tmp_path / 'recagent.sqlite3'}", "--timeout", "3")
    with client(served) as c:
        first, second = new_conversation(c), new_conversation(c)
        assert post_turn(c, first, "a heist film").status_code == 200
        before = stored(c, first), stored(c, second)

        llm.delay(planner=30)  # both turns wait in the LLM server when it dies
        plain, plain_out = in_thread(partial(post_once, served, first, "something older"))
        stream, stream_out = in_thread(partial(streamed, served, second, "space adventure"))
        llm.wait_inflight("planner", 2)
        started = time.time()
        llm.kill()
        plain.join(30)
        stream.join(30)
        assert time.time() - started < 20  # told at once, not after a timeout

        response = outcome(plain_out)
        assert response.status_code == 503, response.text
        body = response.json()
        assert body["error_kind"] == "LLMError" and body["stored"] is False and body["version"] == 1
        assert body["error"] == f"cannot reach the LLM endpoint {llm.url}/v1: is it running?"
        kind, last = outcome(stream_out)[-1]
        assert kind == "error" and last["error_kind"] == "LLMError" and "LLM endpoint" in last["error"]
        assert (stored(c, first), stored(c, second)) == before  # nothing written

        down = post_turn(c, first, "something older")  # while it is down: the same clear answer, at once
        assert down.status_code == 503 and down.json()["error"] == body["error"]
        assert c.get("/healthz").status_code == 200 and served.proc.poll() is None

        llm.start()  # the same address: the service uses it again, without a restart
        llm.delay(planner=10)  # a server that accepts but does not answer: --timeout
        hung = post_turn(c, first, "something older")
        assert hung.status_code == 503 and "timed out" in hung.json()["error"], hung.text
        llm.delay()
        again = post_turn(c, first, "something older")
        assert again.status_code == 200 and again.json()["version"] == 2, again.text
        assert post_turn(c, second, "space adventure").json()["version"] == 1
        assert stored(c, first)[0] == 2 and stored(c, second)[0] == 1
        assert errors(c, "LLMError") == 4 and served.proc.poll() is None


# ---- (c) a client that goes away in the middle of a streamed turn --------------------------------------------------
@pytest.mark.parametrize("leave_after", ["status", "items"])
def test_c_a_client_gone_mid_stream_leaves_the_turn_whole_or_absent(leave_after, serve, llm, tmp_path):
    served = serve(f"sqlite:///{tmp_path / 'recagent.sqlite3'}")
    with client(served) as c:
        cid = new_conversation(c)
        # held in the planner (before any item is known) or in the writer (items sent, reply not yet)
        llm.delay(planner=2 if leave_after == "status" else 0, writer=2 if leave_after == "items" else 0)
        events = streamed(served, cid, "a film about a heist", until=leave_after)
        assert events[-1][0] == leave_after and all(kind not in ("reply", "error") for kind, _ in events)
        wait_idle(c)  # the server finished the turn after the client left
        version, turns, _ = stored(c, cid)
        assert version in (0, 1)  # whole or absent: this service finishes the turn and stores it
        if turns:
            assert turns[0]["reply"]["error"] is None and turns[0]["reply"]["reply"].startswith("Here are a few")
            if leave_after == "items":
                assert [i["id"] for i in turns[0]["reply"]["items"]] == [i["id"] for i in events[-1][1]]
        llm.delay()
        after = post_turn(c, cid, "something older")  # the conversation is free again (no 409, no 503)
        assert after.status_code == 200 and after.json()["version"] == version + 1, after.text
        assert stored(c, cid)[0] == version + 1


def test_c_a_client_that_gives_up_on_a_plain_turn_leaves_it_whole_or_absent(serve, llm, tmp_path):
    served = serve(f"sqlite:///{tmp_path / 'recagent.sqlite3'}")
    with client(served) as c:
        cid = new_conversation(c)
        llm.delay(writer=2)
        with httpx.Client(base_url=served.url, headers=ANA, timeout=1.0) as impatient:
            with pytest.raises(httpx.ReadTimeout):
                post_turn(impatient, cid, "a film about a heist")
        wait_idle(c)
        version, _, _ = stored(c, cid)
        assert version in (0, 1)
        llm.delay()
        after = post_turn(c, cid, "something older")
        assert after.status_code == 200 and after.json()["version"] == version + 1, after.text


# ---- (d) a full service --------------------------------------------------------------------------------------------
def test_d_a_full_service_answers_503_with_retry_after_at_once(serve, llm, tmp_path):
    served = serve(f"sqlite:///{tmp_path / 'recagent.sqlite3'}", "--max-pending", "2")
    with client(served) as c:
        ids = [new_conversation(c) for _ in range(6)]
        llm.delay(planner=5)
        holders = [in_thread(partial(post_once, served, cid, "a heist film")) for cid in ids[:2]]
        deadline = time.time() + 30
        while metrics(c)[("recagent_turns_in_progress", ())] < 2:  # both places taken
            assert time.time() < deadline, "the two turns never started"
            time.sleep(0.05)

        def timed(cid: str) -> tuple[float, httpx.Response]:
            started = time.time()
            response = post_once(served, cid, "a heist film")
            return time.time() - started, response

        burst = [in_thread(partial(timed, cid)) for cid in ids[2:]]  # four more users at once
        for thread, _ in burst:
            thread.join(30)
        assert all(thread.is_alive() for thread, _ in holders)  # refused while the two turns still run
        for _, out in burst:
            seconds, response = outcome(out)
            assert response.status_code == 503 and seconds < 3, (seconds, response.text)  # at once, not a wait
            assert int(response.headers["Retry-After"]) >= 1
            body = response.json()
            assert body["kind"] == "BusyError" and body["error"].startswith("the service is busy (2 turns in hand)")
        with c.stream("POST", f"/conversations/{ids[2]}/turns", json={"text": "a heist film"}, headers=SSE) as r:
            assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1  # refused before the stream starts
        chat = c.post(
            "/v1/chat/completions",
            json={"model": "recagent-movies", "messages": [{"role": "user", "content": "a heist film"}]},
        )
        assert chat.status_code == 503 and int(chat.headers["Retry-After"]) >= 1, chat.text
        assert len(c.get("/conversations").json()) == 6  # the refused /v1 request left no conversation behind

        for thread, out in holders:
            thread.join(30)
            assert outcome(out).status_code == 200, outcome(out).text
        assert errors(c, "busy") == 6
        for cid in ids[2:]:  # nothing stored for a refused turn; with room again, a turn goes through
            assert stored(c, cid)[0] == 0
        llm.delay()
        assert post_turn(c, ids[2], "a heist film").json()["version"] == 1


# ---- (e) the database briefly unavailable --------------------------------------------------------------------------
def database_unavailable(response: httpx.Response) -> bool:
    """One clear line that says so, without the database's password or URL."""
    body = response.json()
    message = body["error"]
    return (
        body["kind"] == "DatabaseError"
        and message.startswith("the database ")
        and "is unavailable (" in message
        and "\n" not in message
        and PASSWORD not in response.text
        and "postgresql+psycopg" not in response.text
    )


def test_e_the_database_briefly_unavailable_gives_a_clear_error_and_the_next_turn_works(serve, llm, postgres):
    url = postgres.new_database()
    served = serve(url)
    with client(served) as c:
        cid = new_conversation(c)
        assert post_turn(c, cid, "a heist film").status_code == 200
        before = stored(c, cid)
        llm.delay(planner=2)
        mid, out = in_thread(partial(post_once, served, cid, "something older"))
        llm.wait_inflight("planner", 1)
        postgres.stop()  # the turn has read its conversation and is in the LLM: it cannot store its result
        try:
            mid.join(30)
            response = outcome(out)
            assert response.status_code == 503 and database_unavailable(response), response.text
            llm.delay()
            started = time.time()
            for down in (
                post_turn(c, cid, "something older"),
                c.get(f"/conversations/{cid}"),
                c.post("/conversations"),
            ):
                assert down.status_code == 503 and database_unavailable(down), down.text
            assert time.time() - started < 10  # said at once
            assert c.get("/healthz").status_code == 200
            scraped = metrics(c)  # the scrape answers: the errors are counted, the stored count is unknown (NaN)
            # the turn's and the three requests' (each counted once, inside a turn or not)
            assert scraped[("recagent_errors_total", (("kind", "DatabaseError"),))] == 4
            assert math.isnan(scraped[("recagent_conversations_stored", ())])
        finally:
            postgres.start()
        assert stored(c, cid) == before  # nothing half written
        after = post_turn(c, cid, "something older")  # the same service, without a restart
        assert after.status_code == 200 and after.json()["version"] == 2, after.text
        assert stored(c, cid)[0] == 2 and metrics(c)[("recagent_conversations_stored", ())] == 1
