"""How a `recagent serve` process is set up: catalogs, LLM backend, keys, limits."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field

from recagent.tools.errors import ConfigError
from recagent.tools.settings import Settings

LOCAL_USER = "local"  # the one user of a service on loopback without keys


@dataclass(frozen=True)
class ServiceConfig:
    """Everything `recagent serve` is started with (the Settings hold stores, data, models and the database)."""

    settings: Settings
    catalogs: tuple[str, ...] = ("movies",)
    llm_kind: str = "local"
    model: str | None = None
    base_url: str | None = None
    timeout: float = 120.0
    llm_parallel: int = 1  # LLM calls at once: 1 for the in-process model; a server's slots for --llm openai
    host: str = "127.0.0.1"
    api_keys: dict[str, str] = field(default_factory=dict)  # key -> user name
    max_pending: int = 16  # turns admitted at once (waiting or running); more get 503 with Retry-After
    max_upload_bytes: int = 20 * 1024 * 1024
    cors_origins: tuple[str, ...] = ()
    warm_up: bool = True  # evaluate the planner's fixed prompt before reporting ready
    # torch's threads for a turn's small work (the query's embedding, the ranking head, a photo); None: torch's own
    # choice. One: 9 ms a turn, where torch's two OpenMP threads, spinning between calls while uvicorn's threads want
    # the cores, took 45-55 ms on 2 cores; turns running at once each use a core of their own.
    torch_threads: int | None = 1

    def check(self) -> None:
        """Refuse a configuration that would expose the service: another address than loopback needs keys."""
        if not self.catalogs:
            raise ConfigError("serve needs at least one --catalog")
        if not is_loopback(self.host) and not self.api_keys:
            raise ConfigError(
                f"serving on {self.host} needs API keys: give --api-key NAME=KEY (or RECAGENT_API_KEYS); "
                "without keys the service only binds 127.0.0.1"
            )
        if self.max_pending < 1 or self.llm_parallel < 1:
            raise ConfigError("--max-pending and --llm-parallel must be at least 1")


def is_loopback(host: str) -> bool:
    """Whether a bind address is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_api_keys(values: list[str] | tuple[str, ...], environment: str | None = None) -> dict[str, str]:
    """API keys from `--api-key NAME=KEY` options (a bare KEY is its own user name) and RECAGENT_API_KEYS
    ("NAME=KEY,NAME=KEY"): key -> user name. Every key is one user."""
    raw = [v for v in values if v] + [v for v in (environment or os.environ.get("RECAGENT_API_KEYS", "")).split(",")]
    keys: dict[str, str] = {}
    for item in (v.strip() for v in raw):
        if not item:
            continue
        name, sep, key = item.partition("=")
        name, key = (name.strip(), key.strip()) if sep else (item, item)
        if len(key) < 8:
            raise ConfigError(f"API key for {name!r} is too short: use at least 8 characters")
        if key in keys and keys[key] != name:
            raise ConfigError(f"the same API key is given to {keys[key]!r} and {name!r}")
        keys[key] = name
    return keys
