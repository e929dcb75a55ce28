"""End to end: the official `mistralai` client, with Mistral's own spellings."""

from __future__ import annotations

import json
import math

import jsonschema
import pytest

from intramuros.serving.convert import MISTRAL_SAFE_PROMPT
from tests.conftest import CHAT_MODEL, EMBED_MODEL, Server

# Real models or a server process: the slow tier.
pytestmark = pytest.mark.slow

TOOL = {
    "type": "function",
    "function": {
        "name": "convert_currency",
        "description": "Convert an amount between currencies.",
        "parameters": {
            "type": "object",
            "properties": {
                "amount": {"type": "number"},
                "from_currency": {"type": "string", "enum": ["EUR", "USD", "CHF"]},
                "to_currency": {"type": "string", "enum": ["EUR", "USD", "CHF"]},
            },
            "required": ["amount", "from_currency", "to_currency"],
        },
    },
}


@pytest.fixture()
def mistral(server: Server):  # type: ignore[no-untyped-def]
    from mistralai.client import Mistral

    with Mistral(api_key=server.keys["user"], server_url=server.base_url) as client:
        yield client


def test_mistral_chat_random_seed(mistral) -> None:  # type: ignore[no-untyped-def]
    def run() -> str:
        r = mistral.chat.complete(
            model=CHAT_MODEL, messages=[{"role": "user", "content": "Name a fruit."}],
            max_tokens=10, temperature=0.9, random_seed=42,
        )  # fmt: skip
        return str(r.choices[0].message.content)

    first = run()
    assert first and first == run()


def test_mistral_safe_prompt_is_applied(mistral) -> None:  # type: ignore[no-untyped-def]
    plain = mistral.chat.complete(model=CHAT_MODEL, max_tokens=4,
                                  messages=[{"role": "user", "content": "Hello"}])  # fmt: skip
    safe = mistral.chat.complete(model=CHAT_MODEL, max_tokens=4, safe_prompt=True,
                                 messages=[{"role": "user", "content": "Hello"}])  # fmt: skip
    explicit = mistral.chat.complete(model=CHAT_MODEL, max_tokens=4, messages=[
        {"role": "system", "content": MISTRAL_SAFE_PROMPT},
        {"role": "user", "content": "Hello"}])  # fmt: skip
    # the guardrail prompt is really in the prompt, exactly as a system message
    assert safe.usage.prompt_tokens == explicit.usage.prompt_tokens
    assert safe.usage.prompt_tokens != plain.usage.prompt_tokens


def test_mistral_tool_choice_any(mistral) -> None:  # type: ignore[no-untyped-def]
    r = mistral.chat.complete(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "How much is 100 EUR in CHF?"}],
        tools=[TOOL], tool_choice="any", max_tokens=80,
    )  # fmt: skip
    calls = r.choices[0].message.tool_calls
    assert r.choices[0].finish_reason == "tool_calls"
    assert calls and calls[0].function.name == "convert_currency"
    args = calls[0].function.arguments
    args = json.loads(args) if isinstance(args, str) else args
    jsonschema.validate(args, TOOL["function"]["parameters"])  # type: ignore[index]


def test_mistral_response_format_json_schema(mistral) -> None:  # type: ignore[no-untyped-def]
    schema = {
        "type": "object",
        "properties": {"iban": {"type": "string", "maxLength": 34},
                       "amount": {"type": "number"}},
        "required": ["iban", "amount"],
        "additionalProperties": False,
    }  # fmt: skip
    r = mistral.chat.complete(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Pay 12.50 to FR7630006000011234567890189."}],
        response_format={"type": "json_schema",
                         "json_schema": {"name": "payment", "schema": schema, "strict": True}},
        max_tokens=80, temperature=0,
    )  # fmt: skip
    jsonschema.validate(json.loads(str(r.choices[0].message.content)), schema)


def test_mistral_stream(mistral) -> None:  # type: ignore[no-untyped-def]
    events = list(mistral.chat.stream(model=CHAT_MODEL, max_tokens=8,
                                      messages=[{"role": "user", "content": "Hi"}]))  # fmt: skip
    text = "".join(str(e.data.choices[0].delta.content or "") for e in events if e.data.choices)
    assert text


def test_mistral_embeddings(mistral) -> None:  # type: ignore[no-untyped-def]
    r = mistral.embeddings.create(model=EMBED_MODEL, inputs=["bonjour", "hello"])
    assert len(r.data) == 2 and len(r.data[0].embedding) == 384
    norm = math.sqrt(sum(x * x for x in r.data[0].embedding))
    assert math.isclose(norm, 1.0, rel_tol=1e-4)


def test_mistral_lists_and_retrieves_models(mistral, server: Server) -> None:  # type: ignore[no-untyped-def]
    listing = mistral.models.list()
    cards = {m.id: m for m in listing.data or []}
    # Parsed as Mistral's base model cards, not as the SDK's "unknown" fallback.
    assert type(cards[CHAT_MODEL]).__name__ == "BaseModelCard"
    chat = cards[CHAT_MODEL]
    assert chat.type == "base"
    assert chat.capabilities.completion_chat is True
    assert chat.max_context_length and chat.max_context_length >= 2048
    embed = cards[EMBED_MODEL]
    assert embed.capabilities.completion_chat is False
    one = mistral.models.retrieve(model_id=CHAT_MODEL)
    assert one.id == CHAT_MODEL and type(one).__name__ == "BaseModelCard"
    # The same listing through OpenAI's client, in the same run.
    import openai

    oai = openai.OpenAI(api_key=server.keys["user"], base_url=f"{server.base_url}/v1")
    assert {m.id for m in oai.models.list().data} == set(cards)
