"""One model call as it runs: its meter, and the wire views of what it measured.

A :class:`CallMeter` follows a call from admission to its record: timings,
tokens, energy, the personal-data decision, what may be kept. The functions
below turn it (and an engine's log-probabilities) into the ``usage`` and
``logprobs`` shapes of the API.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from intramuros.api import protocol as p
from intramuros.engines.base import TokenLogprob, Usage
from intramuros.gate.privacy import PiiDecision
from intramuros.meter.energy import CallEnergy


@dataclass
class CallMeter:
    """Timings and counts of one call, filled in as it runs."""

    route: str
    model: str
    started: float = field(default_factory=time.perf_counter)
    queued_until: float | None = None
    first_token: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    status: int = 200
    error_code: str | None = None
    weights_sha256: str | None = None
    request_id: str = field(default_factory=lambda: secrets.token_hex(12))
    tenant: str | None = None
    key_id: str | None = None
    subject: str | None = None
    pii: PiiDecision | None = None
    # Only filled when the tenant keeps content (then redacted before it is written).
    keep_content: bool = False
    prompt_texts: list[str] = field(default_factory=list)
    output: list[str] = field(default_factory=list)
    # Workload-specific measures (pages, audio seconds, ...): written to the ledger record
    # under ``extra`` and shown in the ledger.
    extra: dict[str, Any] = field(default_factory=dict)
    energy: CallEnergy = field(default_factory=CallEnergy)
    # A streamed answer sends bytes before its end: its opening is recorded first.
    streaming: bool = False
    opened: bool = False
    ended: float | None = None
    cost_eur: float = 0.0
    co2e_grams: float = 0.0

    def mark_first(self) -> None:
        """Note the first generated output."""
        if self.first_token is None:
            self.first_token = time.perf_counter()


def zero_usage() -> Usage:
    """No tokens yet."""
    return Usage(0, 0)


def _ms(start: float, end: float | None) -> float | None:
    return round((end - start) * 1000, 3) if end is not None else None


def metering_of(meter: CallMeter) -> p.Metering:
    """The call's timings, energy, cost and CO2e, as the extra ``usage`` fields."""
    decode = None
    if meter.first_token is not None and meter.ended is not None and meter.completion_tokens > 1:
        span = meter.ended - meter.first_token
        # Tokens after the first one, over the time after the first one.
        decode = round((meter.completion_tokens - 1) / span, 3) if span > 0 else None
    energy = meter.energy
    return p.Metering(
        queue_ms=_ms(meter.started, meter.queued_until), ttft_ms=_ms(meter.started,
                                                                     meter.first_token),
        latency_ms=_ms(meter.started, meter.ended), decode_tokens_per_second=decode,
        cpu_seconds=round(energy.cpu_seconds, 6), energy_joules=round(energy.joules, 6),
        energy_source=energy.source, cost_eur=round(meter.cost_eur, 12),
        co2e_grams=round(meter.co2e_grams, 9),
    )  # fmt: skip


def usage_of(meter: CallMeter) -> p.UsageOut:
    """The ``usage`` of a call's answer: tokens, and the metering extras."""
    return p.UsageOut(prompt_tokens=meter.prompt_tokens,
                      completion_tokens=meter.completion_tokens,
                      total_tokens=meter.prompt_tokens + meter.completion_tokens,
                      **metering_of(meter).model_dump(exclude_none=True))  # fmt: skip


def chat_logprobs(items: list[TokenLogprob] | None) -> p.ChoiceLogprobs:
    """An engine's log-probabilities in the chat shape."""
    return p.ChoiceLogprobs(content=[
        p.TokenLogprobOut(token=t.token, logprob=t.logprob, bytes=t.bytes, top_logprobs=[
            p.TopLogprobOut(token=a.token, logprob=a.logprob, bytes=a.bytes) for a in t.top
        ])
        for t in items or []
    ])  # fmt: skip


def completion_logprobs(items: list[TokenLogprob]) -> p.CompletionLogprobs:
    """An engine's log-probabilities in the legacy completions shape."""
    offsets: list[int] = []
    pos = 0
    for t in items:
        offsets.append(pos)
        pos += len(t.token)
    return p.CompletionLogprobs(
        tokens=[t.token for t in items],
        token_logprobs=[t.logprob for t in items],
        top_logprobs=[{a.token: a.logprob for a in t.top} for t in items],
        text_offset=offsets,
    )
