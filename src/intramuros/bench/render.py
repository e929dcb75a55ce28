"""Turn a suite item into a request for a model, by what the model can do.

A chat model gets the item's messages as they are. A completion-only model
(a base model without a chat template, such as Gemma 3 270M) gets a plain-text
few-shot prompt rendered from the same messages: the system turn as the
instruction, earlier user/assistant pairs as worked examples, the last user
turn as the open question. JSON items keep their ``response_format``, which
``/v1/completions`` honours with the same grammar-constrained decoding.
"""

from __future__ import annotations

from typing import Any

from intramuros.bench.suite import Item

INPUT, OUTPUT = "Input:", "Output:"
# Plain-text answers end at the end of their line or where the model starts
# inventing the next example.
TEXT_STOPS = ("\n", INPUT)


def render_prompt(messages: tuple[dict[str, str], ...]) -> str:
    """The few-shot text prompt for a completion model."""
    parts: list[str] = []
    for msg in messages:
        content = msg["content"].strip()
        if msg["role"] == "system":
            parts.append(content + "\n")
        elif msg["role"] == "user":
            parts.append(f"{INPUT} {content}\n{OUTPUT}")
        else:
            parts[-1:] = [(parts[-1] if parts else f"{OUTPUT}") + f" {content}\n"]
    return "\n".join(parts)


def chat_body(model: str, item: Item, seed: int) -> dict[str, Any]:
    """The /v1/chat/completions body for ``item``."""
    messages = list(item.messages or ({"role": "user", "content": item.prompt or ""},))
    body: dict[str, Any] = {
        "model": model, "messages": messages, "max_tokens": item.max_tokens,
        "temperature": 0.0, "seed": seed,
    }  # fmt: skip
    if item.response_format is not None:
        body["response_format"] = item.response_format
    if item.stop:
        body["stop"] = list(item.stop)
    return body


def completion_body(model: str, item: Item, seed: int) -> dict[str, Any]:
    """The /v1/completions body for ``item`` (messages rendered as a few-shot prompt)."""
    prompt = item.prompt if item.prompt is not None else render_prompt(item.messages or ())
    body: dict[str, Any] = {
        "model": model, "prompt": prompt, "max_tokens": item.max_tokens,
        "temperature": 0.0, "seed": seed,
    }  # fmt: skip
    structured = item.response_format is not None and item.response_format["type"] != "text"
    if item.response_format is not None:
        body["response_format"] = item.response_format
    stops = list(item.stop) or ([] if structured or item.prompt is not None else list(TEXT_STOPS))
    if stops:
        body["stop"] = stops
    return body
