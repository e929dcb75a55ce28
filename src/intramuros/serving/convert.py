"""From wire requests to engine parameters, refusing what we cannot honour.

Every refusal names the parameter at fault. Mistral's spellings are folded
into OpenAI's here (``random_seed`` -> ``seed``, ``tool_choice: "any"`` ->
``"required"``, ``safe_prompt`` -> Mistral's guardrail system prompt).
"""

from __future__ import annotations

import json
from typing import Any

from intramuros.catalog.records import Capability, ModelRecord
from intramuros.engines.base import ChatParams, CompletionParams, SamplingParams, ToolSpec
from intramuros.engines.prompting import check_json_schema
from intramuros.errors import InvalidRequest, ModelCapabilityError
from intramuros.protocol import openai as p

# Mistral's documented guardrail prompt, prepended when `safe_prompt` is true.
MISTRAL_SAFE_PROMPT = (
    "Always assist with care, respect, and truth. Respond with utmost utility yet securely. "
    "Avoid harmful, unethical, prejudiced, or negative content. Ensure replies promote "
    "fairness and positivity."
)
MAX_STOP_SEQUENCES = 16
# Prompts in one /v1/completions call run one after another on the model:
# a bound keeps one request from holding it for hours.
MAX_PROMPTS = 64


def require(record: ModelRecord, capability: Capability, what: str) -> None:
    """Refuse (400, param ``model``) when the model lacks ``capability``."""
    if not record.has(capability):
        raise ModelCapabilityError(
            f"Model '{record.name}' does not support {what} "
            f"(it supports: {', '.join(record.capabilities) or 'nothing'}).",
            param="model",
        )


def _stop(stop: p.Stop) -> tuple[str, ...]:
    if stop is None:
        return ()
    items = [stop] if isinstance(stop, str) else list(stop)
    if len(items) > MAX_STOP_SEQUENCES:
        raise InvalidRequest(
            f"At most {MAX_STOP_SEQUENCES} stop sequences are allowed.", param="stop"
        )
    return tuple(s for s in items if s)


def _max_tokens(*candidates: tuple[str, int | None]) -> int | None:
    for name, value in candidates:
        if value is not None:
            if value < 1:
                raise InvalidRequest(f"{name} must be at least 1, got {value}.", param=name)
            return value
    return None


def _common_refusals(req: p.ChatCompletionRequest | p.CompletionRequest) -> None:
    if req.n not in (None, 1):
        raise InvalidRequest("Only n=1 is supported.", param="n")
    if req.logit_bias:
        raise InvalidRequest("logit_bias is not supported.", param="logit_bias")
    if req.stream_options is not None and not req.stream:
        raise InvalidRequest(
            "stream_options is only allowed when stream is true.", param="stream_options"
        )


def _response_format(rf: p.ResponseFormat | None, record: ModelRecord) -> dict[str, Any] | None:
    if rf is None or rf.type == "text":
        return None
    require(record, "json", "JSON output (response_format)")
    if rf.type == "json_object":
        return {"type": "json_object"}
    if rf.json_schema is None:
        raise InvalidRequest(
            "response_format of type json_schema needs a json_schema object.",
            param="response_format.json_schema",
        )
    schema = check_json_schema(rf.json_schema.schema_, "response_format.json_schema.schema")
    return {"type": "json_schema", "schema": schema}


# A chat request this small is converted on the event loop: the hop to the CPU pool costs
# more than the work. Bounded: a few messages of plain text, no tools, no schema.
INLINE_MESSAGES = 8
INLINE_TEXT = 4096


def small_chat(req: p.ChatCompletionRequest) -> bool:
    """Whether converting ``req`` is bounded small work (see ``INLINE_TEXT``)."""
    if req.tools or req.response_format is not None or len(req.messages) > INLINE_MESSAGES:
        return False
    total = 0
    for message in req.messages:
        if not isinstance(message.content, str) or getattr(message, "tool_calls", None):
            return False
        total += len(message.content)
    return total <= INLINE_TEXT


def chat_params(req: p.ChatCompletionRequest, record: ModelRecord) -> ChatParams:
    """Validate a chat request against the model and build the engine's parameters."""
    require(record, "chat", "chat completions")
    _common_refusals(req)
    if not req.messages:
        raise InvalidRequest("messages must contain at least one message.", param="messages")
    if req.modalities and set(req.modalities) != {"text"}:
        raise InvalidRequest("Only the text modality is supported.", param="modalities")
    if req.top_logprobs is not None and not req.logprobs:
        raise InvalidRequest("top_logprobs requires logprobs to be true.", param="top_logprobs")
    if req.min_tokens:
        raise InvalidRequest("min_tokens is not supported.", param="min_tokens")
    if req.prompt_logprobs or req.top_prompt_logprobs:
        raise InvalidRequest("Prompt log-probabilities are not supported.",
                             param="prompt_logprobs")  # fmt: skip
    if req.guardrails:
        raise InvalidRequest("Mistral guardrails are not supported; use the gateway's policies.",
                             param="guardrails")  # fmt: skip
    for i, msg in enumerate(req.messages):
        if isinstance(msg, p.AssistantMessage) and msg.prefix:
            raise InvalidRequest(
                "Assistant prefix messages are not supported.", param=f"messages[{i}].prefix"
            )

    tools: list[ToolSpec] = []
    for i, tool in enumerate(req.tools or []):
        schema = tool.function.parameters or {"type": "object", "properties": {}}
        param = f"tools[{i}].function.parameters"
        check_json_schema(schema, param)
        if schema.get("type", "object") != "object":
            raise InvalidRequest("Tool parameters must be a JSON schema of type object.",
                                 param=param)  # fmt: skip
        if any(t.name == tool.function.name for t in tools):
            raise InvalidRequest(f"Duplicate tool name '{tool.function.name}'.",
                                 param=f"tools[{i}].function.name")  # fmt: skip
        tools.append(ToolSpec(tool.function.name, tool.function.description, schema))

    choice = "auto" if tools else "none"
    if isinstance(req.tool_choice, p.NamedToolChoice):
        choice = req.tool_choice.function.name
        if not any(t.name == choice for t in tools):
            raise InvalidRequest(f"tool_choice names '{choice}', which is not in tools.",
                                 param="tool_choice")  # fmt: skip
    elif req.tool_choice is not None:
        choice = "required" if req.tool_choice == "any" else req.tool_choice
        if choice == "required" and not tools:
            raise InvalidRequest("tool_choice requires tools.", param="tool_choice")
    if tools and choice != "none":
        require(record, "tools", "tool calls")

    messages: list[dict[str, Any]] = [m.model_dump(exclude_none=True) for m in req.messages]
    for dumped in messages:
        for call in dumped.get("tool_calls") or []:
            if isinstance(call["function"].get("arguments"), dict):
                call["function"]["arguments"] = json.dumps(call["function"]["arguments"])
    if req.safe_prompt:
        messages.insert(0, {"role": "system", "content": MISTRAL_SAFE_PROMPT})

    sampling = SamplingParams(
        max_tokens=_max_tokens(
            ("max_completion_tokens", req.max_completion_tokens), ("max_tokens", req.max_tokens)
        ),
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        stop=_stop(req.stop),
        seed=req.seed if req.seed is not None else req.random_seed,
        presence_penalty=req.presence_penalty or 0.0,
        frequency_penalty=req.frequency_penalty or 0.0,
        repetition_penalty=req.repetition_penalty or 1.0,
        top_k=req.top_k,
        logprobs=(req.top_logprobs or 0) if req.logprobs else None,
    )
    return ChatParams(
        messages=messages,
        sampling=sampling,
        tools=tuple(tools),
        tool_choice=choice,
        response_format=_response_format(req.response_format, record),
        whole=not req.stream,
    )


def completion_prompts(req: p.CompletionRequest) -> list[str | list[int]]:
    """The prompt(s) of a completion request, one per choice."""
    prompt = req.prompt
    if isinstance(prompt, str):
        return [prompt]
    if not prompt:
        raise InvalidRequest("prompt must not be empty.", param="prompt")
    if all(isinstance(x, int) for x in prompt):
        return [list(prompt)]  # type: ignore[arg-type]
    if len(prompt) > MAX_PROMPTS:
        raise InvalidRequest(
            f"At most {MAX_PROMPTS} prompts per request, got {len(prompt)}.", param="prompt"
        )
    return list(prompt)  # type: ignore[arg-type]


def completion_params(
    req: p.CompletionRequest, record: ModelRecord, prompt: str | list[int]
) -> CompletionParams:
    """Validate a completion request and build the engine's parameters for one prompt."""
    require(record, "completion", "text completions")
    _common_refusals(req)
    if req.best_of not in (None, 1):
        raise InvalidRequest("Only best_of=1 is supported.", param="best_of")
    if isinstance(prompt, list) and not prompt:
        raise InvalidRequest("A token prompt must not be empty.", param="prompt")
    sampling = SamplingParams(
        max_tokens=_max_tokens(("max_tokens", req.max_tokens)),
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        stop=_stop(req.stop),
        seed=req.seed if req.seed is not None else req.random_seed,
        presence_penalty=req.presence_penalty or 0.0,
        frequency_penalty=req.frequency_penalty or 0.0,
        logprobs=req.logprobs,
    )
    return CompletionParams(
        prompt=prompt,
        sampling=sampling,
        echo=req.echo,
        suffix=req.suffix,
        response_format=_response_format(req.response_format, record),
        whole=not req.stream,
    )


def embedding_inputs(req: p.EmbeddingRequest, limit: int) -> list[str | list[int]]:
    """The inputs of an embeddings request, one per vector."""
    if req.output_dtype not in (None, "float"):
        raise InvalidRequest("Only float embeddings are supported.", param="output_dtype")
    raw = req.input
    items: list[str | list[int]]
    if isinstance(raw, str):
        items = [raw]
    elif raw and all(isinstance(x, int) for x in raw):
        items = [list(raw)]  # type: ignore[arg-type]
    else:
        items = list(raw)  # type: ignore[arg-type]
    if not items:
        raise InvalidRequest("input must not be empty.", param="input")
    if len(items) > limit:
        raise InvalidRequest(f"At most {limit} inputs per request, got {len(items)}.",
                             param="input")  # fmt: skip
    for i, item in enumerate(items):
        if isinstance(item, str) and not item:
            raise InvalidRequest("input must not contain empty strings.", param=f"input[{i}]")
        if isinstance(item, list) and not item:
            raise InvalidRequest("input must not contain empty token lists.", param=f"input[{i}]")
    return items


def text_bytes(messages: Any) -> int:
    """Bytes of the messages' texts: every one of them is in the rendered prompt.

    With an engine's longest token, a lower bound of the prompt's tokens, which
    refuses a prompt far too long for the context window without tokenising it.
    """
    total = 0
    for msg in messages:
        content = msg.get("content") if isinstance(msg, dict) else None
        parts = [content] if isinstance(content, str) else [
            part.get("text") for part in content or () if isinstance(part, dict)]
        total += sum(len(t.encode("utf-8", "surrogatepass")) for t in parts if isinstance(t, str))
    return total
