"""The engine interface: the one small contract every inference backend fulfils.

An engine runs one model. It is built from a catalogue record (see
``intramuros.catalog.records.ModelRecord``) by its plug-in class, and is then
driven by the serving layer from worker threads: every method here is
*synchronous* and may block. The serving layer guarantees that no more than
``max_concurrency`` calls run on one engine at once, in arrival order.

Engines know nothing of HTTP, tenants or billing: they take plain dataclasses
and yield plain dataclasses. Errors they raise must come from
``intramuros.errors`` (``EngineError``/``EngineUnavailable`` for their own
failures, ``InvalidRequest`` for a request they cannot honour).
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import AnyUrl, BaseModel, ValidationError

if TYPE_CHECKING:
    from intramuros.catalog.records import ModelRecord
    from intramuros.settings import Settings

FinishReason = Literal["stop", "length", "tool_calls", "cancelled"]
# What ``intramuros models add --engine NAME [PATH]`` takes as PATH: nothing (a remote or
# synthetic model), one weights file, or a folder (see ``Engine.weights``).
WeightsKind = Literal["none", "file", "directory"]
# Bounds on the options of one model: the catalogue stores them as given.
MAX_OPTIONS = 64
MAX_OPTION_KEY = 64
MAX_OPTION_VALUE = 4096


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings shared by chat and text completion."""

    # None: as many as fit in the context window after the prompt.
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    # None: the engine's default; 0 disables top-k filtering.
    top_k: int | None = None
    # None: no log-probabilities; k >= 0: the sampled token's logprob plus the top k.
    logprobs: int | None = None


@dataclass(frozen=True)
class ToolSpec:
    """A function the model may call: name, description and JSON schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class ChatParams:
    """A chat request as an engine sees it.

    ``tool_choice`` is normalised by the API layer: ``"none"``, ``"auto"``,
    ``"required"`` (Mistral's ``"any"``) or the name of one tool.
    ``response_format`` is ``None``, ``{"type": "json_object"}`` or
    ``{"type": "json_schema", "schema": {...}}``.
    """

    messages: Sequence[dict[str, Any]]
    sampling: SamplingParams
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: str = "auto"
    response_format: dict[str, Any] | None = None
    # The client waits for the whole answer (it does not stream): an engine may make it
    # in one piece (and retry it elsewhere) and hand it over as a single delta.
    whole: bool = False


@dataclass(frozen=True)
class CompletionParams:
    """A text-completion request: a prompt as text or as token ids."""

    prompt: str | Sequence[int]
    sampling: SamplingParams
    echo: bool = False
    suffix: str | None = None
    response_format: dict[str, Any] | None = None
    whole: bool = False  # as ChatParams.whole


@dataclass(frozen=True)
class TopLogprob:
    """One candidate token and its log-probability."""

    token: str
    logprob: float
    bytes: list[int] | None = None


@dataclass(frozen=True)
class TokenLogprob:
    """The sampled token, its log-probability and the best alternatives."""

    token: str
    logprob: float
    bytes: list[int] | None = None
    top: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True)
class ToolCall:
    """A call the model made to one of the given tools; ``arguments`` is a JSON string."""

    id: str
    name: str
    arguments: str


@dataclass
class Delta:
    """One step of a generation stream.

    Text arrives in ``text``; the last delta of a stream carries
    ``finish_reason`` and ``usage`` (and ``tool_calls`` when the model called
    tools; tool calls are only ever reported whole, on the last delta).
    """

    text: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage | None = None


@dataclass(frozen=True)
class Usage:
    """Token counts of one call."""

    prompt_tokens: int
    completion_tokens: int
    # Prompt tokens found already computed (a prefix cache), not read again.
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class EngineStat:
    """One number an engine exports: ``intramuros_engine_<name>{model=..., <labels>}``.

    A name always comes with the same label names.
    """

    name: str
    kind: Literal["counter", "gauge"]
    help: str
    value: float
    labels: tuple[tuple[str, str], ...] = ()


@dataclass
class Generation:
    """A whole generation, as returned by :meth:`Engine.generate`."""

    text: str
    finish_reason: FinishReason
    usage: Usage
    logprobs: list[TokenLogprob] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)


@dataclass(frozen=True)
class EmbeddingResult:
    """Vectors (one per input, in input order) and the tokens they consumed."""

    vectors: list[list[float]]
    prompt_tokens: int


class Engine(abc.ABC):
    """Base class of every engine plug-in.

    Subclasses set ``name`` (the plug-in name used in the catalogue and in the
    ``intramuros.engines`` entry-point group) and implement the abstract
    methods; capabilities they lack keep the default, which raises
    ``ModelCapabilityError``.

    ``max_concurrency`` is how many calls the serving layer lets run at once
    on one engine instance (1 for an in-process model; more for an upstream
    server that batches); an instance may say otherwise (``concurrency``).
    """

    name: ClassVar[str]
    max_concurrency: ClassVar[int] = 1
    # False for engines that cannot count tokens locally (an upstream server):
    # the serving layer then leaves context-window checks to the engine.
    counts_tokens: ClassVar[bool] = True

    # -- what the catalogue records for a model of this engine ----------------
    # (``intramuros models add --engine NAME [PATH] --option key=value ...``;
    # ``intramuros models engines`` lists them; docs/plugins.md)

    # The options a model of this engine takes: a pydantic model whose fields are
    # the option keys (forbid extra keys); None: it takes none. Options that are
    # URLs (pydantic ``AnyUrl``, ``HttpUrl``...) name the hosts the engine may
    # reach: the egress guard allows exactly those (see ``egress_hosts``).
    options_model: ClassVar[type[BaseModel] | None] = None
    # PATH: "none" (no local weights), "file" (the weights file) or "directory"
    # (a folder: ``weights_file`` inside it is the weights; ``aux_files`` the other
    # files the engine reads, or, when empty, every other file at its top level).
    # Every file is hashed into the record and re-hashed on each load.
    weights: ClassVar[WeightsKind] = "none"
    weights_file: ClassVar[str | None] = None
    aux_files: ClassVar[tuple[str, ...]] = ()
    weights_format: ClassVar[str] = "remote"
    # What a model of this engine can serve (catalogue capabilities: chat,
    # completion, embeddings, tools, json, transcription, translation, ocr); a
    # model added without --capabilities declares all of them.
    capabilities: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def check_options(cls, given: Mapping[str, Any]) -> dict[str, Any]:
        """``given`` checked against :attr:`options_model`: the options to record.

        Values may be strings (from the command line): the model converts them.
        Returns the options that were given, converted and normalised (JSON
        values). Raises ``InvalidRequest`` naming the option (``param``
        ``options.<key>``) for an unknown key, a missing required one or a bad
        value; the value itself is never echoed.
        """
        from intramuros.errors import InvalidRequest

        if len(given) > MAX_OPTIONS:
            raise InvalidRequest(f"At most {MAX_OPTIONS} options may be given.", param="options")
        for key, value in given.items():
            if not isinstance(key, str) or not 0 < len(key) <= MAX_OPTION_KEY:
                raise InvalidRequest(f"An option name is 1-{MAX_OPTION_KEY} characters.",
                                     param="options")  # fmt: skip
            if isinstance(value, str) and len(value) > MAX_OPTION_VALUE:
                raise InvalidRequest(
                    f"Option '{key}' is over {MAX_OPTION_VALUE} characters.",
                    param=f"options.{key}",
                )
        model = cls.options_model
        if model is None:
            if given:
                key = next(iter(given))
                raise InvalidRequest(f"Engine '{cls.name}' takes no options (got '{key}').",
                                     param=f"options.{key}")  # fmt: skip
            return {}
        try:
            parsed = model.model_validate(dict(given))
        except ValidationError as exc:
            raise _option_error(cls.name, model, exc) from None
        dumped: dict[str, Any] = parsed.model_dump(mode="json", exclude_unset=True)
        return dumped

    @classmethod
    def egress_urls(cls, options: Mapping[str, Any]) -> list[str]:
        """The URLs among a model's options (fields typed as URLs), in field order.

        Options that do not validate give none: such a model reaches nothing
        (and does not load).
        """
        model = cls.options_model
        if model is None:
            return []
        try:
            parsed = model.model_validate(dict(options))
        except ValidationError:
            return []
        return [str(url).rstrip("/") for url in _urls(parsed, 0)]

    @classmethod
    def egress_hosts(cls, options: Mapping[str, Any]) -> frozenset[str]:
        """The hosts a model with these options may connect to.

        The egress guard of the server allows exactly the hosts the models of
        the catalogue declare here (loopback aside). By default: the hosts of
        the URL options. Override to declare others (and keep it cheap: it runs
        at start-up for every model, and at each load).
        """
        model = cls.options_model
        if model is None:
            return frozenset()
        try:
            parsed = model.model_validate(dict(options))
        except ValidationError:
            return frozenset()
        return frozenset(url.host for url in _urls(parsed, 0) if url.host)

    def __init__(self, record: ModelRecord, settings: Settings) -> None:
        self.record = record
        self.settings = settings

    # -- lifecycle -------------------------------------------------------

    @abc.abstractmethod
    def load(self) -> None:
        """Load the model (verify, map weights, connect). Called once, before any call."""

    def with_adapter(self, record: ModelRecord) -> Engine:
        """This loaded engine serving ``record``, an adapter of its model (``record.base``):
        an engine sharing this one's weights; closing it lets the adapter go."""
        raise self._unsupported("adapters")

    @property
    def concurrency(self) -> int:
        """Calls the serving layer lets run at once on this instance."""
        return self.max_concurrency

    def stats(self) -> list[EngineStat]:
        """The engine's own counters and gauges, exported on ``/metrics`` per model."""
        return []

    def health(self) -> bool:
        """True when the engine can take requests now."""
        return True

    def close(self) -> None:  # noqa: B027 - optional hook, default does nothing
        """Release the model's resources. Called once at shutdown or unload."""

    # -- tokens ----------------------------------------------------------

    @property
    def context_length(self) -> int:
        """The context window in tokens."""
        return self.record.context_length

    @property
    def max_token_bytes(self) -> int | None:
        """The most bytes of text one token can stand for, if known.

        A text of ``n`` bytes then takes at least ``n / max_token_bytes`` tokens,
        which refuses a prompt far too long for the context window without the
        cost of tokenising it.
        """
        return None

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes in this model (used for context-window checks)."""
        raise self._unsupported("tokenize")

    def count_chat_tokens(self, params: ChatParams) -> int:
        """Tokens the rendered chat prompt takes (messages, tools, format instructions)."""
        raise self._unsupported("chat")

    def detokenize(self, tokens: Sequence[int]) -> str | None:
        """The text of a prompt given as token ids, for the personal-data scan.

        ``None`` when this engine has no tokenizer to decode them with (the
        gateway then cannot check them); ``InvalidRequest`` (param ``prompt``)
        for an id outside the vocabulary.
        """
        return None

    def chat_training_tokens(self, params: ChatParams) -> tuple[list[int], list[bool]]:
        """A finished conversation as token ids, and which of them a fine-tuned model
        should learn to write (its assistant turns); for engines that can be trained."""
        raise self._unsupported("fine-tuning")

    # -- generation ------------------------------------------------------

    def stream_chat(self, params: ChatParams, cancel: threading.Event) -> Iterator[Delta]:
        """Yield the deltas of a chat completion; stop early once ``cancel`` is set."""
        raise self._unsupported("chat")

    def stream_completion(
        self, params: CompletionParams, cancel: threading.Event
    ) -> Iterator[Delta]:
        """Yield the deltas of a text completion; stop early once ``cancel`` is set."""
        raise self._unsupported("completion")

    def generate_chat(self, params: ChatParams, cancel: threading.Event) -> Generation:
        """A whole chat completion (the stream, gathered)."""
        return gather(self.stream_chat(params, cancel))

    def generate_completion(self, params: CompletionParams, cancel: threading.Event) -> Generation:
        """A whole text completion (the stream, gathered)."""
        return gather(self.stream_completion(params, cancel))

    def embed(self, inputs: Sequence[str | Sequence[int]]) -> EmbeddingResult:
        """Embed each input (text, or token ids of this model's tokenizer)."""
        raise self._unsupported("embeddings")

    # -- speech to text (issue 8; types at the end of this module) ---------

    def transcribe(
        self, audio: Any, params: TranscriptionParams, cancel: threading.Event
    ) -> Iterator[TranscriptionEvent]:
        """Transcribe 16 kHz mono float32 samples: a :class:`TranscriptionStart`, then
        the segments as they are decoded; stop early once ``cancel`` is set."""
        raise self._unsupported("transcription")

    def _unsupported(self, what: str) -> Exception:
        from intramuros.errors import ModelCapabilityError

        return ModelCapabilityError(
            f"Model '{self.record.name}' does not support {what}.", param="model"
        )


def _urls(value: Any, depth: int) -> Iterator[AnyUrl]:
    """The URL values inside a parsed options model (fields, lists, nested models)."""
    if depth > 8:
        return
    if isinstance(value, AnyUrl):
        yield value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _urls(getattr(value, name), depth + 1)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _urls(item, depth + 1)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _urls(item, depth + 1)


def _option_error(engine: str, model: type[BaseModel], exc: ValidationError) -> Exception:
    """The first problem of a ValidationError, as ``InvalidRequest`` naming the option."""
    from intramuros.errors import InvalidRequest

    err = exc.errors(include_url=False, include_input=False)[0]
    key = str(err["loc"][0])[:MAX_OPTION_KEY] if err["loc"] else ""
    if err["type"] == "extra_forbidden":
        known = ", ".join(model.model_fields) or "none"
        reason = f" is not an option of this engine (it takes: {known})"
    elif err["type"] == "missing":
        reason = " is required"
    else:
        reason = ": " + str(err["msg"]).rstrip(".")
    return InvalidRequest(f"Engine '{engine}': option '{key}'{reason}.",
                          param=f"options.{key}" if key else "options")  # fmt: skip


def gather(deltas: Iterator[Delta]) -> Generation:
    """Collect a delta stream into one :class:`Generation`."""
    text: list[str] = []
    logprobs: list[TokenLogprob] = []
    tool_calls: list[ToolCall] = []
    finish: FinishReason = "stop"
    usage = Usage(0, 0)
    for delta in deltas:
        text.append(delta.text)
        logprobs.extend(delta.logprobs)
        tool_calls.extend(delta.tool_calls)
        if delta.finish_reason is not None:
            finish = delta.finish_reason
        if delta.usage is not None:
            usage = delta.usage
    return Generation(
        text="".join(text),
        finish_reason=finish,
        usage=usage,
        logprobs=logprobs,
        tool_calls=tool_calls,
    )


# -- speech to text (issue 8) -------------------------------------------------
# Engines that transcribe take 16 kHz mono float32 samples (decoded and checked
# by the voice workload) and yield a TranscriptionStart, then segments as they
# are decoded.


@dataclass(frozen=True)
class TranscriptionParams:
    """A transcription or translation (into English) request as an engine sees it.

    ``temperature`` 0 means OpenAI's behaviour: start greedy, raise the
    temperature on failed decodes. ``language`` None: detect it.
    """

    task: Literal["transcribe", "translate"] = "transcribe"
    language: str | None = None
    prompt: str | None = None
    temperature: float = 0.0
    word_timestamps: bool = False
    vad: bool = True
    # True when segment times must be exact (subtitles, verbose_json): an engine
    # that batches speech chunks (approximate times) then decodes in order.
    timestamps: bool = False


@dataclass(frozen=True)
class TranscriptWord:
    """One word with its times (seconds) and probability."""

    start: float
    end: float
    word: str
    probability: float


@dataclass(frozen=True)
class TranscriptSegment:
    """One decoded segment, in OpenAI's verbose_json terms."""

    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: tuple[int, ...]
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    temperature: float
    words: tuple[TranscriptWord, ...] = ()


@dataclass(frozen=True)
class TranscriptionStart:
    """First event of a transcription: the language and how much speech there is."""

    language: str
    language_probability: float
    duration: float
    speech_duration: float


# Engine.transcribe yields these (a union: isinstance tells them apart).
TranscriptionEvent = TranscriptionStart | TranscriptSegment
