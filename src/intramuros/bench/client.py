"""The bench's HTTP client: the server's model list and one call per item.

Plain httpx against the OpenAI-shaped API, so the bench measures any
intramuros server (or another OpenAI-compatible one, minus the metering).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from intramuros.bench.errors import BenchError, ServerUnavailable

# The extra ``usage`` keys an intramuros server adds (protocol/openai.py ``Metering``).
METERING_FIELDS = ("queue_ms", "ttft_ms", "latency_ms", "decode_tokens_per_second",
                   "cpu_seconds", "energy_joules", "energy_source", "cost_eur",
                   "co2e_grams")  # fmt: skip


@dataclass(frozen=True)
class ModelInfo:
    """A model as the server lists it, and the endpoint the bench will use for it."""

    id: str
    capabilities: tuple[str, ...]
    endpoint: str | None  # "chat", "completion", or None (cannot generate text)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Reply:
    """One call's outcome: the text, the server's usage block, or an error."""

    text: str = ""
    finish_reason: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    status: int | None = None
    client_ms: float = 0.0


def normalise_base_url(url: str) -> str:
    """``http://host:port`` from what a user may type (trailing ``/`` or ``/v1``)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise BenchError(f"--base-url must be an http(s) URL such as http://127.0.0.1:8000, "
                         f"got {url!r}")  # fmt: skip
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[:-3]
    return f"{parts.scheme}://{parts.netloc}{path}"


def _endpoint(caps: tuple[str, ...]) -> str | None:
    if "chat" in caps:
        return "chat"
    if "completion" in caps:
        return "completion"
    return None


class BenchClient:
    """Talks to one server; every method is synchronous (the bench runs items in order)."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float = 600.0) -> None:
        self.base_url = normalise_base_url(base_url)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> BenchClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def models(self) -> dict[str, ModelInfo]:
        """``GET /v1/models``, with each model's capabilities (``intramuros.capabilities``)."""
        try:
            r = self._http.get("/v1/models", timeout=30)
        except httpx.HTTPError as exc:
            raise ServerUnavailable(f"cannot reach the server at {self.base_url}: "
                                    f"{type(exc).__name__}: {exc}") from None  # fmt: skip
        if r.status_code in (401, 403):
            raise BenchError(f"the server at {self.base_url} refused the API key "
                             f"({r.status_code}); pass --api-key")  # fmt: skip
        try:
            r.raise_for_status()
            data = r.json()["data"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            raise ServerUnavailable(f"{self.base_url}/v1/models did not answer a model list "
                                    f"(HTTP {r.status_code})") from None  # fmt: skip
        out: dict[str, ModelInfo] = {}
        for card in data:
            meta = card.get("intramuros") or {}
            caps = meta.get("capabilities")
            # Another OpenAI-compatible server lists no capabilities: assume chat.
            caps_t = tuple(str(c) for c in caps) if isinstance(caps, list) else ("chat",)
            out[str(card["id"])] = ModelInfo(str(card["id"]), caps_t, _endpoint(caps_t), meta)
        return out

    def call(self, endpoint: str, body: dict[str, Any]) -> Reply:
        """POST one chat or text completion; errors become ``Reply.error``, never raise."""
        path = "/v1/chat/completions" if endpoint == "chat" else "/v1/completions"
        t0 = time.perf_counter()
        try:
            r = self._http.post(path, json=body)
        except httpx.HTTPError as exc:
            return Reply(error=f"{type(exc).__name__}: {exc}",
                         client_ms=(time.perf_counter() - t0) * 1000)  # fmt: skip
        reply = Reply(status=r.status_code, client_ms=(time.perf_counter() - t0) * 1000)
        try:
            data = r.json()
        except ValueError:
            reply.error = f"HTTP {r.status_code}: not JSON"
            return reply
        if r.status_code != 200 or not isinstance(data, dict):
            err = data.get("error") if isinstance(data, dict) else None
            message = err.get("message") if isinstance(err, dict) else str(data)[:200]
            reply.error = f"HTTP {r.status_code}: {message}"
            return reply
        try:
            choice = data["choices"][0]
            if endpoint == "chat":
                message = choice["message"]
                text = message.get("content") or ""
                if not text and message.get("tool_calls"):
                    text = message["tool_calls"][0]["function"]["arguments"]
            else:
                text = choice["text"]
            reply.text = str(text)
            reply.finish_reason = choice.get("finish_reason")
            reply.usage = dict(data.get("usage") or {})
        except (KeyError, IndexError, TypeError):
            reply.error = "malformed response (no choices[0])"
        return reply
