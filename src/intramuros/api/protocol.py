"""Wire types of the HTTP API: OpenAI's shapes, plus Mistral's spellings.

This module imports no engine or serving code. Requests forbid unknown
fields (as OpenAI's API does: a misspelt parameter is an error, not silently
ignored); parameters we accept but cannot honour are refused by the serving
layer with the parameter named.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

# --------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------


class _Request(BaseModel):
    # strict: "10" is not an integer and "yes" is not a boolean, as in OpenAI's API
    # (integers are still accepted where a float is expected).
    model_config = ConfigDict(extra="forbid", strict=True)


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow")


def _at_most(limit: int, what: str) -> BeforeValidator:
    """Refuse a list or object with more than ``limit`` entries before validating any.

    A pydantic length limit is checked after every item is validated: a
    request with a million stop sequences would cost a second of CPU on the
    event loop before its 400.
    """

    def check(value: Any) -> Any:
        if isinstance(value, list | dict) and len(value) > limit:
            raise ValueError(f"at most {limit} {what} are accepted, got {len(value)}")
        return value

    return BeforeValidator(check)


class StreamOptions(_Request):
    """``stream_options``: ask for a final chunk carrying ``usage``."""

    include_usage: bool = False
    include_obfuscation: bool | None = None


class TextPart(_Request):
    """A text part of a message's content."""

    type: Literal["text"]
    text: str


class ImageURL(_Request):
    """An image reference (we never fetch URLs; data: URIs only, where supported)."""

    url: str
    detail: str | None = None


class ImagePart(_Request):
    """An image part of a message's content."""

    type: Literal["image_url"]
    image_url: ImageURL | str


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]
Content = str | list[ContentPart]


class FunctionCall(_Request):
    """A function call inside an assistant message's ``tool_calls``."""

    name: str
    arguments: str | dict[str, Any] = "{}"


class ToolCallIn(_Request):
    """A tool call the assistant made earlier in the conversation."""

    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall
    index: int | None = None


class SystemMessage(_Request):
    """A system (or developer) instruction."""

    role: Literal["system", "developer"]
    content: Content
    name: str | None = None


class UserMessage(_Request):
    """A user turn."""

    role: Literal["user"]
    content: Content
    name: str | None = None


class AssistantMessage(_Request):
    """An earlier assistant turn (text and/or tool calls)."""

    role: Literal["assistant"]
    content: Content | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    refusal: str | None = None
    prefix: bool = False


class ToolMessage(_Request):
    """The result of a tool call."""

    role: Literal["tool"]
    content: Content
    tool_call_id: str | None = None
    name: str | None = None


Message = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")
]


class FunctionDef(_Request):
    """A function the model may call."""

    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str = ""
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Request):
    """A tool: for now always a function."""

    type: Literal["function"] = "function"
    function: FunctionDef


class NamedFunction(_Request):
    """``{"name": ...}`` inside a forced tool choice."""

    name: str


class NamedToolChoice(_Request):
    """Force a call to one named function."""

    type: Literal["function"] = "function"
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required", "any"] | NamedToolChoice


class JSONSchemaSpec(_Request):
    """``response_format.json_schema``."""

    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)


class ResponseFormat(_Request):
    """``response_format``: text, any JSON object, or JSON following a schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaSpec | None = None


Stop = Annotated[str | list[str] | None, _at_most(16, "stop sequences")]
Tools = Annotated[list[Tool] | None, _at_most(128, "tools")]
LogitBias = Annotated[dict[str, float] | None, _at_most(1024, "logit_bias entries")]
Metadata = Annotated[dict[str, Any] | None, _at_most(64, "metadata keys")]


# --------------------------------------------------------------------------
# Chat completions
# --------------------------------------------------------------------------


class ChatCompletionRequest(_Request):
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


class TopLogprobOut(_Wire):
    """One alternative token."""

    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprobOut(_Wire):
    """The sampled token with its alternatives (chat format)."""

    token: str
    logprob: float
    bytes: list[int] | None = None
    top_logprobs: list[TopLogprobOut] = Field(default_factory=list)


class ChoiceLogprobs(_Wire):
    """``choices[].logprobs`` of a chat completion."""

    content: list[TokenLogprobOut] | None = None
    refusal: list[TokenLogprobOut] | None = None


class FunctionCallOut(_Wire):
    """The function a tool call invokes; ``arguments`` is a JSON string."""

    name: str
    arguments: str


class ToolCallOut(_Wire):
    """A tool call in a response."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCallOut


class ChatMessageOut(_Wire):
    """The assistant's message."""

    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCallOut] | None = None


class ChatChoice(_Wire):
    """One choice of a chat completion."""

    index: int
    message: ChatMessageOut
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None


class Metering(_Wire):
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


class UsageOut(Metering):
    """Token counts, then the call's metering (see ``Metering``)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletionResponse(_Wire):
    """``chat.completion``."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChatChoice]
    usage: UsageOut


class FunctionCallDelta(_Wire):
    """A piece of a streamed tool call."""

    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(_Wire):
    """A streamed tool call (we send each whole, in one delta)."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallDelta | None = None


class ChatDelta(_Wire):
    """What a stream chunk adds to the message."""

    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChatChunkChoice(_Wire):
    """One choice of a stream chunk."""

    index: int
    delta: ChatDelta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(_Wire):
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


class CompletionRequest(_Request):
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


class CompletionLogprobs(_Wire):
    """Legacy completion log-probabilities."""

    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]] | None
    text_offset: list[int]


class CompletionChoice(_Wire):
    """One choice of a text completion."""

    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None


class CompletionResponse(_Wire):
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


class EmbeddingRequest(_Request):
    """``POST /v1/embeddings``."""

    model: str
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    output_dimension: int | None = Field(default=None, ge=1)
    user: str | None = Field(default=None, max_length=200)  # the ledger's subject limit
    metadata: Metadata = None
    output_dtype: str | None = None


class EmbeddingData(_Wire):
    """One vector."""

    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(Metering):
    """Tokens the inputs took, then the call's metering."""

    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(_Wire):
    """A list of vectors (``id`` is Mistral's; OpenAI clients ignore it)."""

    id: str
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------


class ModelCard(_Wire):
    """A model as ``GET /v1/models`` lists it; provenance under ``intramuros``."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    intramuros: dict[str, Any]


class ModelList(_Wire):
    """``GET /v1/models``."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(_Wire):
    """OpenAI's error object."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(_Wire):
    """``{"error": {...}}``."""

    error: ErrorDetail


# --------------------------------------------------------------------------
# Administration and usage
# --------------------------------------------------------------------------


class TenantCreateRequest(_Request):
    """``POST /v1/admin/tenants``."""

    name: str = Field(max_length=64)
    policy: dict[str, Any] | None = None


class PolicyUpdateRequest(_Request):
    """``PATCH /v1/admin/tenants/{name}/policy``: the fields to change, others kept."""

    pii_default: str | None = None
    pii: dict[str, str] | None = None
    store_content: bool | None = None
    retention_days: int | None = None
    limits: dict[str, int | None] | None = None


class KeyCreateRequest(_Request):
    """``POST /v1/admin/keys`` (operator keys are made on the machine, with the CLI)."""

    tenant: str | None = Field(default=None, max_length=64)
    role: Literal["user", "admin"] = "user"
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)
    models: list[str] | None = None
    limits: dict[str, int | None] | None = None
