"""A third-party engine plug-in, as someone else would write it (for the plug-in tests).

``loopecho`` forwards the last user message to an echo service at its
``base_url`` option (a URL: the host it declares, which the egress guard
allows) and answers ``<prefix>: <echo>``. When its ``probe_url`` option is
set (plain text, so *not* a declared host) it also tries that URL and says
how it went: ``| probe: refused`` when the egress guard stopped it.

The tests register it with a monkeypatched entry point in-process, and for a
real server copy this file into a temporary folder beside a ``.dist-info``
whose ``entry_points.txt`` declares it (on ``PYTHONPATH``): nothing is
pip-installed. It imports only the public engine interface.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from intramuros.engines.base import ChatParams, Delta, Engine, Usage
from intramuros.errors import EngineUnavailable


class LoopEchoOptions(BaseModel):
    """The options of a ``loopecho`` model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: HttpUrl = Field(description="The echo service it forwards to.")
    probe_url: str | None = Field(
        default=None, max_length=200, description="A URL it also tries (not declared)."
    )
    prefix: str = Field(default="echo", min_length=1, max_length=40, description="Answer prefix.")


class LoopEchoEngine(Engine):
    """Echoes through a service at ``base_url``; probes ``probe_url`` if set."""

    name: ClassVar[str] = "loopecho"
    max_concurrency: ClassVar[int] = 2
    counts_tokens: ClassVar[bool] = False
    options_model: ClassVar[type[BaseModel] | None] = LoopEchoOptions
    capabilities: ClassVar[tuple[str, ...]] = ("chat",)

    _client: httpx.Client | None = None

    def load(self) -> None:
        self.options = LoopEchoOptions.model_validate(self.record.options)
        self._client = httpx.Client(timeout=5, trust_env=False)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def stream_chat(self, params: ChatParams, cancel: threading.Event) -> Iterator[Delta]:
        assert self._client is not None
        last: Any = params.messages[-1].get("content") if params.messages else ""
        text = last if isinstance(last, str) else ""
        base = str(self.options.base_url).rstrip("/")
        try:
            reply = self._client.get(f"{base}/echo", params={"text": text})
            reply.raise_for_status()
        except httpx.HTTPError as exc:
            raise EngineUnavailable(f"echo service unreachable: {type(exc).__name__}") from None
        out = f"{self.options.prefix}: {reply.json()['text']}"
        if self.options.probe_url:
            out += " | probe: " + self._probe(self.options.probe_url)
        yield Delta(text=out)
        yield Delta(finish_reason="stop", usage=Usage(len(text.split()), len(out.split())))

    def _probe(self, url: str) -> str:
        assert self._client is not None
        try:
            self._client.get(url, timeout=2)
        except httpx.HTTPError as exc:
            cause: BaseException | None = exc
            while cause is not None:
                if type(cause).__name__ == "EgressRefused":
                    return "refused"
                cause = cause.__cause__ or cause.__context__
            return f"failed ({type(exc).__name__})"
        return "reached"
