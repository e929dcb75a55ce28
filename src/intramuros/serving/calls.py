"""The wire views of what a call measured: ``usage`` extras, log-probabilities.

A :class:`~intramuros.platform.call.CallMeter` follows a call from admission
to its record; the functions here turn it (and an engine's log-probabilities)
into the ``usage`` and ``logprobs`` shapes of the API.
"""

from __future__ import annotations

from typing import Any

from intramuros.engines.base import TokenLogprob, Usage
from intramuros.platform.call import CallMeter
from intramuros.protocol import openai as p

# The ``system_fingerprint`` of every answer: which build of the gateway served it.
FINGERPRINT = "intramuros-0.1"


def zero_usage() -> Usage:
    """No tokens yet."""
    return Usage(0, 0)


def _ms(start: float, end: float | None) -> float | None:
    return round((end - start) * 1000, 3) if end is not None else None


def metering_fields(meter: CallMeter) -> dict[str, Any]:
    """The call's timings, energy, cost and CO2e: the extra ``usage`` fields, those with a
    value (a plain dict: every answer and every record carries them)."""
    decode = None
    if meter.first_token is not None and meter.ended is not None and meter.completion_tokens > 1:
        span = meter.ended - meter.first_token
        # Tokens after the first one, over the time after the first one.
        decode = round((meter.completion_tokens - 1) / span, 3) if span > 0 else None
    energy = meter.energy
    fields = {
        "queue_ms": _ms(meter.started, meter.queued_until),
        "ttft_ms": _ms(meter.started, meter.first_token),
        "latency_ms": _ms(meter.started, meter.ended), "decode_tokens_per_second": decode,
        "cpu_seconds": round(energy.cpu_seconds, 6), "energy_joules": round(energy.joules, 6),
        "energy_source": energy.source, "cost_eur": round(meter.cost_eur, 12),
        "co2e_grams": round(meter.co2e_grams, 9),
    }  # fmt: skip
    return {k: v for k, v in fields.items() if v is not None}


def usage_of(meter: CallMeter) -> p.UsageOut:
    """The ``usage`` of a call's answer: tokens, and the metering extras."""
    return p.UsageOut(prompt_tokens=meter.prompt_tokens,
                      completion_tokens=meter.completion_tokens,
                      total_tokens=meter.prompt_tokens + meter.completion_tokens,
                      prompt_tokens_details=p.PromptTokensDetails(
                          cached_tokens=meter.cached_tokens),
                      **metering_fields(meter))  # fmt: skip


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
