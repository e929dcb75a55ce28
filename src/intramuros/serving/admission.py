"""Admitting a call: key and quotas, the tenant's personal-data policy, the context window.

Shared by the chat, completion and embeddings services: every call passes
here before it may wait for a model.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import replace
from typing import Any, TypeVar

from intramuros.engines.base import Delta, Engine
from intramuros.errors import ContextLengthExceeded, NotFound, PermissionDenied
from intramuros.gate import privacy
from intramuros.gate.policy import Limits, TenantPolicy
from intramuros.gate.privacy import PiiDecision
from intramuros.gate.quotas import Quotas
from intramuros.gate.request_texts import RequestTexts
from intramuros.gate.tenants import Principal, Tenants
from intramuros.ledger import Ledger, LedgerKeys
from intramuros.platform.call import CallMeter
from intramuros.platform.offload import run_cpu
from intramuros.serving.pool import LoadedModel

# Requests with fewer characters than this are scanned for personal data on the
# event loop (well under a millisecond); larger ones in the CPU pool.
INLINE_PRIVACY = 4096
_T = TypeVar("_T")


class Admission:
    """The checks before a call runs; built once per service."""

    def __init__(self, tenants: Tenants, quotas: Quotas, ledger: Ledger) -> None:
        self.tenants = tenants
        self.quotas = quotas
        self.ledger = ledger

    @property
    def keys(self) -> LedgerKeys | None:
        """The ledger's keys (end-user ids holding personal data are kept as their digest)."""
        return self.ledger.keys

    def policy_of(self, tenant: str) -> TenantPolicy:
        """The tenant's policy (the default one for a tenant not in the database)."""
        try:
            return self.tenants.policy(tenant)
        except NotFound:
            return TenantPolicy()

    async def admit(self, who: Principal, meter: CallMeter) -> TenantPolicy:
        """Model allowed for this key? Limits left? Counts the request if so."""
        meter.tenant, meter.key_id = who.tenant, who.key_id
        if not who.may_use(meter.model):
            raise PermissionDenied(
                f"This API key may not use model '{meter.model}'.", param="model"
            )
        cached = self.tenants.cached_policy(who.tenant)
        if cached is not None:
            scopes = self._scopes(who, cached)
            if not self.quotas.reads_database(scopes):
                # Nothing to read: the per-minute windows are in memory.
                self.quotas.admit(scopes)
                meter.charge_scopes = self.quotas.charged_scopes(scopes)
                return cached
        # One hop off the event loop for the database reads, not two.
        policy, scopes = await asyncio.to_thread(self._policy_and_quota, who)
        meter.charge_scopes = self.quotas.charged_scopes(scopes)
        return policy

    @staticmethod
    def _scopes(who: Principal, policy: TenantPolicy) -> list[tuple[str, str, Limits]]:
        scopes = [("tenant", who.tenant, policy.limits)]
        if who.key_id is not None:
            scopes.append(("key", who.key_id, who.limits))
        return scopes

    def _policy_and_quota(
        self, who: Principal
    ) -> tuple[TenantPolicy, list[tuple[str, str, Limits]]]:
        policy = self.policy_of(who.tenant)
        scopes = self._scopes(who, policy)
        self.quotas.admit(scopes)
        return policy, scopes

    async def privacy(
        self,
        meter: CallMeter,
        policy: TenantPolicy,
        collect: Callable[[], RequestTexts[_T]],
        subject: tuple[str, str] | None,
        size: int,
        param: str,
    ) -> tuple[PiiDecision, _T | None]:
        """Apply the tenant's personal-data policy to every text field of the request.

        ``collect`` lists the fields; ``subject`` is the end user's id and its
        param; ``param`` the request's main field. Returns the decision and
        the request's values as the model may see them (None: as sent).
        Scanning is linear in the request; beyond a few kilobytes it runs in
        the CPU pool, never on the event loop.
        """
        keep = policy.store_content and self.keys is not None
        keys = self.keys

        def work() -> tuple[PiiDecision, _T | None]:
            texts = collect()
            fields = list(texts.fields)
            if subject is not None:
                fields.append(privacy.TextField(subject[0], (subject[1],), "subject"))
            decision = privacy.inspect_fields(fields, policy, keys=keys)
            if decision.refused:
                return decision, None
            if keep:
                decision.recorded_prompt = texts.record(decision)
            protected = texts.protect(decision)
            decision.forget_spans()  # freed here, in the worker, not on the event loop
            return decision, protected

        decision, protected = await run_cpu(work) if size > INLINE_PRIVACY else work()
        meter.pii = decision  # recorded in the ledger even when the call is blocked
        if decision.subject is not None:
            meter.subject = decision.subject
        decision.enforce(param)  # a refusal names the field where the value was found
        meter.keep_content = keep
        if keep:
            meter.prompt_texts = decision.recorded_prompt or []
        return decision, protected

    async def restored(
        self, deltas: AsyncGenerator[Delta, None], decision: PiiDecision
    ) -> AsyncGenerator[Delta, None]:
        """Deltas with pseudonyms turned back into real values, across chunk borders."""
        async with aclosing(deltas):
            if decision.pseudonymiser is None:
                async for delta in deltas:
                    yield delta
                return
            restorer = decision.pseudonymiser.stream_restorer()
            async for delta in deltas:
                # Restoring is linear, but a huge delta (an upstream's whole answer) is
                # still work to keep off the event loop.
                delta.text = (await run_cpu(restorer.feed, delta.text)
                              if len(delta.text) > INLINE_PRIVACY * 16
                              else restorer.feed(delta.text))  # fmt: skip
                if delta.finish_reason is not None:
                    delta.text += restorer.flush()
                for i, call in enumerate(delta.tool_calls):
                    delta.tool_calls[i] = replace(call, arguments=decision.for_client(
                        call.arguments))  # fmt: skip
                yield delta

    async def check_context(
        self,
        engine: Engine,
        count: Callable[[], int],
        max_tokens: int | None,
        param: str,
        model: LoadedModel,
        text_bytes: Callable[[], int] | None = None,
    ) -> None:
        """Refuse a prompt that cannot fit before it waits in the queue.

        A prompt whose length in bytes alone shows it cannot fit is refused
        without being tokenised; otherwise it is counted in the CPU pool
        (tokenising a megabyte takes about a second: never on the event loop).
        """
        if not engine.counts_tokens:
            return
        n_ctx = engine.context_length
        wanted = max_tokens if max_tokens is not None else 1
        per_token = engine.max_token_bytes

        def measure() -> tuple[int, bool]:
            """(prompt tokens, whether that is only a lower bound)."""
            if per_token and text_bytes is not None:
                # Only a prompt that cannot fit by itself is refused uncounted; one that
                # is short enough to fit is worth counting for an exact message.
                least = -(-text_bytes() // per_token)
                if least > n_ctx:
                    return least, True
            return count(), False

        prompt_tokens, at_least = await run_cpu(measure)
        if prompt_tokens + wanted > n_ctx:
            raise ContextLengthExceeded(model=model.record.name, context_length=n_ctx,
                                        prompt_tokens=prompt_tokens, max_tokens=wanted,
                                        param=param, at_least=at_least)  # fmt: skip


def subject_of(user: str | None, metadata: dict[str, Any] | None) -> tuple[str, str] | None:
    """``(param, value)`` of the end user's id: ``user``, else ``metadata.user`` (or
    ``user_id``), if the client gave one."""
    if user:
        return "user", user
    for key in ("user", "user_id"):
        value = (metadata or {}).get(key)
        if value:
            return f"metadata.{key}", str(value)[:200]  # the ledger's subject limit
    return None

