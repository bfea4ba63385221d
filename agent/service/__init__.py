"""`recagent serve`: the agent over HTTP for many users at once.

config.py (ServiceConfig, API keys), llm_queue.py (the fair LLM queue), core.py (Service: the agents, admission,
one turn stored whole or not at all), metrics.py (Prometheus), http.py (the native API and SSE), openai_compat.py
(/v1/chat/completions, /v1/models). The service owns HTTP, keys, storage and the queue; recommendations are the
agent's (agent/loop.py), exactly as in the REPL.
"""

from .config import ServiceConfig
from .core import Service
from .http import create_app

__all__ = ["Service", "ServiceConfig", "create_app"]
