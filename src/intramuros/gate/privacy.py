"""Applying a tenant's personal-data policy to one call.

``inspect`` finds personal data in what the client sent and decides, per
category, what happens: ``block`` refuses the call (400 listing the
categories), ``pseudonymise`` hands the model placeholders and gives the
client the real values back, ``redact-in-logs`` and ``allow`` let the model
see the text. Whatever is written down (the ledger's record and, if kept, its
content) is redacted for every category not set to ``allow``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from intramuros.errors import InvalidRequest
from intramuros.gate import pii
from intramuros.gate.policy import TenantPolicy


class PersonalDataBlocked(InvalidRequest):
    """The tenant's policy blocks a category of personal data found in the request."""

    code = "personal_data_blocked"


@dataclass
class PiiDecision:
    """What was found and what was done, for one call."""

    policy: TenantPolicy
    found: dict[str, int] = field(default_factory=dict)
    pseudonymiser: pii.Pseudonymiser | None = None

    def summary(self) -> dict[str, dict[str, Any]]:
        """For the ledger: counts and actions per category, never values."""
        return {c: {"count": n, "action": self.policy.action(c)} for c, n in self.found.items()}

    def enforce(self, param: str) -> None:
        """Raise ``PersonalDataBlocked`` (400) if a category found is set to ``block``."""
        blocked = sorted(c for c in self.found if self.policy.action(c) == "block")
        if blocked:
            raise PersonalDataBlocked(
                "The request contains personal data that this tenant's policy blocks: "
                + ", ".join(blocked) + ".",
                param=param,
            )

    def for_model(self, text: str) -> str:
        """The text the model may see."""
        return self.pseudonymiser.pseudonymise(text) if self.pseudonymiser else text

    def for_client(self, text: str) -> str:
        """Model output with pseudonyms replaced by the real values."""
        return self.pseudonymiser.restore(text) if self.pseudonymiser else text

    def for_record(self, text: str) -> str:
        """Text as it may be kept: redacted for every category not allowed."""
        hidden = [c for c in pii.CATEGORIES if self.policy.action(c) != "allow"]
        return pii.redact(text, hidden) if hidden else text


def inspect(texts: Iterable[str], policy: TenantPolicy) -> PiiDecision:
    """Scan the request's texts and decide; see :meth:`PiiDecision.enforce` for blocking."""
    decision = PiiDecision(policy=policy)
    for text in texts:
        for category, count in pii.summarise(pii.detect(text)).items():
            decision.found[category] = decision.found.get(category, 0) + count
    pseudo = [c for c in pii.CATEGORIES if policy.action(c) == "pseudonymise"]
    if pseudo and any(decision.found.get(c) for c in pseudo):
        decision.pseudonymiser = pii.Pseudonymiser(pseudo)
    return decision


def message_texts(messages: Iterable[dict[str, Any]]) -> list[str]:
    """Every text in chat messages (string contents and text parts)."""
    out: list[str] = []
    for msg in messages:
        content = msg.get("content")
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out.extend(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return out


def protect_messages(
    messages: list[dict[str, Any]], decision: PiiDecision
) -> list[dict[str, Any]]:
    """Messages with personal data pseudonymised where the policy says so."""
    if decision.pseudonymiser is None:
        return messages
    out = []
    for msg in messages:
        msg = dict(msg)
        content = msg.get("content")
        if isinstance(content, str):
            msg["content"] = decision.for_model(content)
        elif isinstance(content, list):
            msg["content"] = [
                {**p, "text": decision.for_model(str(p.get("text", "")))}
                if isinstance(p, dict) and p.get("type") == "text" else p
                for p in content
            ]  # fmt: skip
        out.append(msg)
    return out
