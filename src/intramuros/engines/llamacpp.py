"""The default engine: llama.cpp in-process, through ``llama-cpp-python``.

Generation runs in the model's decode loop (``engines/batching.py``): several
requests share each ``llama_decode`` (continuous batching) and the prompt
prefixes already computed. Each request's own thread turns its tokens into
text: stop sequences, UTF-8 boundaries, grammar-constrained tool calls and
log-probabilities (from the logits the loop copies for it when asked).
"""

from __future__ import annotations

import codecs
import copy
import logging
import queue
import re
import secrets
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from intramuros.engines import prompting
from intramuros.engines.base import (
    ChatParams,
    CompletionParams,
    Delta,
    Engine,
    EngineStat,
    FinishReason,
    SamplingParams,
    TokenLogprob,
    ToolCall,
    TopLogprob,
    Usage,
    WeightsKind,
)
from intramuros.engines.batching import BatchError, DecodeLoop, Finished, Job
from intramuros.engines.stops import find_stop, held_back
from intramuros.errors import (
    ContextLengthExceeded,
    EngineError,
    EngineUnavailable,
    InvalidRequest,
)

if TYPE_CHECKING:
    from intramuros.catalog.records import ModelRecord

log = logging.getLogger(__name__)

# The context the ``Llama`` object keeps for itself: it only tokenises and reads
# metadata; generation has the decode loop's context.
_OWN_CONTEXT = 64


class LlamaCppOptions(BaseModel):
    """The catalogue options of a ``llamacpp`` model (the settings apply when absent)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    slots: int | None = Field(
        default=None, ge=1, le=256,
        description="Requests decoded together (default: the llama-slots setting).",
    )  # fmt: skip
    context: int | None = Field(
        default=None, ge=64, le=1_048_576,
        description="Context window of each slot in tokens (default: n-ctx), capped at the "
        "model's own.",
    )  # fmt: skip


def log_softmax(logits: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Log-probabilities of raw logits."""
    shifted = logits.astype(np.float64) - float(logits.max())
    result: np.ndarray[Any, np.dtype[np.float64]] = shifted - np.log(np.exp(shifted).sum())
    return result


class LlamaCppEngine(Engine):
    """A GGUF model run in this process by llama.cpp on the CPU, its requests batched."""

    name: ClassVar[str] = "llamacpp"
    max_concurrency: ClassVar[int] = 1
    weights: ClassVar[WeightsKind] = "file"
    weights_format: ClassVar[str] = "gguf"
    capabilities: ClassVar[tuple[str, ...]] = ("chat", "completion", "tools", "json")
    options_model: ClassVar[type[BaseModel] | None] = LlamaCppOptions

    _llm: Any = None
    _loop: DecodeLoop | None = None
    _formatter: Any = None
    _closing: Any = None
    # Set on an adapter's view of a loaded model: the adapter file its requests apply.
    _adapter: str | None = None

    def _options(self) -> LlamaCppOptions:
        return LlamaCppOptions.model_validate(dict(self.record.options))

    @property
    def concurrency(self) -> int:
        """Requests decoded together: one per slot."""
        return self._options().slots or self.settings.llama_slots

    def _slot_context(self) -> int:
        wanted = self._options().context or self.settings.n_ctx
        return min(wanted, self.record.context_length)

    def load(self) -> None:
        """Map the GGUF file and build the chat formatter from its template."""
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        path = self.record.weights_path()
        if path is None:
            raise EngineUnavailable(f"Model '{self.record.name}' has no weights file.")
        threads = self.settings.llama_threads()
        try:
            self._llm = Llama(model_path=str(path), n_ctx=_OWN_CONTEXT, n_batch=_OWN_CONTEXT,
                              n_threads=1, verbose=False)  # fmt: skip
            self._loop = DecodeLoop(
                self._llm._model.model,
                slots=self.concurrency,
                slot_context=self._slot_context(),
                n_batch=self.settings.n_batch,
                threads=threads,
                name=self.record.name,
            )
        except (ValueError, RuntimeError, MemoryError) as exc:
            log.error("llama.cpp could not load %s: %s", path, exc)
            self.close()
            raise EngineUnavailable(
                f"Model '{self.record.name}' could not be loaded by llama.cpp."
            ) from None
        self._formatter = self._closing = None
        self._controls = self._control_pattern()
        template = self._llm.metadata.get("tokenizer.chat_template")
        if template and self.record.has("chat"):
            eos = self._token_text(self._llm.token_eos())
            bos = self._token_text(self._llm.token_bos())
            self._formatter = Jinja2ChatFormatter(template=template, eos_token=eos,
                                                  bos_token=bos)  # fmt: skip
            # The same template without the assistant's opening: how a finished
            # conversation reads, for training on it.
            self._closing = Jinja2ChatFormatter(
                template=template, eos_token=eos, bos_token=bos, add_generation_prompt=False)

    def _control_pattern(self) -> re.Pattern[str]:
        """What the spelling of any control token looks like (they are special only in
        the template's own text; client text is tokenised without parsing them)."""
        from llama_cpp import (
            LLAMA_TOKEN_ATTR_CONTROL,
            LLAMA_TOKEN_ATTR_UNKNOWN,
            llama_vocab_get_attr,
        )

        vocab = self._llm._model.vocab
        mask = LLAMA_TOKEN_ATTR_CONTROL | LLAMA_TOKEN_ATTR_UNKNOWN
        texts: set[str] = set()
        longest = 1
        for t in range(int(self._llm.n_vocab())):
            if llama_vocab_get_attr(vocab, t) & mask:
                texts.add(self._token_text(t))
            else:
                longest = max(longest, len(self._llm.detokenize([t], special=True)))
        self._max_token_bytes = longest
        texts.discard("")
        if not texts:
            return re.compile(r"(?!)")
        return re.compile("|".join(re.escape(t) for t in sorted(texts, key=len, reverse=True)))

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return bytes(self._llm.detokenize([token], special=True)).decode("utf-8", "replace")

    def stats(self) -> list[EngineStat]:
        """The decode loop's batching and prefix-cache counters."""
        loop = self._loop
        if loop is None or self._adapter is not None:  # an adapter's view: its base reports
            return []
        s = loop.stats
        return [
            EngineStat("batch_slots", "gauge", "Requests the model decodes together.",
                       len(loop.slots)),
            EngineStat("batch_active", "gauge", "Requests being decoded now.", s.active),
            EngineStat("decode_steps", "counter", "llama_decode calls of the decode loop.",
                       s.steps),
            EngineStat("batched_tokens", "counter", "Tokens read by those calls.",
                       s.batched_tokens),
            EngineStat("prefix_cache_lookups", "counter",
                       "Prompts looked up in the prefix cache.", s.prefix_lookups),
            EngineStat("prefix_cache_hits", "counter",
                       "Prompts that found a prefix already computed.", s.prefix_hits),
            EngineStat("prefix_cache_saved_tokens", "counter",
                       "Prompt tokens not read again thanks to the prefix cache.",
                       s.saved_tokens),
        ]  # fmt: skip

    def health(self) -> bool:
        """Loaded and not closed."""
        return self._llm is not None

    def with_adapter(self, record: ModelRecord) -> LlamaCppEngine:
        """A view of this loaded model for the LoRA adapter ``record``: same weights, same
        decode loop; its requests apply the adapter (loaded by the loop at first use)."""
        if self._loop is None or self._adapter is not None:
            raise EngineUnavailable(f"Model '{self.record.name}' is not loaded.")
        if record.path is None:
            raise EngineUnavailable(f"Adapter '{record.name}' has no file.")
        view = copy.copy(self)
        view.record = record
        view._adapter = record.path
        return view

    def close(self) -> None:
        """Stop the decode loop, free the llama.cpp contexts and model (an adapter's view:
        let the adapter go once no request uses it)."""
        if self._adapter is not None:
            if self._loop is not None:
                self._loop.drop_adapter(self._adapter)
            self._loop = self._llm = None
            return
        if self._loop is not None:
            self._loop.close()
            self._loop = None
        if self._llm is not None:
            self._llm.close()
            self._llm = None

    @property
    def max_token_bytes(self) -> int | None:
        """The longest token of the vocabulary, in bytes (control tokens aside)."""
        return getattr(self, "_max_token_bytes", None)

    @property
    def context_length(self) -> int:
        """The context window of one request (a slot's)."""
        if self._loop is not None:
            return self._loop.slot_context
        return self._slot_context()

    # -- tokens ----------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` as a completion prompt (with BOS if the model adds one)."""
        return len(self._tokenize_text(text))

    def count_chat_tokens(self, params: ChatParams) -> int:
        """Tokens of the rendered chat prompt."""
        return len(self._chat_tokens(params))

    def chat_prompt_tokens(self, params: ChatParams) -> list[int]:
        """The rendered chat prompt as the model will read it."""
        return self._chat_tokens(params)

    def completion_prompt_tokens(self, text: str) -> list[int]:
        """A completion prompt as the model will read it (client text: no control tokens)."""
        return self._tokenize_text(text)

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        """``text`` as tokens; with ``special``, spellings of control tokens are those tokens."""
        return self._tokens(text, special=special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        """The text of token ids, as the model reads it (control tokens' text left out)."""
        return bytes(self._llm.detokenize(self._known_ids(tokens))).decode("utf-8", "replace")

    def _known_ids(self, tokens: Sequence[int]) -> list[int]:
        """``tokens`` as a list; ``InvalidRequest`` (param ``prompt``) for an id out of range."""
        n_vocab = int(self._llm.n_vocab())
        bad = next((t for t in tokens if not 0 <= t < n_vocab), None)
        if bad is not None:
            raise InvalidRequest(
                f"Token id {bad} is outside this model's vocabulary (0..{n_vocab - 1}).",
                param="prompt",
            )
        return list(tokens)

    def _tokenize_text(self, text: str) -> list[int]:
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=True, special=False))

    def chat_training_tokens(self, params: ChatParams) -> tuple[list[int], list[bool]]:
        """A whole conversation as the model reads it, and which tokens it should learn
        to write: every assistant turn's text and the marker that ends it.

        Each assistant turn is cut at exactly the prompt this engine renders when
        it serves the conversation up to that turn, so a model trained on these
        tokens is asked the way it learnt. Messages of OpenAI's fine-tuning format
        may carry ``weight: 0``: such an assistant turn is read, not learnt.
        """
        if self._formatter is None or self._closing is None:
            raise self._unsupported("chat")
        messages = prompting.normalise_messages(params)
        learn = [m["role"] == "assistant" for m in messages]
        weights = [m.get("weight", 1) for m in params.messages if m.get("role") == "assistant"]
        ids = self._rendered_tokens(messages, self._closing)
        mask = [False] * len(ids)
        turn = 0
        for j, is_assistant in enumerate(learn):
            if not is_assistant:
                continue
            prompt = self._rendered_tokens(messages[:j], self._formatter)
            upto = self._rendered_tokens(messages[: j + 1], self._closing)
            if ids[: len(prompt)] != prompt or ids[: len(upto)] != upto:
                raise InvalidRequest(
                    "This model's chat template renders a conversation differently from "
                    "its beginning, so its assistant turns cannot be isolated for training.",
                    param="model",
                )
            # Merged assistant messages (normalise_messages joins a run of them) count
            # as learnt if any of them is.
            if turn >= len(weights) or weights[turn]:
                mask[len(prompt): len(upto)] = [True] * (len(upto) - len(prompt))
            turn += 1
        return ids, mask

    def _render(self, messages: list[dict[str, str]], formatter: Any = None) -> str:
        formatter = formatter or self._formatter
        assert formatter is not None
        try:
            return str(formatter(messages=messages).prompt)
        except Exception as exc:  # jinja templates call raise_exception() on odd input
            raise InvalidRequest(
                f"The messages do not fit this model's chat template: {exc}", param="messages"
            ) from None

    def _chat_tokens(self, params: ChatParams) -> list[int]:
        """The rendered chat prompt as tokens: only the template's own markers are special.

        Whatever the client wrote (every message's text, tool definitions) is
        text: "<|im_end|>" typed in a message is the seven characters, not the
        control token, so a client cannot close its turn and forge a system or
        assistant one. When no text contains a control token's spelling (nearly
        always), the whole rendering is tokenised at once, exactly as before.
        """
        if self._formatter is None:
            raise self._unsupported("chat")
        return self._rendered_tokens(prompting.normalise_messages(params), self._formatter)

    def _rendered_tokens(self, messages: list[dict[str, str]], formatter: Any) -> list[int]:
        prompt = self._render(messages, formatter)
        if not any(self._controls.search(m["content"]) for m in messages):
            return self._tokens(prompt, special=True)
        # Render again with a sentinel in place of each text, then tokenise the
        # template's pieces with their markers and the texts as plain text.
        tag = "\x00" + secrets.token_hex(8)
        marked = [{**m, "content": f"{tag}{i}\x00"} for i, m in enumerate(messages)]
        pieces = re.split(f"{tag}(\\d+)\x00", self._render(marked, formatter))
        texts = [messages[int(i)]["content"] for i in pieces[1::2]]
        rebuilt = "".join(p if k % 2 == 0 else texts[k // 2] for k, p in enumerate(pieces))
        if sorted(int(i) for i in pieces[1::2]) != list(range(len(messages))) or rebuilt != prompt:
            # The template reshapes the texts (trims, repeats them): they cannot be
            # isolated, so refuse rather than let a marker through.
            raise InvalidRequest(
                "The messages contain the spelling of one of this model's control tokens, "
                "which its chat template cannot keep as plain text.",
                param="messages",
            )
        tokens: list[int] = []
        for k, piece in enumerate(pieces):
            text = piece if k % 2 == 0 else texts[k // 2]
            tokens += self._tokens(text, special=k % 2 == 0)
        return tokens

    def _tokens(self, text: str, *, special: bool) -> list[int]:
        if not text:
            return []
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=special))

    # -- generation ------------------------------------------------------

    def stream_chat(self, params: ChatParams, cancel: threading.Event) -> Iterator[Delta]:
        """Chat: render with the model's template, constrain with tools/format grammars."""
        tokens = self._chat_tokens(params)
        tool_mode = bool(params.tools) and params.tool_choice != "none"
        grammar: str | None
        if tool_mode:
            grammar = prompting.tools_grammar(params.tools, params.tool_choice)
        else:
            grammar = prompting.response_grammar(params.response_format)
        deltas = self._generate(tokens, params.sampling, grammar, cancel, param="messages")
        if not tool_mode:
            yield from deltas
            return
        yield from self._tool_turn(deltas, params)

    def _tool_turn(self, deltas: Iterator[Delta], params: ChatParams) -> Iterator[Delta]:
        """Hold text back until we know whether the model is calling a tool.

        A call is reported whole on the last delta; plain text (possible under
        ``auto``) streams as usual once its first character shows it is text.
        """
        held: list[Delta] = []
        text = ""
        mode = "call" if params.tool_choice != "auto" else "undecided"
        for delta in deltas:
            if mode == "text":
                yield delta
                continue
            held.append(delta)
            text += delta.text
            if mode == "undecided" and text.strip():
                mode = "call" if text.lstrip().startswith("{") else "text"
                if mode == "text":
                    yield from held
                    held = []
        if mode == "text" or not held:
            return
        last = held[-1]
        logprobs = [lp for d in held for lp in d.logprobs]
        parsed = prompting.parse_tool_call(text, params.tools)
        if parsed is None or last.finish_reason == "cancelled":
            # Cut short (max_tokens) before the call was complete: give the text back.
            yield Delta(text=text, logprobs=logprobs, finish_reason=last.finish_reason,
                        usage=last.usage)  # fmt: skip
            return
        name, arguments = parsed
        call = ToolCall(id="call_" + secrets.token_hex(12), name=name, arguments=arguments)
        yield Delta(logprobs=logprobs, finish_reason="tool_calls", tool_calls=[call],
                    usage=last.usage)  # fmt: skip

    def stream_completion(
        self, params: CompletionParams, cancel: threading.Event
    ) -> Iterator[Delta]:
        """Text completion of a prompt given as text or token ids."""
        if params.suffix is not None:
            raise InvalidRequest("This model does not support `suffix`.", param="suffix")
        if isinstance(params.prompt, str):
            tokens = self._tokenize_text(params.prompt)
        else:
            tokens = self._known_ids(params.prompt)
        grammar = prompting.response_grammar(params.response_format)
        if params.echo:
            prompt_text: str = (
                params.prompt
                if isinstance(params.prompt, str)
                else bytes(self._llm.detokenize(tokens)).decode("utf-8", "replace")
            )
            yield Delta(text=prompt_text)
        yield from self._generate(tokens, params.sampling, grammar, cancel, param="prompt")

    def _generate(
        self,
        tokens: list[int],
        sampling: SamplingParams,
        grammar: str | None,
        cancel: threading.Event,
        *,
        param: str,
    ) -> Iterator[Delta]:
        """One request through the decode loop, its tokens made text here."""
        loop = self._loop
        if loop is None or self._llm is None:
            raise EngineUnavailable(f"Model '{self.record.name}' is not loaded.")
        if not tokens:
            raise InvalidRequest("The prompt is empty.", param=param)
        n_ctx = loop.slot_context
        max_new = sampling.max_tokens if sampling.max_tokens is not None else n_ctx - len(tokens)
        if max_new <= 0 or len(tokens) + max_new > n_ctx:
            raise ContextLengthExceeded(
                model=self.record.name,
                context_length=n_ctx,
                prompt_tokens=len(tokens),
                max_tokens=max(max_new, 1),
                param=param,
            )
        job = Job(prompt=tokens, max_new=max_new, sampling=sampling, grammar=grammar,
                  want_logits=sampling.logprobs is not None,
                  reuse_prefix=sampling.seed is None, adapter=self._adapter)  # fmt: skip
        try:
            loop.submit(job)
        except BatchError as exc:
            raise EngineUnavailable(str(exc)) from None
        try:
            yield from self._text(job, sampling, cancel)
        finally:
            job.leave.set()

    def _text(self, job: Job, sampling: SamplingParams, cancel: threading.Event) -> Iterator[Delta]:
        """The job's tokens as deltas: stop sequences, whole UTF-8 characters, logprobs."""
        stops = [s for s in sampling.stop if s]
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        generated = 0
        full = ""
        emitted = 0
        finish: FinishReason = "length"
        pending_logprobs: list[TokenLogprob] = []
        while True:
            try:
                event = job.out.get(timeout=0.1)
            except queue.Empty:
                if cancel.is_set():
                    job.leave.set()
                continue
            if isinstance(event, BaseException):
                if isinstance(event, BatchError) and event.grammar:
                    raise InvalidRequest(
                        "The decoding grammar could not be used.", param="response_format"
                    )
                if isinstance(event, BatchError) and event.adapter:
                    log.error("%s: %s", self.record.name, event)
                    raise EngineUnavailable(f"Adapter '{self.record.name}' could not be loaded by "
                                            "llama.cpp (its shapes or type do not fit its base).")
                log.error("llama.cpp failed on %s: %s", self.record.name, event)
                raise EngineError(f"Model '{self.record.name}' failed while generating.")
            if isinstance(event, Finished):
                finish = event.reason
                break
            if cancel.is_set():
                finish = "cancelled"
                break
            generated += 1
            piece = self._piece(event.id)
            if event.logits is not None:
                logprobs = log_softmax(event.logits)
                pending_logprobs.append(
                    self._logprob(event.id, piece, logprobs, sampling.logprobs or 0)
                )
            full += decoder.decode(piece)
            cut = find_stop(full, stops, emitted)
            if cut is not None:
                full = full[:cut]
                finish = "stop"
                break
            safe = len(full) - held_back(full, stops)
            if safe > emitted:
                yield Delta(text=full[emitted:safe], logprobs=pending_logprobs)
                emitted, pending_logprobs = safe, []
        if finish != "stop" or not stops:
            full += decoder.decode(b"", final=True)
        yield Delta(
            text=full[emitted:],
            logprobs=pending_logprobs,
            finish_reason=finish,
            usage=Usage(prompt_tokens=len(job.prompt), completion_tokens=generated,
                        cached_tokens=job.cached),
        )

    def _piece(self, token: int) -> bytes:
        return bytes(self._llm.detokenize([token]))

    def _logprob(
        self, token: int, piece: bytes, logprobs: np.ndarray[Any, Any], k: int
    ) -> TokenLogprob:
        top: tuple[TopLogprob, ...] = ()
        if k > 0:
            best = np.argpartition(-logprobs, k)[:k]
            best = best[np.argsort(-logprobs[best])]
            top = tuple(self._top(int(t), float(logprobs[t])) for t in best)
        return TokenLogprob(
            token=piece.decode("utf-8", "replace"),
            logprob=float(logprobs[token]),
            bytes=list(piece),
            top=top,
        )

    def _top(self, token: int, logprob: float) -> TopLogprob:
        piece = bytes(self._llm.detokenize([token]))
        return TopLogprob(token=piece.decode("utf-8", "replace"), logprob=logprob,
                          bytes=list(piece))  # fmt: skip
