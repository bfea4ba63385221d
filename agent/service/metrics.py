"""What the service counts and times, in Prometheus text at /metrics."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

STAGES = ("total", "items_on_screen", "llm_prompt", "llm_generation", "retrieval", "ranking", "transcription", "image")
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """Turns, errors by kind, latency per stage, queue wait and depth, turns in progress, conversations stored."""

    def __init__(
        self, queue_depth: Callable[[], float], in_progress: Callable[[], float], conversations: Callable[[], float]
    ):
        self.registry = CollectorRegistry()
        self.turns = Counter(
            "recagent_turns",
            "Turns answered, by catalog and outcome (ok, clarifying, error)",
            ["catalog", "outcome"],
            registry=self.registry,
        )
        self.errors = Counter(
            "recagent_errors",
            "Errors by kind (the error class, or busy for a full queue)",
            ["kind"],
            registry=self.registry,
        )
        self.stage = Histogram(
            "recagent_turn_stage_seconds",
            "Seconds per stage of a turn",
            ["stage"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "recagent_llm_queue_wait_seconds",
            "Seconds an LLM call waited for its turn",
            buckets=BUCKETS,
            registry=self.registry,
        )
        Gauge("recagent_llm_queue_depth", "LLM calls waiting", registry=self.registry).set_function(queue_depth)
        Gauge("recagent_turns_in_progress", "Turns admitted and not finished", registry=self.registry).set_function(
            in_progress
        )
        Gauge("recagent_conversations_stored", "Conversations in the database", registry=self.registry).set_function(
            conversations
        )

    def turn(self, catalog: str, outcome: str, timings: dict[str, float]) -> None:
        """Count one finished turn and its stage timings."""
        self.turns.labels(catalog, outcome).inc()
        for name, seconds in timings.items():
            if name in STAGES:
                self.stage.labels(name).observe(seconds)

    def error(self, kind: str) -> None:
        self.errors.labels(kind).inc()

    def text(self) -> bytes:
        """The Prometheus exposition text."""
        return generate_latest(self.registry)
