"""Continuous batching for llama.cpp: one decode loop per loaded model.

The loop's thread owns the llama context. Requests (``Job``) join between two
decode steps and leave when they finish, stop or are cancelled; each step puts
the next token of every decoding sequence, and as much prompt as the batch has
room for, into one ``llama_decode``, so running streams keep flowing while a
long prompt is read in chunks. Each sequence keeps its own sampler chain
(penalties, grammar, top-k/top-p/min-p, temperature, its seed).

Each slot (a sequence id) has a KV cache stream of its own, ``slot_context``
cells, its tokens at the cells of their positions: what a sequence computes
then does not depend on what shares its steps, so greedy text is the same
batched as alone (in a unified cache, where a sequence's cells land changes
the order of the attention's sums, and with it the last bits). A slot that
finishes keeps its tokens in its stream: the prefix cache. A new request
starts from the longest prefix of its prompt already computed in any slot,
running or free (another slot's stream is copied, ``llama_memory_seq_cp``,
then cut), and reads only the rest; a free slot's cache is given up, least
recently used first, when its slot is taken.

LoRA adapters: a job may name one (a GGUF file, loaded once, in the loop's
thread, costing its own size). The context applies one adapter set at a time,
so each step serves the slots of one adapter set, taking turns when several
have work; a cached prefix is shared only under the same adapter.

Everything ``llama_*`` happens in the loop's thread; requests talk to it
through their ``Job`` (an output queue, a flag to leave).
"""

from __future__ import annotations

import collections
import ctypes
import itertools
import logging
import queue
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from intramuros.engines.base import FinishReason, SamplingParams

log = logging.getLogger(__name__)

# llama.cpp's own sampling defaults: they keep a small model coherent at
# temperature 1, where pure OpenAI-style sampling would wander off.
TOP_K = 40
MIN_P = 0.05
# Tokens the repetition penalties look back over (llama-cpp-python's default).
PENALTY_LAST_N = 64
# A prefix shorter than this is not worth sharing (it is read again instead).
MIN_SHARED_PREFIX = 16


class BatchError(Exception):
    """The decode loop could not serve a job (the engine maps it to its errors)."""

    def __init__(self, message: str, *, grammar: bool = False, adapter: bool = False) -> None:
        super().__init__(message)
        self.grammar = grammar
        self.adapter = adapter


@dataclass(frozen=True)
class Token:
    """One sampled token of a job, with the raw logits it was drawn from when asked."""

    id: int
    logits: np.ndarray[Any, np.dtype[np.float32]] | None = None


@dataclass(frozen=True)
class Finished:
    """A job's end: ``stop`` (end of generation), ``length`` or ``cancelled``."""

    reason: FinishReason
    prompt_tokens: int
    cached_tokens: int


@dataclass
class Job:
    """A request handed to the loop; its thread reads ``out`` until ``Finished``."""

    prompt: list[int]
    max_new: int
    sampling: SamplingParams
    grammar: str | None = None
    want_logits: bool = False
    # A seeded request asks for the same text each time: its prompt is read from
    # scratch, as a prefix read in other chunks changes the logits in their last bits.
    reuse_prefix: bool = True
    out: queue.SimpleQueue[Token | Finished | BaseException] = field(
        default_factory=queue.SimpleQueue
    )
    leave: threading.Event = field(default_factory=threading.Event)
    # Prompt tokens found in the cache (set by the loop before the first token is put).
    cached: int = 0
    # A LoRA adapter GGUF applied to this job (its path), or None for the base model.
    adapter: str | None = None


@dataclass
class Slot:
    """One sequence id of the context and what its cells hold."""

    seq: int
    tokens: list[int] = field(default_factory=list)  # positions 0.. computed in the cache
    adapter: str | None = None  # the adapter those tokens were computed under
    job: Job | None = None
    sampler: Any = None
    fed: int = 0  # prompt tokens of the job read so far (== len(tokens) while prefilling)
    last: int = -1  # the token sampled last, to be read at the next step
    generated: int = 0
    cached: int = 0  # prompt tokens found in the cache
    used: float = 0.0  # when it last served a job (least recently used goes first)
    order: int = 0  # when its job came (prompts are read in that order)

    @property
    def decoding(self) -> bool:
        return self.job is not None and self.fed >= len(self.job.prompt)


@dataclass
class LoopStats:
    """Counters of one loop, read by ``/metrics``."""

    steps: int = 0
    batched_tokens: int = 0
    prefix_lookups: int = 0
    prefix_hits: int = 0
    saved_tokens: int = 0
    active: int = 0


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class DecodeLoop:
    """The batching loop of one model: ``submit`` a job, read its queue."""

    def __init__(self, model: Any, *, slots: int, slot_context: int, n_batch: int,
                 threads: int, name: str) -> None:  # fmt: skip
        import llama_cpp

        self.slots = [Slot(seq=i) for i in range(slots)]
        self.slot_context = slot_context
        self.n_batch = max(n_batch, slots)
        self.name = name
        self.stats = LoopStats()
        self._model = model
        self._vocab = llama_cpp.llama_model_get_vocab(model)
        self._n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = slots * slot_context
        params.n_batch = self.n_batch
        params.n_ubatch = self.n_batch
        params.n_seq_max = slots
        params.n_threads = threads
        params.n_threads_batch = threads
        params.kv_unified = False
        params.swa_full = True  # a sliding-window model keeps whole prefixes to share
        params.no_perf = True
        ctx = llama_cpp.llama_init_from_model(model, params)
        if not ctx:
            raise MemoryError(f"llama.cpp could not create a context of {params.n_ctx} tokens")
        self._ctx = ctx
        self._memory = llama_cpp.llama_get_memory(ctx)
        self._batch = llama_cpp.llama_batch_init(self.n_batch + slots, 0, 1)
        self._incoming: list[Job] = []
        self._pending: collections.deque[Job] = collections.deque()
        self._adapters: dict[str, Any] = {}
        self._applied: str | None = None  # the adapter set on the context now
        self._dropping: set[str] = set()
        self._turn = 0
        self._arrivals = itertools.count()
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=f"decode-{name}", daemon=True)
        self._thread.start()

    # -- the requests' side ------------------------------------------------

    def submit(self, job: Job) -> None:
        """Queue ``job``; the loop takes it at its next step (a slot is free: the lane
        lets at most ``slots`` calls run)."""
        with self._cond:
            if self._closing:
                raise BatchError(f"Model '{self.name}' is closing.")
            self._incoming.append(job)
            self._cond.notify()

    def drop_adapter(self, path: str) -> None:
        """Let an adapter go once no running job uses it (its cached prefixes too)."""
        with self._cond:
            self._dropping.add(path)
            self._cond.notify()

    def close(self) -> None:
        """Stop the loop (jobs still running end with an error) and free the context."""
        import llama_cpp

        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()
        for slot in self.slots:
            self._free_sampler(slot)
        for adapter in self._adapters.values():
            llama_cpp.llama_adapter_lora_free(adapter)
        self._adapters.clear()
        if self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx is not None:
            llama_cpp.llama_free(self._ctx)
            self._ctx = None

    # -- the loop ----------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while (not self._closing and not self._incoming and not self.stats.active
                       and not self._dropping):  # fmt: skip
                    self._cond.wait()
                if self._closing:
                    break
                self._pending.extend(self._incoming)
                self._incoming.clear()
                dropping = set(self._dropping)
            for path in dropping:
                self._drop(path)
            for slot in self.slots:
                if slot.job is not None and slot.job.leave.is_set():
                    self._release(slot, self._finished(slot, "cancelled"))
            # A job waits here only between its lane letting it in and the loop seeing
            # the job before it leave (one step at most).
            while self._pending and any(s.job is None for s in self.slots):
                self._admit(self._pending.popleft())
            try:
                self._step()
            except Exception as exc:  # a failed decode ends the jobs in it, not the loop
                log.exception("decode loop of %s failed", self.name)
                self._fail_all(BatchError(f"Model '{self.name}' failed while generating: {exc}"))
        self._fail_all(BatchError(f"Model '{self.name}' was unloaded."))
        with self._cond:
            for job in [*self._pending, *self._incoming]:
                job.out.put(BatchError(f"Model '{self.name}' was unloaded."))
            self._incoming.clear()
            self._pending.clear()

    def _admit(self, job: Job) -> None:
        """Give ``job`` a slot, starting from the longest prefix of its prompt in the cache."""
        import llama_cpp

        free = [s for s in self.slots if s.job is None]
        if job.adapter is not None and not self._load_adapter(job.adapter):
            job.out.put(BatchError(f"The adapter {job.adapter} could not be loaded.",
                                   adapter=True))  # fmt: skip
            return
        sampler = self._sampler(job)
        if sampler is None:
            job.out.put(BatchError("The decoding grammar could not be used.", grammar=True))
            return
        # Keep at least one prompt token to read: its logits give the first token.
        limit = len(job.prompt) - 1
        source: Slot | None = None
        shared = 0
        if job.reuse_prefix:
            self.stats.prefix_lookups += 1
            # The longest prefix; on a tie a free slot, which is then reused in place.
            same = [s for s in self.slots if s.adapter == job.adapter] or self.slots[:1]
            source = max(same, key=lambda s: (
                min(common_prefix(s.tokens, job.prompt), limit), s.job is None))  # fmt: skip
            shared = min(common_prefix(source.tokens, job.prompt), limit)
            if source.adapter != job.adapter:
                shared = 0
            if shared < MIN_SHARED_PREFIX:
                source, shared = None, 0
        if source is not None and source.job is None:
            slot = source
        else:
            # The least recently used free slot, its cache given up.
            slot = min(free, key=lambda s: (bool(s.tokens), s.used))
        if source is not slot:
            llama_cpp.llama_memory_seq_rm(self._memory, slot.seq, -1, -1)
            slot.tokens = []
            if source is not None:
                # Each slot has a cache stream of its own: the source's is copied whole
                # (at the next decode), then cut to the shared prefix.
                llama_cpp.llama_memory_seq_cp(self._memory, source.seq, slot.seq, -1, -1)
                slot.tokens = source.tokens[:shared]
        llama_cpp.llama_memory_seq_rm(self._memory, slot.seq, shared, -1)
        del slot.tokens[shared:]
        slot.adapter = job.adapter
        if shared:
            self.stats.prefix_hits += 1
            self.stats.saved_tokens += shared
        slot.job, slot.sampler, slot.fed, slot.cached = job, sampler, shared, shared
        job.cached = shared
        slot.generated, slot.last, slot.order = 0, -1, next(self._arrivals)
        self.stats.active += 1

    def _load_adapter(self, path: str) -> bool:
        import llama_cpp

        if path in self._adapters:
            return True
        adapter = llama_cpp.llama_adapter_lora_init(self._model, path.encode())
        if not adapter:
            log.error("llama.cpp could not load the adapter %s", path)
            return False
        self._adapters[path] = adapter
        return True

    def _drop(self, path: str) -> None:
        """Free the adapter at ``path`` if no running job uses it (else try next step)."""
        import llama_cpp

        if any(s.job is not None and s.job.adapter == path for s in self.slots):
            return
        with self._cond:
            self._dropping.discard(path)
        if any(j.adapter == path for j in self._pending):
            return
        for slot in self.slots:
            if slot.adapter == path:
                llama_cpp.llama_memory_seq_rm(self._memory, slot.seq, -1, -1)
                slot.tokens, slot.adapter = [], None
        adapter = self._adapters.pop(path, None)
        if adapter is not None:
            if self._applied == path:
                self._apply(None)
            llama_cpp.llama_adapter_lora_free(adapter)

    def _apply(self, path: str | None) -> None:
        """Set the context's adapters to ``path`` alone (or none)."""
        import llama_cpp

        if path == self._applied:
            return
        if path is None:
            llama_cpp.llama_set_adapters_lora(self._ctx, None, 0, None)
        else:
            adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self._adapters[path])
            scales = (ctypes.c_float * 1)(1.0)
            llama_cpp.llama_set_adapters_lora(self._ctx, adapters, 1, scales)
        self._applied = path

    def _sampler(self, job: Job) -> Any:
        """The job's sampler chain, or None when its grammar does not parse."""
        import llama_cpp

        s = job.sampling
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        add = llama_cpp.llama_sampler_chain_add
        if s.repetition_penalty != 1.0 or s.frequency_penalty or s.presence_penalty:
            penalties = llama_cpp.llama_sampler_init_penalties(
                PENALTY_LAST_N, s.repetition_penalty, s.frequency_penalty, s.presence_penalty
            )
            add(chain, penalties)
        if job.grammar is not None:
            grammar = llama_cpp.llama_sampler_init_grammar(
                self._vocab, job.grammar.encode("utf-8"), b"root"
            )
            if not grammar:
                llama_cpp.llama_sampler_free(chain)
                return None
            add(chain, grammar)
        if s.temperature <= 0:
            add(chain, llama_cpp.llama_sampler_init_greedy())
        else:
            add(chain, llama_cpp.llama_sampler_init_top_k(TOP_K if s.top_k is None else s.top_k))
            add(chain, llama_cpp.llama_sampler_init_top_p(s.top_p, 1))
            add(chain, llama_cpp.llama_sampler_init_min_p(MIN_P, 1))
            add(chain, llama_cpp.llama_sampler_init_temp(s.temperature))
            seed = s.seed if s.seed is not None else random.getrandbits(31)
            add(chain, llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        return chain

    def _free_sampler(self, slot: Slot) -> None:
        import llama_cpp

        if slot.sampler is not None:
            llama_cpp.llama_sampler_free(slot.sampler)
            slot.sampler = None

    def _release(self, slot: Slot, end: Token | Finished | BaseException | None) -> None:
        """End the slot's job (its cells stay: the prefix cache)."""
        job = slot.job
        self._free_sampler(slot)
        slot.job, slot.used = None, time.monotonic()
        self.stats.active -= 1
        if job is not None and end is not None:
            job.out.put(end)

    def _finished(self, slot: Slot, reason: FinishReason) -> Finished:
        assert slot.job is not None
        return Finished(reason, prompt_tokens=len(slot.job.prompt), cached_tokens=slot.cached)

    def _fail_all(self, exc: BaseException) -> None:
        import llama_cpp

        for slot in self.slots:
            if slot.job is not None:
                self._release(slot, exc)
            # What a failed decode left in the cache is not trusted.
            llama_cpp.llama_memory_seq_rm(self._memory, slot.seq, -1, -1)
            slot.tokens, slot.adapter = [], None

    def _step(self) -> None:
        """One ``llama_decode``: a token for every decoding slot, prompt chunks for the rest."""
        import llama_cpp

        batch = self._batch
        n = 0
        sample_at: list[tuple[Slot, int]] = []
        # One adapter set per step: the sets with work take turns.
        groups = sorted({s.adapter or "" for s in self.slots if s.job is not None})
        if not groups:
            return
        self._turn = (self._turn + 1) % len(groups)
        group = groups[self._turn] or None
        self._apply(group)
        members = [s for s in self.slots if s.job is not None and s.adapter == group]

        def put(slot: Slot, token: int, logits: bool) -> None:
            nonlocal n
            batch.token[n] = token
            batch.pos[n] = len(slot.tokens)
            batch.n_seq_id[n] = 1
            batch.seq_id[n][0] = slot.seq
            batch.logits[n] = logits
            if logits:
                sample_at.append((slot, n))
            slot.tokens.append(token)
            n += 1

        for slot in members:
            if slot.decoding:
                put(slot, slot.last, True)
        budget = self.n_batch - n
        # Prompts in the order they came, as much as the step has room for.
        for slot in sorted((s for s in members if not s.decoding), key=lambda s: s.order):
            if budget <= 0:
                break
            assert slot.job is not None
            prompt = slot.job.prompt
            chunk = prompt[slot.fed : slot.fed + budget]
            for i, token in enumerate(chunk):
                put(slot, token, slot.fed + i == len(prompt) - 1)
            slot.fed += len(chunk)
            budget -= len(chunk)
        if not n:
            return
        batch.n_tokens = n
        rc = llama_cpp.llama_decode(self._ctx, batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")
        self.stats.steps += 1
        self.stats.batched_tokens += n
        for slot, index in sample_at:
            self._sample(slot, index)

    def _sample(self, slot: Slot, index: int) -> None:
        """Draw the slot's next token from the logits at ``index`` and hand it over."""
        import llama_cpp

        job = slot.job
        assert job is not None
        logits = None
        if job.want_logits:
            pointer = llama_cpp.llama_get_logits_ith(self._ctx, index)
            logits = np.ctypeslib.as_array(
                ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), shape=(self._n_vocab,)
            ).copy()
        token = int(llama_cpp.llama_sampler_sample(slot.sampler, self._ctx, index))
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
            self._release(slot, self._finished(slot, "stop"))
            return
        slot.generated += 1
        job.out.put(Token(token, logits))
        if slot.generated >= job.max_new:
            self._release(slot, self._finished(slot, "length"))
            return
        slot.last = token

