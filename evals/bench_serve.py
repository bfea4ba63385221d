"""`recagent bench serve`: the service under load, on loopback only.

Simulated users replay the evaluation dialogues (evals/dialogues/*.yaml: their typed `say:` turns, image turns sent
as multipart uploads, `speak:` turns left out) against a `recagent serve` that the benchmark starts itself (or a
running one, `--url`). Each user is a closed loop: one conversation per dialogue, one turn at a time, streamed
(SSE), the next turn as soon as the reply is in (a 503 waits its Retry-After and tries again). For each number of
simultaneous users it measures turns per minute, the time until the `items` event and until the `reply` event
(p50/p95), the LLM queue wait (the delta of `recagent_llm_queue_wait_seconds` on /metrics), errors by kind, and, at
the end, whether every completed turn is stored: each conversation is read back and its turns compared with the
turns that got a `reply` (lost, half-stored, and stored without a reply seen).

The service's overhead per turn is measured two ways with the scripted LLM (so that no model dominates): each
turn's wall time at the client minus the agent's own time for that turn (`timings.total`, reported by the server),
and the same turns run in process with `Agent.turn`.

Why an asyncio client (httpx) and not locust: the measures wanted are per turn and per SSE event (items on screen is
the `items` event inside one streamed response), the storage check needs the client's own record of every turn, and
the whole run is one process without a web UI, gevent or a master/worker setup; locust measures whole requests.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from recagent.agent.conversation import Conversation
from recagent.agent.llm import ScriptedLLM
from recagent.agent.loop import Agent
from recagent.tools.errors import ConfigError
from recagent.tools.models import resolve_model
from recagent.tools.settings import Settings

from .common import percentile
from .dialogue_scripts import Script, load_scripts, resolve_path
from .loopback import free_port, start_server, stop_server

# What the scripted LLM answers, every time: the planner cannot read a tool call in it, asks once more, then searches
# the user's own words (planner.plan_tool_call's fallback); the reply writer takes it as its sentence. So any order
# of calls from any number of conversations gives the same turns: 3 LLM calls each, no model time.
SCRIPTED_ANSWER = "Here are a few picks from the catalog."
SCRIPTED_CALLS_PER_TURN = 3
BUCKET_FIRST = 0.05  # the first bucket of the service's latency histograms (agent/service/metrics.py)


@dataclass
class BenchTurn:
    """One turn a simulated user sends: its words and, optionally, a photo or a recording to upload."""

    text: str
    image: Path | None = None
    audio: Path | None = None


@dataclass
class BenchDialogue:
    name: str
    turns: list[BenchTurn]


@dataclass
class ServeBenchConfig:
    """What `recagent bench serve` runs: the service's setup (when it starts one) and the load."""

    label: str = ""
    url: str | None = None  # a running service; None: start `recagent serve` on a free loopback port
    api_key: str | None = None
    catalog: str = "movies"
    llm_kind: str = "local"
    model: str | None = None
    base_url: str | None = None
    timeout: float = 120.0
    llm_parallel: int | None = None
    llama_server: str | None = None  # a llama.cpp `llama-server` binary: started with --parallel SLOTS
    slots: int = 2
    ctx_per_slot: int = 4096
    llm_threads: int | None = None
    max_pending: int = 16
    users: tuple[int, ...] = (1, 2, 4, 8)
    turns_per_user: int = 4
    min_turns: int = 12
    duration: float = 600.0  # seconds per level: no new turn starts after it
    turn_timeout: float = 300.0
    think: float = 0.0  # seconds a user waits between turns
    dialogues: str | None = None
    uploads: bool = True
    overhead_turns: int = 30
    server_log: str | None = None


# ---- dialogues ----------------------------------------------------------------------------------------------------


def bench_dialogues(
    settings: Settings, catalog: str, path: str | None = None, uploads: bool = True
) -> list[BenchDialogue]:
    """The dialogues of one catalog as users replay them: typed turns, and photo or recording turns as uploads (left
    out with uploads=False, as are `speak:` turns, which need a speech synthesiser). Multi-turn dialogues first."""
    out = []
    for script in load_scripts(path):
        if script.catalog != catalog:
            continue
        turns = [t for t in (_bench_turn(script, n, settings, uploads) for n in range(len(script.turns))) if t]
        if turns:
            out.append(BenchDialogue(script.name, turns))
    if not out:
        raise ConfigError(f"no dialogue for catalog {catalog!r} has a turn the benchmark can send")
    return sorted(out, key=lambda d: (-len(d.turns), d.name))


def _bench_turn(script: Script, n: int, settings: Settings, uploads: bool) -> BenchTurn | None:
    turn = script.turns[n]
    if turn.speak or ((turn.image or turn.audio) and not uploads):
        return None
    found = {k: resolve_path(v, script, settings) for k, v in (("image", turn.image), ("audio", turn.audio)) if v}
    if any(not p.is_file() for p in found.values()):
        return None
    return BenchTurn(turn.say, found.get("image"), found.get("audio"))


# ---- one simulated user -------------------------------------------------------------------------------------------


@dataclass
class ClientTurn:
    """What the client saw of one turn."""

    user: int
    conversation: str
    text: str
    started: float
    status: int = 0
    outcome: str = "pending"  # reply | error | busy | client
    kind: str | None = None
    items_s: float | None = None
    whole_s: float | None = None
    server_total_s: float | None = None
    timings: dict = field(default_factory=dict)  # the agent's own, per stage (from the reply)
    busy_retries: int = 0  # 503s before this answer (the times above then count from the first try)
    tools: list[str] = field(default_factory=list)
    stored: bool = False


@dataclass
class Level:
    """One run at a fixed number of simultaneous users: the turns and when the level started and ended."""

    users: int
    turns: list[ClientTurn] = field(default_factory=list)
    conversations: dict[str, list[ClientTurn]] = field(default_factory=dict)
    started: float = 0.0
    ended: float = 0.0


class Tickets:
    """The level's turn budget and deadline, shared by its users."""

    def __init__(self, turns: int, duration: float):
        self.left = turns
        self.deadline = time.perf_counter() + duration

    def take(self) -> bool:
        if self.left <= 0 or time.perf_counter() >= self.deadline:
            return False
        self.left -= 1
        return True


async def post_turn(client: httpx.AsyncClient, conversation: str, turn: BenchTurn, record: ClientTurn) -> float:
    """Post one turn with `Accept: text/event-stream` and fill `record` from its events; returns the Retry-After of a
    503 (0 otherwise)."""
    started = time.perf_counter()
    record.started = time.time()
    kwargs: dict[str, Any] = {"headers": {"Accept": "text/event-stream"}}
    if turn.image or turn.audio:
        files = {k: (p.name, p.read_bytes()) for k, p in (("image", turn.image), ("audio", turn.audio)) if p}
        kwargs.update(data={"text": turn.text}, files=files)
    else:
        kwargs["json"] = {"text": turn.text}
    try:
        async with client.stream("POST", f"/conversations/{conversation}/turns", **kwargs) as response:
            record.status = response.status_code
            if response.status_code != 200:
                body = _json((await response.aread()).decode("utf-8", "replace"))
                record.kind = str(body.get("kind") or "HTTPError")
                record.outcome = "busy" if response.status_code == 503 and record.kind == "BusyError" else "error"
                retry = response.headers.get("retry-after", "1")
                return float(retry) if record.outcome == "busy" and retry.isdigit() else 0.0
            async for kind, value in sse_events(response):
                now = time.perf_counter() - started
                if kind == "items" and record.items_s is None:
                    record.items_s = now
                elif kind in ("reply", "error"):
                    record.whole_s = now
                    record.outcome = kind
                    timings = value.get("timings") or {}
                    record.server_total_s = timings.get("total")
                    record.timings = timings
                    record.tools = [c.get("name", "") for c in value.get("tool_calls") or []]
                    record.stored = bool(value.get("stored"))
                    if kind == "error":
                        record.kind = str(value.get("error_kind") or value.get("kind") or "error")
                    return 0.0
            record.outcome, record.kind = "error", "StreamEnded"  # the stream closed without a final event
    except httpx.HTTPError as exc:
        record.outcome, record.kind = "client", exc.__class__.__name__
    return 0.0


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, dict]]:
    """The (event, JSON data) pairs of a server-sent event stream."""
    kind, data = "message", list[str]()
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield kind, _json("\n".join(data))
            kind, data = "message", []
        elif line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


def _json(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


async def simulated_user(
    client: httpx.AsyncClient,
    user: int,
    dialogues: Iterator[BenchDialogue],
    tickets: Tickets,
    level: Level,
    config: ServeBenchConfig,
) -> None:
    """One user: a conversation per dialogue, its turns in order, until the level's turns or time run out."""
    while True:
        dialogue = next(dialogues)
        try:
            created = await client.post("/conversations", json={"catalog": config.catalog})
            created.raise_for_status()
            conversation = created.json()["id"]
        except httpx.HTTPError as exc:  # the service is gone or broken: this user stops, and says why
            status = exc.response.status_code if isinstance(exc, httpx.HTTPStatusError) else 0
            level.turns.append(
                ClientTurn(user, "", "(new conversation)", time.time(), status, "client", exc.__class__.__name__)
            )
            return
        level.conversations[conversation] = []
        for turn in dialogue.turns:
            if not tickets.take():
                return
            first, retries = time.perf_counter(), 0
            while True:  # a 503 (the service is full) is deliberate: wait as told and send the turn again
                record = ClientTurn(user, conversation, turn.text, time.time())
                sent = time.perf_counter()
                retry = await post_turn(client, conversation, turn, record)
                level.turns.append(record)
                if record.outcome != "busy" or time.perf_counter() >= tickets.deadline:
                    break
                retries += 1
                await asyncio.sleep(min(retry, 30))
            if retries:  # the user waited through the 503s too: the turn's times count from the first try
                record.busy_retries = retries
                record.whole_s = None if record.whole_s is None else record.whole_s + sent - first
                record.items_s = None if record.items_s is None else record.items_s + sent - first
            level.conversations[conversation].append(record)  # a failed turn changes nothing: the dialogue goes on
            if config.think:
                await asyncio.sleep(config.think)


def dialogue_cycle(dialogues: list[BenchDialogue], offset: int) -> Iterator[BenchDialogue]:
    """The dialogues in order, from `offset` on, round and round."""
    return itertools.islice(itertools.cycle(dialogues), offset % len(dialogues), None)


# ---- what the server says: metrics, stored conversations ---------------------------------------------------------


def scrape(client: httpx.Client) -> dict:
    """The counters of /metrics the benchmark uses: queue-wait histogram, errors by kind, turns by outcome."""
    text = client.get("/metrics").text
    out: dict = {"queue_wait_buckets": {}, "queue_wait_sum": 0.0, "queue_wait_count": 0.0, "errors": {}, "turns": {}}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "recagent_llm_queue_wait_seconds_bucket":
                out["queue_wait_buckets"][float(sample.labels["le"])] = sample.value
            elif sample.name == "recagent_llm_queue_wait_seconds_sum":
                out["queue_wait_sum"] = sample.value
            elif sample.name == "recagent_llm_queue_wait_seconds_count":
                out["queue_wait_count"] = sample.value
            elif sample.name == "recagent_errors_total":
                out["errors"][sample.labels["kind"]] = sample.value
            elif sample.name == "recagent_turns_total":
                key = f"{sample.labels['outcome']}"
                out["turns"][key] = out["turns"].get(key, 0) + sample.value
    return out


def queue_wait(before: dict, after: dict) -> dict:
    """The LLM calls of a level and how long they waited: count, mean, p50 and p95 (interpolated in the histogram's
    buckets), and the sum per completed call."""
    count = after["queue_wait_count"] - before["queue_wait_count"]
    total = after["queue_wait_sum"] - before["queue_wait_sum"]
    buckets = sorted(
        (le, after["queue_wait_buckets"][le] - before["queue_wait_buckets"].get(le, 0.0))
        for le in after["queue_wait_buckets"]
    )
    return {
        "calls": int(count),
        "mean_s": round(total / count, 3) if count else None,
        "p50_s": _bucket_quantile(buckets, 0.5),
        "p95_s": _bucket_quantile(buckets, 0.95),
        "sum_s": round(total, 3),
    }


def _bucket_quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """A quantile from cumulative histogram buckets (le, count), linear within a bucket (as Prometheus does)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank, lower, below = q * buckets[-1][1], 0.0, 0.0
    for le, cumulative in buckets:
        if cumulative >= rank:
            if math.isinf(le):
                return round(lower, 3)
            share = (rank - below) / (cumulative - below) if cumulative > below else 0.0
            return round(lower + (le - lower) * share, 3)
        lower, below = le, cumulative
    return round(lower, 3)


def check_storage(client: httpx.Client, level: Level) -> dict:
    """Read every conversation of the level back: its stored turns must be exactly the turns that got a `reply`
    (in order), and its state must agree with them (a user message per turn, the version counting the turns)."""
    replied = lost = half = unseen = stored_turns = 0
    problems: list[str] = []
    for conversation, records in level.conversations.items():
        got = [r.text for r in records if r.outcome == "reply"]
        replied += len(got)
        response = client.get(f"/conversations/{conversation}")
        if response.status_code != 200:
            lost += len(got)
            problems.append(f"{conversation}: HTTP {response.status_code}")
            continue
        body = response.json()
        stored = [(t.get("request") or {}).get("text", "") for t in body.get("turns") or []]
        stored_turns += len(stored)
        missing = Counter(got) - Counter(stored)
        extra = Counter(stored) - Counter(got)
        lost += sum(missing.values())
        unseen += sum(extra.values())
        users = [m for m in (body.get("state") or {}).get("messages", []) if m.get("role") == "user"]
        whole = all(t.get("reply") for t in body.get("turns") or [])
        if len(users) != len(stored) or body.get("version") != len(stored) or not whole:
            half += 1
            problems.append(
                f"{conversation}: {len(stored)} turns stored, {len(users)} user messages, version {body.get('version')}"
            )
        elif not missing and not extra and stored != got:
            problems.append(f"{conversation}: turns stored in another order")
    return {
        "conversations": len(level.conversations),
        "replied": replied,
        "stored": stored_turns,
        "lost": lost,
        "half_stored": half,
        "stored_without_reply_seen": unseen,
        "all_stored": lost == 0 and half == 0,
        "problems": problems[:20],
    }


# ---- the machine's load -------------------------------------------------------------------------------------------


class LoadMeter:
    """The 1-minute load average (sampled) and how many cores other processes than the benchmark's own (this one,
    the service, the LLM server) kept busy, from /proc (Linux)."""

    def __init__(self, pids: list[int]):
        self.pids = pids
        self.samples: list[float] = []
        self.rss_mb: dict[int, int] = {}  # the servers' largest resident memory seen
        self._start = self._read()

    @staticmethod
    def _busy() -> float | None:
        try:
            fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except OSError:
            return None
        return sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0.0)  # all but idle and iowait

    def _mine(self) -> float:
        total = 0.0
        for pid in self.pids:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            total += float(fields[11]) + float(fields[12])  # utime, stime (every thread of the process)
        return total

    def _read(self) -> tuple[float, float | None, float]:
        return time.perf_counter(), self._busy(), self._mine()

    def sample(self) -> None:
        self.samples.append(round(os.getloadavg()[0], 2))
        for pid in self.pids[1:]:
            self.rss_mb[pid] = max(self.rss_mb.get(pid, 0), _rss_mb(pid))

    def result(self) -> dict:
        end = self._read()
        out: dict = {
            "load1_start": self.samples[0] if self.samples else None,
            "load1_max": max(self.samples) if self.samples else None,
            "load1_end": round(os.getloadavg()[0], 2),
            "servers_rss_max_mb": sum(self.rss_mb.values()),
        }
        elapsed = end[0] - self._start[0]
        if end[1] is not None and self._start[1] is not None and elapsed > 0:
            hz = os.sysconf("SC_CLK_TCK")
            busy = (end[1] - self._start[1]) / hz / elapsed
            mine = (end[2] - self._start[2]) / hz / elapsed
            out.update(
                cores_busy=round(busy, 2), cores_ours=round(mine, 2), cores_others=round(max(0.0, busy - mine), 2)
            )
        return out


def _rss_mb(pid: int) -> int:
    """A process's resident memory in MB (0 when it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(found.group(1)) // 1024 if found else 0


async def sample_load(meter: LoadMeter, stop: asyncio.Event) -> None:
    while not stop.is_set():
        meter.sample()
        with _suppress_timeout():
            await asyncio.wait_for(stop.wait(), 5)


@contextmanager
def _suppress_timeout() -> Iterator[None]:
    try:
        yield
    except asyncio.TimeoutError:
        pass


# ---- one level ----------------------------------------------------------------------------------------------------


def level_turns(config: ServeBenchConfig, users: int) -> int:
    return max(config.turns_per_user * users, config.min_turns)


async def run_level(
    url: str, headers: dict, users: int, dialogues: list[BenchDialogue], config: ServeBenchConfig
) -> Level:
    level = Level(users)
    tickets = Tickets(level_turns(config, users), config.duration)
    timeout = httpx.Timeout(config.turn_timeout, connect=10)
    limits = httpx.Limits(max_connections=users + 4, max_keepalive_connections=users + 4)
    step = max(1, len(dialogues) // users)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout, limits=limits) as client:
        level.started = time.perf_counter()
        await asyncio.gather(
            *(
                simulated_user(client, u, dialogue_cycle(dialogues, u * step), tickets, level, config)
                for u in range(users)
            )
        )
        level.ended = time.perf_counter()
    return level


def summarise(level: Level, wait: dict, storage: dict, load: dict, server_errors: dict) -> dict:
    """A level's figures: throughput, latency percentiles, queue wait, errors by kind, storage, load."""
    done = [t for t in level.turns if t.outcome in ("reply", "error", "client")]
    replied = [t for t in done if t.outcome == "reply"]
    wall = level.ended - level.started
    errors = Counter(f"{t.status or '-'} {t.kind}" for t in level.turns if t.outcome != "reply")
    busy = sum(n for k, n in errors.items() if k == "503 BusyError")
    items = [t.items_s for t in replied if t.items_s is not None]
    whole = [t.whole_s for t in replied if t.whole_s is not None]
    overhead = [
        1000 * (t.whole_s - t.server_total_s)
        for t in replied
        if t.whole_s is not None and t.server_total_s is not None and not t.busy_retries
    ]
    return {
        "users": level.users,
        "turns_sent": len(done),
        "turns_replied": len(replied),
        "wall_s": round(wall, 2),
        "turns_per_min": round(60 * len(replied) / wall, 2) if wall > 0 else None,
        "items_on_screen_s": {"p50": percentile(items, 50, 2), "p95": percentile(items, 95, 2), "n": len(items)},
        "whole_turn_s": {"p50": percentile(whole, 50, 2), "p95": percentile(whole, 95, 2), "n": len(whole)},
        "service_overhead_ms": {"p50": percentile(overhead, 50, 1), "p95": percentile(overhead, 95, 1)},
        "queue_wait": wait,
        "errors": dict(sorted(errors.items())),
        "errors_other_than_503": sum(errors.values()) - busy,
        "busy_503": busy,
        "server_errors": server_errors,
        "storage": storage,
        "load": load,
        "turns": [_turn_row(t) for t in level.turns],
    }


def _turn_row(turn: ClientTurn) -> dict:
    """One turn as the JSON keeps it: who, what, when (epoch seconds), the outcome, the agent's stage timings."""
    row = {
        k: round(v, 3) if isinstance(v, float) and k != "started" else v
        for k, v in asdict(turn).items()
        if k not in ("conversation", "timings")
    }
    row.update(
        {k: turn.timings[k] for k in ("llm_prompt", "llm_generation", "retrieval", "ranking") if k in turn.timings}
    )
    return row


# ---- servers --------------------------------------------------------------------------------------------------------


def recagent_command() -> list[str]:
    """The installed `recagent` command beside this Python (as users run it), else this Python running it."""
    found = shutil.which("recagent", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-c", "from recagent.agent.cli import main; main()"]


def start_service(
    settings: Settings, config: ServeBenchConfig, llm: dict, db_url: str, log: IO[Any]
) -> tuple[subprocess.Popen, str]:
    """`recagent serve` on a free loopback port with this setup; (the process, its URL) once /readyz says ready."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = recagent_command() + ["--home", str(settings.home)]
    if settings.data:
        cmd += ["--data", str(settings.data)]
    if settings.chroma_url:
        cmd += ["--chroma-url", settings.chroma_url]
    cmd += ["serve", "--port", str(port), "--catalog", config.catalog, "--llm", llm["kind"], "--db", db_url]
    cmd += ["--max-pending", str(config.max_pending), "--timeout", str(config.timeout)]
    for option in ("model", "base_url", "llm_parallel"):
        if llm.get(option) is not None:
            cmd += [f"--{option.replace('_', '-')}", str(llm[option])]

    def ready() -> None:
        with urllib.request.urlopen(url + "/readyz", timeout=2) as response:
            json.loads(response.read())

    return start_server(cmd, ready, 600, log, "recagent serve"), url


def start_llama_cpp_server(
    binary: str, model_path: str, slots: int, ctx_per_slot: int, threads: int | None, log: IO[Any]
) -> tuple[subprocess.Popen, str]:
    """llama.cpp's `llama-server` with `slots` parallel slots (continuous batching; the context is split between
    the slots) on a free loopback port; (the process, its /v1 URL) once it has loaded the model."""
    port = free_port()
    cmd = [binary, "-m", model_path, "--host", "127.0.0.1", "--port", str(port), "--parallel", str(slots)]
    cmd += ["-c", str(slots * ctx_per_slot), "--cont-batching", "-t", str(threads or os.cpu_count() or 1), "--no-webui"]

    def ready() -> None:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()

    return start_server(cmd, ready, 300, log, "llama-server"), f"http://127.0.0.1:{port}/v1"


def scripted_answers(path: Path, turns: int) -> str:
    """A --llm scripted answer file long enough for `turns` turns (any order of calls; see SCRIPTED_ANSWER)."""
    path.write_text(json.dumps([SCRIPTED_ANSWER] * (SCRIPTED_CALLS_PER_TURN * turns + 64)))
    return str(path)


# ---- the service's overhead ----------------------------------------------------------------------------------------


def overhead_texts(dialogues: list[BenchDialogue], n: int) -> list[list[str]]:
    """Dialogues of typed turns only, n turns in all (repeated if needed)."""
    typed = [[t.text for t in d.turns if not (t.image or t.audio) and t.text] for d in dialogues]
    typed = [d for d in typed if d]
    out, count = [], 0
    for dialogue in itertools.cycle(typed):
        if count >= n:
            break
        out.append(dialogue[: n - count])
        count += len(out[-1])
    return out


async def _http_overhead(url: str, conversations: list[list[str]], warm: int) -> list[ClientTurn]:
    records: list[ClientTurn] = []
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(120, connect=10)) as client:
        for texts in conversations:
            created = await client.post("/conversations", json={})
            created.raise_for_status()
            cid = created.json()["id"]
            for text in texts:
                record = ClientTurn(0, cid, text, time.time())
                await post_turn(client, cid, BenchTurn(text), record)
                records.append(record)
    return records[warm:]


def measure_overhead(
    settings: Settings, config: ServeBenchConfig, dialogues: list[BenchDialogue], tmp: Path, log: IO[Any]
) -> dict:
    """The same typed turns through `recagent serve --llm scripted` (streamed, one user) and in process
    (`Agent.turn` with the same scripted answers): what the service adds per turn. The turns run once in process
    first, unmeasured, so that both measured runs find the words' embeddings in the shared embedding cache."""
    warm = 3
    conversations = overhead_texts(dialogues, config.overhead_turns + warm)
    n = sum(len(c) for c in conversations)
    agent = Agent(ScriptedLLM([SCRIPTED_ANSWER] * (2 * SCRIPTED_CALLS_PER_TURN * n + 64)), config.catalog, settings)
    agent.warm_up(llm=False)
    in_process_turns(agent, conversations)
    answers = scripted_answers(tmp / "overhead-answers.json", n)
    proc, url = start_service(settings, config, {"kind": "scripted", "model": answers}, f"sqlite:///{tmp}/o.db", log)
    try:
        http = asyncio.run(_http_overhead(url, conversations, warm))
    finally:
        stop_server(proc)
    in_process = [1000 * s for s in in_process_turns(agent, conversations)[warm:]]
    ok = [r for r in http if r.outcome == "reply" and r.whole_s is not None]
    wall = [1000 * r.whole_s for r in ok if r.whole_s is not None]
    paired = [1000 * (r.whole_s - r.server_total_s) for r in ok if r.whole_s and r.server_total_s is not None]
    p50_http, p50_local = percentile(wall, 50, 1), percentile(in_process, 50, 1)
    return {
        "turns": len(ok),
        "failed": len(http) - len(ok),
        "http_turn_ms": {"p50": p50_http, "p95": percentile(wall, 95, 1)},
        "in_process_turn_ms": {"p50": p50_local, "p95": percentile(in_process, 95, 1)},
        "overhead_paired_ms": {"p50": percentile(paired, 50, 1), "p95": percentile(paired, 95, 1)},
        "overhead_p50_difference_ms": round(p50_http - p50_local, 1) if p50_http and p50_local else None,
    }


def in_process_turns(agent: Agent, conversations: list[list[str]]) -> list[float]:
    """Each conversation's turns with `Agent.turn`, a fresh conversation each; the seconds of every turn."""
    seconds = []
    for texts in conversations:
        conversation = Conversation(catalog=agent.catalog_name)
        for text in texts:
            started = time.perf_counter()
            agent.turn(conversation, text)
            seconds.append(time.perf_counter() - started)
    return seconds


# ---- the whole benchmark -------------------------------------------------------------------------------------------


def run_serve_benchmark(settings: Settings, config: ServeBenchConfig) -> dict:
    """Every level of users against one service (started here, or config.url), the storage check, the overhead
    with the scripted LLM; prints the table and returns the figures."""
    dialogues = bench_dialogues(settings, config.catalog, config.dialogues, config.uploads)
    results: dict = {"setup": _setup(config), "dialogues": [d.name for d in dialogues], "levels": []}
    headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    with ExitStack() as outer:
        tmp = Path(outer.enter_context(tempfile.TemporaryDirectory(prefix="recagent-bench-serve-")))
        log = outer.enter_context(open(config.server_log or tmp / "servers.log", "a", encoding="utf-8"))
        with ExitStack() as servers:  # the servers of the load test stop before the overhead is measured
            url, pids = config.url, [os.getpid()]
            if url is None:
                url, pids = _start_setup(settings, config, tmp, log, servers, results["setup"])
            results["setup"]["url"] = url
            with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
                for users in config.users:
                    try:
                        results["levels"].append(_run_level(client, url, headers, users, dialogues, config, pids))
                    except httpx.HTTPError as exc:  # /metrics or a stored conversation could not be read
                        results["aborted"] = _aborted(users, exc, pids)
                        print(results["aborted"], file=sys.stderr, flush=True)
                        break
                    print(_progress(results["levels"][-1]), file=sys.stderr, flush=True)
        if config.overhead_turns and config.url is None:
            results["overhead"] = measure_overhead(settings, config, dialogues, tmp, log)
    results["acceptance"] = acceptance(results)
    print(format_table([results]))
    if "overhead" in results:
        print(format_overhead(results["overhead"]))
    if "aborted" in results:
        print(results["aborted"])
    return results


def _aborted(users: int, exc: Exception, pids: list[int]) -> str:
    """Why the run stopped: the service stopped answering (and whether its process is gone, e.g. killed for memory)."""
    gone = [pid for pid in pids[1:] if not _running(pid)]
    return f"stopped during the {users}-user level: the service did not answer ({exc.__class__.__name__}: {exc})" + (
        f"; process(es) {', '.join(map(str, gone))} no longer running (see the server log, and dmesg)" if gone else ""
    )


def _running(pid: int) -> bool:
    """Whether a process runs (a child that ended stays as a zombie until it is waited for)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _start_setup(
    settings: Settings, config: ServeBenchConfig, tmp: Path, log: IO[Any], servers: ExitStack, setup: dict
) -> tuple[str, list[int]]:
    """Start the LLM server (with --llama-server) and `recagent serve` for this setup; (the URL, the pids)."""
    pids = [os.getpid()]
    llm: dict[str, Any] = {"kind": config.llm_kind, "model": config.model, "base_url": config.base_url}
    llm["llm_parallel"] = config.llm_parallel
    if config.llama_server:
        model = resolve_model(config.model or "llm", settings)
        llama, llm["base_url"] = start_llama_cpp_server(
            config.llama_server, model, config.slots, config.ctx_per_slot, config.llm_threads, log
        )
        servers.callback(stop_server, llama)
        pids.append(llama.pid)
        llm.update(kind="openai", model="qwen", llm_parallel=config.llm_parallel or config.slots)
        setup["llama_server_model"] = model
    elif config.llm_kind == "scripted" and not config.model:
        llm["model"] = scripted_answers(tmp / "answers.json", 2 * sum(level_turns(config, u) for u in config.users))
    service, url = start_service(settings, config, llm, f"sqlite:///{tmp}/bench.db", log)
    servers.callback(stop_server, service)
    pids.append(service.pid)
    setup["service"] = {k: v for k, v in llm.items() if not (k == "model" and config.llm_kind == "scripted")}
    return url, pids


def _run_level(
    client: httpx.Client,
    url: str,
    headers: dict,
    users: int,
    dialogues: list[BenchDialogue],
    config: ServeBenchConfig,
    pids: list[int],
) -> dict:
    """One level: the users' turns, then the metrics' deltas and the storage check."""
    before = scrape(client)
    meter = LoadMeter(pids)
    level = asyncio.run(_measured(url, headers, users, dialogues, config, meter))
    load = meter.result()
    after = scrape(client)
    server_errors = {
        k: int(v - before["errors"].get(k, 0)) for k, v in after["errors"].items() if v - before["errors"].get(k, 0)
    }
    return summarise(level, queue_wait(before, after), check_storage(client, level), load, server_errors)


async def _measured(
    url: str, headers: dict, users: int, dialogues: list[BenchDialogue], config: ServeBenchConfig, meter: LoadMeter
) -> Level:
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_load(meter, stop))
    try:
        return await run_level(url, headers, users, dialogues, config)
    finally:
        stop.set()
        await sampler


def _setup(config: ServeBenchConfig) -> dict:
    setup = {k: v for k, v in asdict(config).items() if k not in ("api_key", "server_log")}
    setup["label"] = config.label or _default_label(config)
    setup["machine"] = {"cpus": os.cpu_count(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    return setup


def _default_label(config: ServeBenchConfig) -> str:
    if config.url:
        return f"service at {config.url}"
    if config.llama_server:
        return f"llama-server, {config.slots} slots"
    return {"local": "in-process local LLM", "scripted": "scripted LLM"}.get(config.llm_kind, f"{config.llm_kind} LLM")


def _progress(level: dict) -> str:
    whole = level["whole_turn_s"]
    return (
        f"  {level['users']} users: {level['turns_replied']}/{level['turns_sent']} turns in {level['wall_s']} s, "
        f"{level['turns_per_min']} turns/min, whole turn p50 {whole['p50']} s p95 {whole['p95']} s, "
        f"errors {level['errors'] or 0}, lost {level['storage']['lost']}, half {level['storage']['half_stored']}"
    )


def acceptance(results: dict) -> dict:
    """Issue 12's load targets for this setup: with 4 users, no errors other than 503s, nothing lost or
    half-stored, throughput at least 1 user's, whole-turn p95 <= 4x the 1-user p50; the service adds <= 50 ms."""
    by_users = {level["users"]: level for level in results["levels"]}
    out: dict = {}
    one, four = by_users.get(1), by_users.get(4)
    if four:
        out["four_users_no_errors"] = four["errors_other_than_503"] == 0
        out["four_users_all_stored"] = four["storage"]["all_stored"]
    if one and four and one["turns_per_min"] and four["turns_per_min"]:
        out["throughput_4_over_1"] = round(four["turns_per_min"] / one["turns_per_min"], 2)
        out["throughput_at_least_1_user"] = four["turns_per_min"] >= one["turns_per_min"]
    if one and four and one["whole_turn_s"]["p50"] and four["whole_turn_s"]["p95"]:
        out["p95_4_over_p50_1"] = round(four["whole_turn_s"]["p95"] / one["whole_turn_s"]["p50"], 2)
        out["p95_within_4x"] = out["p95_4_over_p50_1"] <= 4
    overhead = results.get("overhead")
    if overhead and overhead["overhead_paired_ms"]["p50"] is not None:
        out["overhead_ms"] = overhead["overhead_paired_ms"]["p50"]
        out["overhead_within_50ms"] = overhead["overhead_paired_ms"]["p50"] <= 50
    return out


def format_table(setups: list[dict]) -> str:
    """One Markdown row per setup and number of users."""
    lines = [
        "| setup | users | turns | turns/min | items on screen p50 / p95 s | whole turn p50 / p95 s | "
        "LLM queue wait mean / p95 s | service overhead p50 ms | errors (not 503) | 503s | "
        "stored: replied / stored / lost / half | load (1-min max; others' cores) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for setup in setups:
        for lv in setup["levels"]:
            items, whole, wait, st, load = (
                lv["items_on_screen_s"],
                lv["whole_turn_s"],
                lv["queue_wait"],
                lv["storage"],
                lv["load"],
            )
            lines.append(
                f"| {setup['setup']['label']} | {lv['users']} | {lv['turns_replied']}/{lv['turns_sent']} | "
                f"{lv['turns_per_min']} | {items['p50']} / {items['p95']} | {whole['p50']} / {whole['p95']} | "
                f"{wait['mean_s']} / {_wait_cell(wait['p95_s'])} | {lv['service_overhead_ms']['p50']} | "
                f"{lv['errors_other_than_503']} | {lv['busy_503']} | "
                f"{st['replied']} / {st['stored']} / {st['lost']} / {st['half_stored']} | "
                f"{load.get('load1_max')}; {load.get('cores_others', '-')} |"
            )
    return "\n".join(lines)


def _wait_cell(seconds: float | None) -> str:
    """A queue-wait quantile; one inside the histogram's first bucket is only known to be under it."""
    return "-" if seconds is None else ("< 0.05" if seconds <= BUCKET_FIRST else str(seconds))


def format_overhead(overhead: dict) -> str:
    """The overhead measurement in one line."""
    return (
        f"service overhead, scripted LLM, {overhead['turns']} turns: streamed HTTP turn p50 "
        f"{overhead['http_turn_ms']['p50']} ms, the same turns in process {overhead['in_process_turn_ms']['p50']} ms; "
        f"per turn, client wall minus the agent's own time: p50 {overhead['overhead_paired_ms']['p50']} ms, "
        f"p95 {overhead['overhead_paired_ms']['p95']} ms"
    )


def merge_results(path: Path, results: dict) -> dict:
    """The JSON file's setups with this one added, or put in place of the one with the same label."""
    data: dict = {"setups": []}
    if path.is_file():
        loaded = _json(path.read_text(encoding="utf-8"))
        if isinstance(loaded.get("setups"), list):
            data = loaded
    label = results["setup"]["label"]
    data["setups"] = [s for s in data["setups"] if s.get("setup", {}).get("label") != label] + [results]
    return data
