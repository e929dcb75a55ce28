"""One call as it runs, from admission to its record: what every workload's calls carry."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

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
    cached_tokens: int = 0
    status: int = 200
    error_code: str | None = None
    weights_sha256: str | None = None
    # Whether the call found its model in the catalogue (its name is then a metric label).
    model_found: bool = False
    request_id: str = field(default_factory=lambda: secrets.token_hex(12))
    tenant: str | None = None
    key_id: str | None = None
    # The quota scopes (kind, id) its tokens are charged to when it ends (set at admission).
    charge_scopes: list[tuple[str, str]] = field(default_factory=list)
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
