"""Any OpenAI-compatible chat endpoint (OpenAI, vLLM, Ollama, a llama.cpp server) through langchain-openai."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from pydantic import SecretStr

from recagent.tools.errors import LLMError

from .base import Completion, OnToken


class OpenAILLM:
    """Any OpenAI-compatible chat endpoint (OpenAI, vLLM, Ollama, a llama.cpp server) through langchain-openai."""

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 120,
        max_retries: int = 1,
    ):
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            if base_url and re.match(r"https?://(127\.|localhost|\[::1\])", base_url):
                key = "not-needed"  # local servers accept any key
            else:
                raise LLMError(
                    "the openai backend needs an API key: set OPENAI_API_KEY (or use --llm local; "
                    "a local server given with --base-url http://127.0.0.1:PORT/v1 needs none)"
                )
        from langchain_openai import ChatOpenAI  # noqa: PLC0415  (the openai client takes a second to import)

        self.name = f"openai:{model}"
        self.base_url = base_url
        self.chat = ChatOpenAI(
            model=model,
            base_url=base_url,
            api_key=SecretStr(key),
            timeout=timeout,
            max_retries=max_retries,
            temperature=0,
        )

    def complete(
        self,
        messages: list[dict],
        *,
        schema: dict | None = None,
        max_tokens: int = 256,
        on_token: OnToken | None = None,
    ) -> Completion:
        import openai  # noqa: PLC0415  (already imported by langchain_openai in __init__)

        kwargs: dict[str, Any] = {"max_tokens": max_tokens}
        if schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": schema}
        started = time.perf_counter()
        first = None
        pieces: list[str] = []
        usage: dict[str, Any] = {}
        try:
            for chunk in self.chat.stream(_to_langchain(messages), **kwargs):
                content = chunk.content if isinstance(chunk.content, str) else ""
                if content:
                    first = first or time.perf_counter()
                    pieces.append(content)
                    if on_token:
                        on_token(content)
                if getattr(chunk, "usage_metadata", None):
                    usage = dict(chunk.usage_metadata or {})
        except openai.APITimeoutError:
            raise LLMError(f"the LLM endpoint {self.base_url or 'OpenAI'} timed out") from None
        except openai.APIConnectionError:
            raise LLMError(f"cannot reach the LLM endpoint {self.base_url or 'OpenAI'}: is it running?") from None
        except openai.AuthenticationError:
            raise LLMError("the LLM endpoint refused the API key (OPENAI_API_KEY)") from None
        except openai.APIStatusError as exc:
            raise LLMError(f"the LLM endpoint answered HTTP {exc.status_code}: {str(exc)[:200]}") from None
        except Exception as exc:  # noqa: BLE001 - an answer that is not valid JSON, a broken stream: the
            # client library fails in many ways (even with AssertionError); to the user they are one thing
            raise LLMError(
                f"the LLM endpoint {self.base_url or 'OpenAI'} sent an unreadable answer "
                f"({exc.__class__.__name__}: {str(exc)[:200]})"
            ) from None
        end = time.perf_counter()
        first = first or end
        return Completion(
            "".join(pieces),
            prompt_tokens=int(usage.get("input_tokens", 0)),
            completion_tokens=int(usage.get("output_tokens", 0)),
            prompt_seconds=first - started,
            generation_seconds=end - first,
        )


def _to_langchain(messages: Iterable[dict]) -> list[BaseMessage]:
    kinds = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
    return [kinds[m["role"]](content=m["content"]) for m in messages]
