"""The default engine: llama.cpp in-process, through ``llama-cpp-python``.

We drive ``Llama.generate`` token by token rather than calling
``create_chat_completion``: that gives us exact control of stop sequences,
UTF-8 boundaries, cancellation between tokens, grammar-constrained tool calls
and log-probabilities (captured by a logits processor, so the model need not
be loaded with ``logits_all``, which would cost n_ctx x n_vocab floats).
"""

from __future__ import annotations

import codecs
import logging
import random
import re
import secrets
import threading
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np

from intramuros.engines import prompting
from intramuros.engines.base import (
    ChatParams,
    CompletionParams,
    Delta,
    Engine,
    FinishReason,
    SamplingParams,
    TokenLogprob,
    ToolCall,
    TopLogprob,
    Usage,
    WeightsKind,
)
from intramuros.engines.stops import find_stop, held_back
from intramuros.errors import (
    ContextLengthExceeded,
    EngineError,
    EngineUnavailable,
    InvalidRequest,
)

log = logging.getLogger(__name__)

# llama.cpp's own sampling defaults: they keep a small model coherent at
# temperature 1, where pure OpenAI-style sampling would wander off.
_TOP_K = 40
_MIN_P = 0.05


class _LogprobCapture:
    """A logits processor that keeps the log-softmax of the latest logits."""

    def __init__(self) -> None:
        self.latest: np.ndarray[Any, np.dtype[np.float64]] | None = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        logits = np.asarray(scores, dtype=np.float64)
        shifted = logits - logits.max()
        self.latest = shifted - np.log(np.exp(shifted).sum())
        return scores


class LlamaCppEngine(Engine):
    """A GGUF model run in this process by llama.cpp on the CPU."""

    name: ClassVar[str] = "llamacpp"
    max_concurrency: ClassVar[int] = 1
    # One GGUF file; no options (the context window is the record's, capped by n_ctx).
    weights: ClassVar[WeightsKind] = "file"
    weights_format: ClassVar[str] = "gguf"
    capabilities: ClassVar[tuple[str, ...]] = ("chat", "completion", "tools", "json")

    _llm: Any = None

    def load(self) -> None:
        """Map the GGUF file and build the chat formatter from its template."""
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        path = self.record.weights_path()
        if path is None:
            raise EngineUnavailable(f"Model '{self.record.name}' has no weights file.")
        n_ctx = min(self.settings.n_ctx, self.record.context_length)
        threads = self.settings.llama_threads()
        try:
            self._llm = Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_threads=threads,
                n_threads_batch=threads,
                n_batch=min(self.settings.n_batch, n_ctx),
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            log.error("llama.cpp could not load %s: %s", path, exc)
            raise EngineUnavailable(
                f"Model '{self.record.name}' could not be loaded by llama.cpp."
            ) from None
        self._formatter = None
        self._controls = self._control_pattern()
        template = self._llm.metadata.get("tokenizer.chat_template")
        if template and self.record.has("chat"):
            self._formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=self._token_text(self._llm.token_eos()),
                bos_token=self._token_text(self._llm.token_bos()),
            )

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

    def health(self) -> bool:
        """Loaded and not closed."""
        return self._llm is not None

    def close(self) -> None:
        """Free the llama.cpp context and model."""
        if self._llm is not None:
            self._llm.close()
            self._llm = None

    @property
    def max_token_bytes(self) -> int | None:
        """The longest token of the vocabulary, in bytes (control tokens aside)."""
        return getattr(self, "_max_token_bytes", None)

    @property
    def context_length(self) -> int:
        """The context window actually allocated (``n_ctx``)."""
        if self._llm is not None:
            return int(self._llm.n_ctx())
        return min(self.settings.n_ctx, self.record.context_length)

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

    def _render(self, messages: list[dict[str, str]]) -> str:
        assert self._formatter is not None
        try:
            return str(self._formatter(messages=messages).prompt)  # type: ignore[arg-type]
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
        messages = prompting.normalise_messages(params)
        prompt = self._render(messages)
        if not any(self._controls.search(m["content"]) for m in messages):
            return self._tokens(prompt, special=True)
        # Render again with a sentinel in place of each text, then tokenise the
        # template's pieces with their markers and the texts as plain text.
        tag = "\x00" + secrets.token_hex(8)
        marked = [{**m, "content": f"{tag}{i}\x00"} for i, m in enumerate(messages)]
        pieces = re.split(f"{tag}(\\d+)\x00", self._render(marked))
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
        grammar_text: str | None,
        cancel: threading.Event,
        *,
        param: str,
    ) -> Iterator[Delta]:
        """The decoding loop shared by chat and completion."""
        from llama_cpp import llama_vocab_is_eog
        from llama_cpp.llama_grammar import LlamaGrammar

        llm = self._llm
        if llm is None:
            raise EngineUnavailable(f"Model '{self.record.name}' is not loaded.")
        if not tokens:
            raise InvalidRequest("The prompt is empty.", param=param)
        n_ctx = int(llm.n_ctx())
        max_new = sampling.max_tokens if sampling.max_tokens is not None else n_ctx - len(tokens)
        if max_new <= 0 or len(tokens) + max_new > n_ctx:
            raise ContextLengthExceeded(
                model=self.record.name,
                context_length=n_ctx,
                prompt_tokens=len(tokens),
                max_tokens=max(max_new, 1),
                param=param,
            )
        grammar = LlamaGrammar.from_string(grammar_text, verbose=False) if grammar_text else None
        capture = _LogprobCapture() if sampling.logprobs is not None else None
        llm.set_seed(sampling.seed if sampling.seed is not None else random.getrandbits(31))
        if sampling.seed is not None:
            # Reusing the cached prefix of the previous prompt evaluates its last token
            # alone rather than in a batch, which changes the logits in their last bits
            # and, at temperature 1, the text: a seed asks for the same text, so the
            # prompt is evaluated from scratch.
            llm.reset()

        stops = [s for s in sampling.stop if s]
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        generated: list[int] = []
        full = ""
        emitted = 0
        finish: FinishReason = "length"
        pending_logprobs: list[TokenLogprob] = []
        try:
            stream = llm.generate(
                tokens,
                top_k=_TOP_K if sampling.top_k is None else sampling.top_k,
                top_p=sampling.top_p,
                min_p=_MIN_P,
                temp=sampling.temperature,
                repeat_penalty=sampling.repetition_penalty,
                presence_penalty=sampling.presence_penalty,
                frequency_penalty=sampling.frequency_penalty,
                logits_processor=[capture] if capture else None,
                grammar=grammar,
            )
            for token in stream:
                if cancel.is_set():
                    finish = "cancelled"
                    break
                if llama_vocab_is_eog(llm._model.vocab, token):
                    finish = "stop"
                    break
                generated.append(token)
                piece = bytes(llm.detokenize([token]))
                if capture is not None and capture.latest is not None:
                    pending_logprobs.append(
                        self._logprob(token, piece, capture.latest, sampling.logprobs or 0)
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
                if len(generated) >= max_new:
                    break
        except (RuntimeError, ValueError) as exc:
            # llama.cpp reports decode failures and bad grammars this way.
            log.error("llama.cpp failed on %s: %s", self.record.name, exc)
            if grammar_text is not None and not generated:
                raise InvalidRequest(
                    "The decoding grammar could not be used.", param="response_format"
                ) from None
            raise EngineError(f"Model '{self.record.name}' failed while generating.") from None
        if finish != "stop" or not stops:
            full += decoder.decode(b"", final=True)
        yield Delta(
            text=full[emitted:],
            logprobs=pending_logprobs,
            finish_reason=finish,
            usage=Usage(prompt_tokens=len(tokens), completion_tokens=len(generated)),
        )

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
