"""Wire types of the model API: OpenAI's shapes, plus Mistral's spellings.

This module imports nothing of ours but the base classes. Requests forbid unknown
fields (as OpenAI's API does: a misspelt parameter is an error, not silently
ignored); parameters we accept but cannot honour are refused by the serving
layer with the parameter named.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field

from intramuros.protocol.base import Request, Wire, at_most

# --------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------


class StreamOptions(Request):
    """``stream_options``: ask for a final chunk carrying ``usage``."""

    include_usage: bool = False
    include_obfuscation: bool | None = None


class TextPart(Request):
    """A text part of a message's content."""

    type: Literal["text"]
    text: str


class ImageURL(Request):
    """An image reference (we never fetch URLs; data: URIs only, where supported)."""

    url: str
    detail: str | None = None


class ImagePart(Request):
    """An image part of a message's content."""

    type: Literal["image_url"]
    image_url: ImageURL | str


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]
Content = str | list[ContentPart]


class FunctionCall(Request):
    """A function call inside an assistant message's ``tool_calls``."""

    name: str
    arguments: str | dict[str, Any] = "{}"


class ToolCallIn(Request):
    """A tool call the assistant made earlier in the conversation."""

    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall
    index: int | None = None


class SystemMessage(Request):
    """A system (or developer) instruction."""

    role: Literal["system", "developer"]
    content: Content
    name: str | None = None


class UserMessage(Request):
    """A user turn."""

    role: Literal["user"]
    content: Content
    name: str | None = None


class AssistantMessage(Request):
    """An earlier assistant turn (text and/or tool calls)."""

    role: Literal["assistant"]
    content: Content | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    refusal: str | None = None
    prefix: bool = False


class ToolMessage(Request):
    """The result of a tool call."""

    role: Literal["tool"]
    content: Content
    tool_call_id: str | None = None
    name: str | None = None


Message = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")
]


class FunctionDef(Request):
    """A function the model may call."""

    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str = ""
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(Request):
    """A tool: for now always a function."""

    type: Literal["function"] = "function"
    function: FunctionDef


class NamedFunction(Request):
    """``{"name": ...}`` inside a forced tool choice."""

    name: str


class NamedToolChoice(Request):
    """Force a call to one named function."""

    type: Literal["function"] = "function"
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required", "any"] | NamedToolChoice


class JSONSchemaSpec(Request):
    """``response_format.json_schema``."""

    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)


class ResponseFormat(Request):
    """``response_format``: text, any JSON object, or JSON following a schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaSpec | None = None


Stop = Annotated[str | list[str] | None, at_most(16, "stop sequences")]
Tools = Annotated[list[Tool] | None, at_most(128, "tools")]
LogitBias = Annotated[dict[str, float] | None, at_most(1024, "logit_bias entries")]
Metadata = Annotated[dict[str, Any] | None, at_most(64, "metadata keys")]


# --------------------------------------------------------------------------
# Chat completions
# --------------------------------------------------------------------------


class ChatCompletionRequest(Request):
    """``POST /v1/chat/completions`` (OpenAI), with Mistral's spellings accepted."""

    model: str
    messages: list[Message]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    n: int | None = Field(default=None, ge=1, le=128)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: Stop = None
    seed: int | None = None
    random_seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    logit_bias: LogitBias = None
    tools: Tools = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    safe_prompt: bool = False
    top_k: int | None = Field(default=None, ge=0)
    min_tokens: int | None = Field(default=None, ge=0)
    repetition_penalty: float | None = Field(default=None, gt=0.0)
    prompt_logprobs: bool | None = None
    top_prompt_logprobs: int | None = None
    guardrails: list[dict[str, Any]] | None = None
    user: str | None = Field(default=None, max_length=200)  # the ledger's subject limit
    metadata: Metadata = None
    store: bool | None = None
    service_tier: str | None = None
    prediction: dict[str, Any] | None = None
    prompt_mode: str | None = None
    modalities: list[str] | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    reasoning_effort: str | None = None
    verbosity: str | None = None


class TopLogprobOut(Wire):
    """One alternative token."""

    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprobOut(Wire):
    """The sampled token with its alternatives (chat format)."""

    token: str
    logprob: float
    bytes: list[int] | None = None
    top_logprobs: list[TopLogprobOut] = Field(default_factory=list)


class ChoiceLogprobs(Wire):
    """``choices[].logprobs`` of a chat completion."""

    content: list[TokenLogprobOut] | None = None
    refusal: list[TokenLogprobOut] | None = None


class FunctionCallOut(Wire):
    """The function a tool call invokes; ``arguments`` is a JSON string."""

    name: str
    arguments: str


class ToolCallOut(Wire):
    """A tool call in a response."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCallOut


class ChatMessageOut(Wire):
    """The assistant's message."""

    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCallOut] | None = None


class ChatChoice(Wire):
    """One choice of a chat completion."""

    index: int
    message: ChatMessageOut
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None


class Metering(Wire):
    """What one call cost, beyond tokens: extra ``usage`` keys that strict clients ignore.

    ``energy_source`` says how ``energy_joules`` was obtained: ``measured-rapl``
    (Linux powercap counters), ``measured-nvml`` (NVIDIA GPU counters) or
    ``estimated`` (the call's CPU time x the configured watts per core).
    """

    queue_ms: float | None = None
    ttft_ms: float | None = None
    latency_ms: float | None = None
    decode_tokens_per_second: float | None = None
    cpu_seconds: float | None = None
    energy_joules: float | None = None
    energy_source: str | None = None
    cost_eur: float | None = None
    co2e_grams: float | None = None
    # Set when a route (virtual model such as ``auto``) chose the model.
    routing: dict[str, Any] | None = None


class PromptTokensDetails(Wire):
    """``usage.prompt_tokens_details``: of the prompt, how much came from the prefix cache."""

    cached_tokens: int = 0


class UsageOut(Metering):
    """Token counts, then the call's metering (see ``Metering``)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class ChatCompletionResponse(Wire):
    """``chat.completion``."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChatChoice]
    usage: UsageOut


class FunctionCallDelta(Wire):
    """A piece of a streamed tool call."""

    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(Wire):
    """A streamed tool call (we send each whole, in one delta)."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallDelta | None = None


class ChatDelta(Wire):
    """What a stream chunk adds to the message."""

    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChatChunkChoice(Wire):
    """One choice of a stream chunk."""

    index: int
    delta: ChatDelta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(Wire):
    """``chat.completion.chunk``."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChatChunkChoice]
    usage: UsageOut | None = None


# --------------------------------------------------------------------------
# Text completions
# --------------------------------------------------------------------------

Prompt = str | list[str] | list[int] | list[list[int]]


class CompletionRequest(Request):
    """``POST /v1/completions``."""

    model: str
    prompt: Prompt
    max_tokens: int | None = 16
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    n: int | None = Field(default=None, ge=1, le=128)
    best_of: int | None = Field(default=None, ge=1, le=20)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: Stop = None
    seed: int | None = None
    random_seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logprobs: int | None = Field(default=None, ge=0, le=5)
    logit_bias: LogitBias = None
    echo: bool = False
    suffix: str | None = None
    response_format: ResponseFormat | None = None
    user: str | None = Field(default=None, max_length=200)  # the ledger's subject limit
    # Not in OpenAI's legacy completions; accepted as in chat (task tag for routing, user id).
    metadata: Metadata = None


class CompletionLogprobs(Wire):
    """Legacy completion log-probabilities."""

    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]] | None
    text_offset: list[int]


class CompletionChoice(Wire):
    """One choice of a text completion."""

    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None


class CompletionResponse(Wire):
    """``text_completion`` (also each stream chunk)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[CompletionChoice]
    usage: UsageOut | None = None


# --------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------


class EmbeddingRequest(Request):
    """``POST /v1/embeddings``."""

    model: str
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    output_dimension: int | None = Field(default=None, ge=1)
    user: str | None = Field(default=None, max_length=200)  # the ledger's subject limit
    metadata: Metadata = None
    output_dtype: str | None = None


class EmbeddingData(Wire):
    """One vector."""

    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(Metering):
    """Tokens the inputs took, then the call's metering."""

    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(Wire):
    """A list of vectors (``id`` is Mistral's; OpenAI clients ignore it)."""

    id: str
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------


class ModelCapabilities(Wire):
    """What a model can do, as Mistral's model cards say it (``capabilities``)."""

    completion_chat: bool = False
    function_calling: bool = False
    completion_fim: bool = False
    fine_tuning: bool = False
    vision: bool = False
    ocr: bool = False
    classification: bool = False
    audio_transcription: bool = False


class ModelCard(Wire):
    """A model as ``GET /v1/models`` lists it; provenance under ``intramuros``.

    OpenAI's four fields, then Mistral's model card (``type`` ``base``,
    ``capabilities``, ``max_context_length`` ...), so that both official SDKs
    read the listing.
    """

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    type: Literal["base"] = "base"
    name: str | None = None
    description: str | None = None
    max_context_length: int | None = None
    aliases: list[str] = Field(default_factory=list)
    capabilities: ModelCapabilities = Field(default_factory=ModelCapabilities)
    intramuros: dict[str, Any]


class ModelList(Wire):
    """``GET /v1/models``."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(Wire):
    """OpenAI's error object."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(Wire):
    """``{"error": {...}}``."""

    error: ErrorDetail
