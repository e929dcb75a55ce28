"""A short case summary drafted by a local model from the evidence, marked machine-drafted.

The model call goes through the gate like any chat call (``core.chat``: the
tenant's model allowlist, quotas, personal-data policy, metering, ledger). The
draft never changes a score or a decision: it is a reading aid for the analyst.
"""

from __future__ import annotations

from typing import Any

from intramuros.gate.tenants import Principal
from intramuros.platform.interface import Platform
from intramuros.protocol import openai as p

_SYSTEM = ("You are a compliance assistant. In at most four sentences, summarise why this "
           "screening alert was raised and what the analyst should check. Use only the "
           "evidence given. Do not decide the case.")  # fmt: skip


def evidence_text(case: dict[str, Any]) -> str:
    """The case's evidence as plain text for the model (best matches first)."""
    subject = case["subject"]
    lines = [f"Screened: {subject.get('name')} (type {subject.get('type', 'any')}, "
             f"born {subject.get('birth_date', 'unknown')}, "
             f"nationality {subject.get('nationality', 'unknown')})."]  # fmt: skip
    for m in case["matches"][:3]:
        ex = m["explanation"]
        feats = ", ".join(f"{f['feature']} ({f['weight']:+.2f})"
                          for f in ex["features"]) or "none"  # fmt: skip
        programmes = ", ".join(m["programs"]) or "none"
        lines.append(f"Match: {m['name']} on list {m['list']} (entry {m['source_id']}, "
                     f"programmes {programmes}), score {m['score']:.2f}; "
                     f"name compared: {ex['name']['listed']}; other evidence: {feats}.")
    return "\n".join(lines)


async def draft_summary(core: Platform, who: Principal, case: dict[str, Any],
                        model: str) -> dict[str, Any]:  # fmt: skip
    """Ask ``model`` for a summary; returns ``{"text", "model", "machine_drafted": True}``."""
    req = p.ChatCompletionRequest(
        model=model, temperature=0.0, max_tokens=160,
        messages=[p.SystemMessage(role="system", content=_SYSTEM),
                  p.UserMessage(role="user", content=evidence_text(case))],
        user=case.get("customer_id"),
    )  # fmt: skip
    reply = await core.chat(req, who)
    assert isinstance(reply, p.ChatCompletionResponse)
    text = (reply.choices[0].message.content or "").strip()
    return {"text": text, "model": model, "machine_drafted": True}
