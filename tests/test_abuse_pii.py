"""Personal data must not slip past a tenant's policy, nor freeze the server: an attacker's tries.

One real server for the module (auth, a ledger key, an 8 MiB body limit) with the
bundled chat and embedding models and an "echo" upstream model (the stub of
``tests/test_walls.py``) that shows exactly what a model received. Tenants:
acme blocks IBANs; globex pseudonymises e-mail addresses; both keep content
(encrypted), so the ledger shows what was written down. Each evasion and each
field is its own case: a 400 ``personal_data_blocked`` naming the field, a model
that never saw the value, a ledger that never holds it in clear. Requests go
through the official ``openai`` client (fields its signature lacks in
``extra_body``); the freeze test sends its pre-encoded megabytes with httpx.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import (
    CHAT_MODEL,
    EMBED_MODEL,
    Server,
    bundled_file,
    make_keys,
    start_server,
    stop_server,
)
from tests.helpers import cli
from tests.test_walls import EchoUpstream

# Real models or a server process: the slow tier.
pytestmark = pytest.mark.slow

IBAN_FR = "FR76 3000 6000 0112 3456 7890 189"
IBAN_DE = "DE89 3704 0044 0532 0130 00"
IBAN_ES = "ES91 2100 0418 4502 0005 1332"
COMPACT = IBAN_FR.replace(" ", "")
EMAIL = "jane.roe@example.com"


def fullwidth(text: str) -> str:
    """ASCII letters and digits as their full-width forms (what NFKC folds back)."""
    return "".join(chr(ord(c) + 0xFEE0) if c.isascii() and c.isalnum() else c for c in text)


def arabic_digits(text: str) -> str:
    return "".join(chr(0x0660 + int(c)) if c.isdigit() else c for c in text)


@pytest.fixture(scope="module")
def walls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, EchoUpstream]]:
    data = tmp_path_factory.mktemp("abuse-pii")
    key_file = data / "ledger.key"
    subprocess.run([sys.executable, "-m", "intramuros.cli", "ledger", "keygen", str(key_file)],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    env = {"INTRAMUROS_LEDGER_KEY_FILE": str(key_file)}
    stub = EchoUpstream()
    cli(data, "models", "add-upstream", "echo", "--base-url", f"http://127.0.0.1:{stub.port}/v1",
        "--upstream-model", "echo", "--capabilities", "chat,tools,json", env=env)  # fmt: skip
    # an upstream completion model: no tokenizer here to decode token ids with
    cli(data, "models", "add-upstream", "echo-complete", "--base-url",
        f"http://127.0.0.1:{stub.port}/v1", "--upstream-model", "echo",
        "--capabilities", "completion", env=env)  # fmt: skip
    # Policies before the server starts (a running one sees a change within a second).
    keys = make_keys(data, env)
    cli(data, "tenants", "policy", "acme", "--store-content", "--pii", "iban=block", env=env)
    cli(data, "tenants", "policy", "globex", "--store-content", "--pii", "email=pseudonymise",
        env=env)  # fmt: skip
    srv = start_server(data, "--preload-models", f"{CHAT_MODEL},{EMBED_MODEL}",
                       "--max-body-bytes", str(8 * 1024 * 1024), auth=keys, env=env)  # fmt: skip
    srv.keys["globex-admin"] = cli(data, "keys", "create", "--tenant", "globex", "--role", "admin",
                                   env=env).strip()  # fmt: skip
    yield srv, stub
    for c in _clients.values():
        c.close()
    _clients.clear()
    stop_server(srv)
    stub.close()


_clients: dict[tuple[int, str], openai.OpenAI] = {}


def client(srv: Server, who: str = "user") -> openai.OpenAI:
    key = (srv.port, who)
    if key not in _clients:
        _clients[key] = openai.OpenAI(base_url=srv.base_url + "/v1", api_key=srv.keys[who],
                                      max_retries=0, timeout=120)  # fmt: skip
    return _clients[key]


@dataclass
class Answer:
    """What the server answered: the status and the response, or the error object."""

    status: int
    body: Any


def post(srv: Server, path: str, body: dict[str, Any], who: str = "user") -> Answer:
    """``body`` sent with the official openai client (what its signature lacks in extra_body)."""
    c = client(srv, who)
    create: Any = {"/v1/chat/completions": c.chat.completions.create,
                   "/v1/completions": c.completions.create,
                   "/v1/embeddings": c.embeddings.create}[path]  # fmt: skip
    known = inspect.signature(create).parameters
    extra = {k: v for k, v in body.items() if k not in known}
    try:
        r = create(**{k: v for k, v in body.items() if k in known}, extra_body=extra or None)
    except openai.APIStatusError as exc:
        return Answer(exc.status_code, exc.body)
    return Answer(200, r.model_dump())


def last_call(srv: Server, tenant: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The tenant's last model-call record and its (decrypted) content."""
    admin = srv.headers("admin" if tenant == "acme" else "globex-admin")
    rows = httpx.get(srv.base_url + f"/v1/admin/ledger?tenant={tenant}&limit=1000",
                     headers=admin, timeout=30).json()["data"]  # fmt: skip
    record = [r for r in rows if r["kind"] == "model_call"][-1]
    content = None
    if record.get("has_content"):
        content = httpx.get(srv.base_url + f"/v1/admin/ledger/{record['seq']}/content",
                            headers=admin, timeout=30).json()["content"]  # fmt: skip
    return record, content


def assert_blocked(r: Answer, param: str, code: str = "personal_data_blocked") -> None:
    assert r.status == 400, r.body
    err = r.body
    assert err["code"] == code, err
    assert err["param"] == param, err


def assert_refused_and_recorded(srv: Server, stub: EchoUpstream | None, before: int,
                                r: Answer, param: str, *secrets: str) -> None:  # fmt: skip
    assert_blocked(r, param)
    if stub is not None:
        assert len(stub.bodies) == before, "a blocked request never reaches the model"
    record, content = last_call(srv, "acme")
    assert record["data"]["error_code"] == "personal_data_blocked"
    assert content is None
    for secret in secrets:
        assert secret not in json.dumps(record, ensure_ascii=False)


# -- every evasion of an IBAN block ------------------------------------------------------------

EVASIONS = {
    "spaced": IBAN_FR,
    "compact": COMPACT,
    "lower-case": IBAN_FR.lower(),
    "dashes": IBAN_FR.replace(" ", "-"),
    "dots": IBAN_DE.replace(" ", "."),
    "slashes": IBAN_DE.replace(" ", "/"),
    "double-spaces": IBAN_FR.replace(" ", "  "),
    "tabs": IBAN_DE.replace(" ", "\t"),
    "no-break-spaces": IBAN_FR.replace(" ", "\u00a0"),
    "narrow-no-break-spaces": IBAN_DE.replace(" ", "\u202f"),
    "zero-width-spaces": IBAN_FR.replace(" ", "\u200b"),
    "zero-width-between-every-character": "\u200b".join(COMPACT),
    "word-joiners": IBAN_DE.replace(" ", "\u2060"),
    "soft-hyphens": IBAN_FR.replace(" ", "\u00ad"),
    "byte-order-marks": IBAN_DE.replace(" ", "\ufeff"),
    "bidi-override": "\u202e" + IBAN_DE + "\u202c",
    "fullwidth-digits": "FR" + fullwidth(IBAN_FR[2:]),
    "fullwidth-letters-and-digits": fullwidth(IBAN_FR),
    "arabic-indic-digits": arabic_digits(IBAN_DE),
    "cyrillic-country-letter": "\u0415" + IBAN_ES[1:],
    "newline": "FR76 3000 6000\n0112 3456 7890 189",
    "crlf": "FR76 3000 6000\r\n0112 3456 7890 189",
    "newline-in-compact": COMPACT[:12] + "\n" + COMPACT[12:],
    "dashes-and-newline": "FR76-3000-6000-\n0112-3456-7890-189",
}


@pytest.mark.parametrize("written", EVASIONS.values(), ids=EVASIONS.keys())
def test_iban_evasion_is_blocked(walls, written: str) -> None:  # type: ignore[no-untyped-def]
    srv, stub = walls
    before = len(stub.bodies)
    r = post(srv, "/v1/chat/completions", {
        "model": "echo", "messages": [{"role": "user", "content": f"Pay to {written} today."}]})
    assert_refused_and_recorded(srv, stub, before, r, "messages[0].content", written)


@pytest.mark.parametrize("role", ["system", "developer", "user", "assistant"])
def test_iban_in_any_role_is_blocked(walls, role: str) -> None:  # type: ignore[no-untyped-def]
    srv, stub = walls
    before = len(stub.bodies)
    r = post(srv, "/v1/chat/completions", {"model": "echo", "messages": [
        {"role": role, "content": f"Account {IBAN_FR}."}, {"role": "user", "content": "Hi"}]})
    assert_refused_and_recorded(srv, stub, before, r, "messages[0].content")


def test_iban_across_two_messages_is_blocked(walls) -> None:  # type: ignore[no-untyped-def]
    srv, stub = walls
    before = len(stub.bodies)
    r = post(srv, "/v1/chat/completions", {"model": "echo", "messages": [
        {"role": "user", "content": "My IBAN: FR76 3000 6000 0112"},
        {"role": "user", "content": "3456 7890 189"}]})
    assert_refused_and_recorded(srv, stub, before, r, "messages[0].content")


def test_iban_across_two_text_parts_is_blocked(walls) -> None:  # type: ignore[no-untyped-def]
    srv, _ = walls
    # The bundled model: before, its engine glued the parts into the exact IBAN.
    r = post(srv, "/v1/chat/completions", {"model": CHAT_MODEL, "max_tokens": 1, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "IBAN FR76 3000 6000 0112"},
                                     {"type": "text", "text": "3456 7890 189"}]}]})
    assert_refused_and_recorded(srv, None, 0, r, "messages[0].content[0].text")


# -- every field of a chat request ----------------------------------------------------------

def _call(arguments: str, name: str = "pay", call_id: str = "call_1") -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _turns(call: dict[str, Any], tool: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return [{"role": "user", "content": "Pay the invoice."},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            tool or {"role": "tool", "tool_call_id": call["id"], "content": "done"}]  # fmt: skip


_TOOL: dict[str, Any] = {"type": "function", "function": {
    "name": "pay", "description": "Pays an invoice.",
    "parameters": {"type": "object", "properties": {"to": {"type": "string"}}}}}


def _tool(**changes: Any) -> dict[str, Any]:
    function = {**_TOOL["function"], **changes}
    return {"type": "function", "function": function}


ESCAPED = json.dumps({"iban": IBAN_FR}).replace("F", "\\u0046")  # the same JSON, escaped
CHAT_FIELDS: dict[str, tuple[dict[str, Any], str]] = {
    "tool-call-arguments": (
        {"messages": _turns(_call(json.dumps({"to": IBAN_FR, "amount": 12})))},
        "messages[1].tool_calls[0].function.arguments"),
    "tool-call-arguments-json-escaped": (
        {"messages": _turns(_call(ESCAPED))}, "messages[1].tool_calls[0].function.arguments"),
    "tool-call-arguments-split-across-strings": (
        {"messages": _turns(_call(json.dumps(["FR76 3000 6000 0112", "3456 7890 189"])))},
        "messages[1].tool_calls[0].function.arguments"),
    "tool-call-function-name": (
        {"messages": _turns(_call("{}", name=COMPACT))}, "messages[1].tool_calls[0].function.name"),
    "tool-call-id": ({"messages": _turns(_call("{}", call_id=COMPACT))},
                     "messages[1].tool_calls[0].id"),
    "tool-message-name": (
        {"messages": _turns(_call("{}"), {"role": "tool", "tool_call_id": "call_1",
                                          "name": COMPACT, "content": "done"})},
        "messages[2].name"),
    "tool-message-tool-call-id": (
        {"messages": _turns(_call("{}"), {"role": "tool", "tool_call_id": COMPACT,
                                          "content": "done"})},
        "messages[2].tool_call_id"),
    "tool-message-content": (
        {"messages": _turns(_call("{}"), {"role": "tool", "tool_call_id": "call_1",
                                          "content": f"paid from {IBAN_DE}"})},
        "messages[2].content"),
    "message-name": ({"messages": [{"role": "user", "name": COMPACT, "content": "Hello"}]},
                     "messages[0].name"),
    "tool-description": ({"messages": [{"role": "user", "content": "Hi"}],
                          "tools": [_tool(description=f"Pays to {IBAN_FR} only.")]},
                         "tools[0].function.description"),
    "tool-name": ({"messages": [{"role": "user", "content": "Hi"}],
                   "tools": [_tool(name=COMPACT)]}, "tools[0].function.name"),
    "tool-parameters": (
        {"messages": [{"role": "user", "content": "Hi"}], "tools": [_tool(parameters={
            "type": "object", "properties": {"to": {"type": "string", "enum": [IBAN_DE]}}})]},
        "tools[0].function.parameters"),
    "response-format-schema": (
        {"messages": [{"role": "user", "content": "Hi"}], "response_format": {
            "type": "json_schema", "json_schema": {"name": "r", "schema": {
                "type": "object", "description": f"Refund to {IBAN_FR}",
                "properties": {"ok": {"type": "boolean"}}}}}},
        "response_format.json_schema.schema"),
    "response-format-name": (
        {"messages": [{"role": "user", "content": "Hi"}], "response_format": {
            "type": "json_schema", "json_schema": {"name": COMPACT, "schema": {"type": "object"}}}},
        "response_format.json_schema.name"),
    "stop": ({"messages": [{"role": "user", "content": "Hi"}], "stop": ["x", IBAN_FR]}, "stop"),
    "user": ({"messages": [{"role": "user", "content": "Hi"}], "user": IBAN_FR}, "user"),
    "metadata-user": ({"messages": [{"role": "user", "content": "Hi"}],
                       "metadata": {"user": IBAN_FR}}, "metadata.user"),
}  # fmt: skip


@pytest.mark.parametrize("body,param", CHAT_FIELDS.values(), ids=CHAT_FIELDS.keys())
def test_iban_in_any_chat_field_is_blocked(walls, body: dict[str, Any], param: str) -> None:  # type: ignore[no-untyped-def]
    srv, stub = walls
    before = len(stub.bodies)
    r = post(srv, "/v1/chat/completions", {"model": "echo", **body})
    assert_refused_and_recorded(srv, stub, before, r, param, IBAN_FR, COMPACT, IBAN_DE)


def test_the_first_field_holding_it_is_named(walls) -> None:  # type: ignore[no-untyped-def]
    srv, _ = walls
    with pytest.raises(openai.BadRequestError) as exc:
        client(srv).chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "Hi"}], user=IBAN_FR,
            tools=[_tool(description=f"Pays to {IBAN_DE}.")])  # type: ignore[list-item]  # fmt: skip
    err = exc.value.body
    assert isinstance(err, dict) and err["code"] == "personal_data_blocked"
    assert err["param"] == "tools[0].function.description"  # the first field the model reads
    record, _ = last_call(srv, "acme")
    assert record["subject"] is None or IBAN_FR not in record["subject"]


# -- completions and embeddings --------------------------------------------------------------


def _token_ids(*texts: str) -> list[list[int]]:
    """The bundled chat model's token ids of each text (its vocabulary only is loaded)."""
    from llama_cpp import Llama

    vocab = Llama(model_path=str(bundled_file(CHAT_MODEL)), vocab_only=True, verbose=False)
    try:
        return [list(vocab.tokenize(t.encode(), add_bos=False, special=False)) for t in texts]
    finally:
        vocab.close()


OTHER_FIELDS: dict[str, tuple[str, dict[str, Any], str]] = {
    "completion-prompt": ("/v1/completions", {"model": CHAT_MODEL, "prompt": f"IBAN {IBAN_FR}"},
                          "prompt"),
    "completion-second-prompt": ("/v1/completions", {"model": CHAT_MODEL,
                                                     "prompt": ["Hello", f"IBAN {IBAN_DE}"]},
                                 "prompt[1]"),
    "completion-suffix": ("/v1/completions", {"model": CHAT_MODEL, "prompt": "Pay to",
                                              "suffix": f" {IBAN_FR}"}, "suffix"),
    "completion-stop": ("/v1/completions", {"model": CHAT_MODEL, "prompt": "Hi",
                                            "stop": [IBAN_FR]}, "stop"),
    "completion-user": ("/v1/completions", {"model": CHAT_MODEL, "prompt": "Hi",
                                            "user": IBAN_FR}, "user"),
    "embeddings-input": ("/v1/embeddings", {"model": EMBED_MODEL, "input": f"IBAN {IBAN_FR}"},
                         "input"),
    "embeddings-second-input": ("/v1/embeddings", {"model": EMBED_MODEL,
                                                   "input": ["Hello", fullwidth(IBAN_DE)]},
                                "input[1]"),
    "embeddings-metadata-user": ("/v1/embeddings", {"model": EMBED_MODEL, "input": "Hello",
                                                    "metadata": {"user": IBAN_DE}},
                                 "metadata.user"),
}  # fmt: skip


@pytest.mark.parametrize("path,body,param", OTHER_FIELDS.values(), ids=OTHER_FIELDS.keys())
def test_iban_in_completions_and_embeddings_fields_is_blocked(  # type: ignore[no-untyped-def]
    walls, path: str, body: dict[str, Any], param: str
) -> None:
    srv, _ = walls
    r = post(srv, path, {"max_tokens": 1, **body} if "completions" in path else body)
    assert_refused_and_recorded(srv, None, 0, r, param, IBAN_FR, IBAN_DE)


def test_iban_as_token_ids_is_decoded_and_blocked(walls) -> None:  # type: ignore[no-untyped-def]
    srv, _ = walls
    tokens, hello = _token_ids(f"Pay to {IBAN_FR} now", "Hello")
    r = post(srv, "/v1/completions", {"model": CHAT_MODEL, "prompt": tokens, "echo": True,
                                      "max_tokens": 1})  # fmt: skip
    assert_refused_and_recorded(srv, None, 0, r, "prompt", IBAN_FR)
    # In a list of token prompts, the one that holds it is named.
    r = post(srv, "/v1/completions", {"model": CHAT_MODEL, "max_tokens": 1,
                                      "prompt": [hello, tokens]})  # fmt: skip
    assert_refused_and_recorded(srv, None, 0, r, "prompt[1]", IBAN_FR)


def test_token_ids_a_model_cannot_decode_are_refused_under_a_block(walls) -> None:  # type: ignore[no-untyped-def]
    srv, stub = walls
    before = len(stub.bodies)
    r = post(srv, "/v1/completions", {"model": "echo-complete", "prompt": [101, 7592, 102]})
    assert_blocked(r, "prompt", code="personal_data_unchecked")
    assert len(stub.bodies) == before


def test_embedding_token_ids_are_decoded_and_checked(walls) -> None:  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer

    from intramuros.catalog.bundled import find_bundled

    bundled = find_bundled(EMBED_MODEL)
    assert bundled is not None and bundled.package_path() is not None
    weights = bundled.package_path()
    assert weights is not None
    tokenizer = Tokenizer.from_file(str(weights.parent / "tokenizer.json"))
    ids = tokenizer.encode(f"pay {IBAN_FR.lower()} now").ids
    srv, _ = walls
    r = post(srv, "/v1/embeddings", {"model": EMBED_MODEL, "input": [ids[:ids.index(102) + 1]]})
    assert_blocked(r, "input")


# -- redact-in-logs: the ledger never holds an evaded value in clear --------------------------


@pytest.mark.parametrize("written", [fullwidth(EMAIL), EMAIL.replace("@", "\u200b@\u200b"),
                                     EMAIL.replace(".", "\u00ad.")],
                         ids=["fullwidth", "zero-width", "soft-hyphen"])  # fmt: skip
def test_redacted_in_the_ledger_whatever_the_spelling(walls, written: str) -> None:  # type: ignore[no-untyped-def]
    srv, _ = walls  # acme: e-mail addresses are redact-in-logs (the default)
    r = client(srv).chat.completions.create(
        model="echo", messages=[{"role": "user", "content": f"Write to {written} today"}])
    assert written in (r.choices[0].message.content or "")  # the model may see it
    record, content = last_call(srv, "acme")
    assert record["data"]["pii"]["email"]["count"] == 1
    assert content is not None
    kept = json.dumps(content, ensure_ascii=False)
    assert written not in kept and "[EMAIL]" in kept


# -- pseudonymise: placeholders wherever the model reads, real values back ---------------------


def test_pseudonymised_in_every_field_a_placeholder_fits(walls) -> None:  # type: ignore[no-untyped-def]
    srv, stub = walls
    hidden = fullwidth(EMAIL)
    messages = [
        {"role": "user", "content": [{"type": "text", "text": f"Mail {hidden}"},
                                     {"type": "text", "text": f"or {EMAIL}"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            _call(json.dumps({"to": EMAIL, "cc": ["x", EMAIL.replace("@", "\u200b@")]}))]},
        {"role": "tool", "tool_call_id": "call_1", "content": f"sent to {EMAIL}"},
        {"role": "user", "content": f"Again {hidden}, thanks."},
    ]
    r = client(srv, "other").chat.completions.create(
        model="echo", messages=messages, stop=[f"bye {EMAIL}"],  # type: ignore[arg-type]
        tools=[_tool(description=f"Mails {EMAIL}.")], tool_choice="none",  # type: ignore[list-item]
        user=EMAIL)  # fmt: skip
    seen = json.dumps(stub.bodies[-1], ensure_ascii=False)
    for spelling in (EMAIL, hidden, EMAIL.replace("@", "\u200b@"), "jane.roe", fullwidth("jane")):
        assert spelling not in seen, spelling
    body = stub.bodies[-1]
    assert body["messages"][0]["content"][0]["text"] == "Mail <EMAIL_1>"
    assert body["messages"][0]["content"][1]["text"] == "or <EMAIL_2>"
    arguments = json.loads(body["messages"][1]["tool_calls"][0]["function"]["arguments"])
    assert arguments == {"to": "<EMAIL_2>", "cc": ["x", "<EMAIL_3>"]}
    assert body["messages"][2]["content"] == "sent to <EMAIL_2>"
    assert body["tools"][0]["function"]["description"] == "Mails <EMAIL_2>."
    assert body["stop"] == ["bye <EMAIL_2>"]
    # The answer (the echo of the last message) comes back with the original spelling.
    assert r.choices[0].message.content == f"You wrote: Again {hidden}, thanks."
    record, content = last_call(srv, "globex")
    assert record["subject"].startswith("hmac:") and EMAIL not in record["subject"]
    assert record["data"]["pii"]["email"] == {"count": 9, "action": "pseudonymise"}
    assert content is not None
    kept = json.dumps(content, ensure_ascii=False)
    for spelling in (EMAIL, hidden, "jane.roe", fullwidth("jane")):
        assert spelling not in kept, spelling
    assert content["prompt"][0] == "Mail [EMAIL]"
    assert json.loads(content["prompt"][2]) == {"to": "[EMAIL]", "cc": ["x", "[EMAIL]"]}


def test_pseudonymised_streaming_restores_the_original_spelling(walls) -> None:  # type: ignore[no-untyped-def]
    srv, stub = walls
    hidden = EMAIL.replace("@", "\u200b@\u200b")
    chunks = list(client(srv, "other").chat.completions.create(
        model="echo", messages=[{"role": "user", "content": f"I am {hidden}"}], stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"You wrote: I am {hidden}"
    assert stub.bodies[-1]["messages"][-1]["content"] == "I am <EMAIL_1>"


PLACEHOLDER_CANNOT_STAND: dict[str, tuple[dict[str, Any], str]] = {
    "tool-parameters": ({"messages": [{"role": "user", "content": "Hi"}], "tools": [_tool(
        parameters={"type": "object", "properties": {"to": {"type": "string",
                                                            "default": EMAIL}}})]},
                        "tools[0].function.parameters"),
    "tool-message-name": ({"messages": _turns(_call("{}"), {
        "role": "tool", "tool_call_id": "call_1", "name": EMAIL, "content": "ok"})},
                          "messages[2].name"),
    "response-format-schema": ({"messages": [{"role": "user", "content": "Hi"}],
                                "response_format": {"type": "json_schema", "json_schema": {
                                    "name": "r", "schema": {"type": "object",
                                                            "description": EMAIL}}}},
                               "response_format.json_schema.schema"),
}  # fmt: skip


@pytest.mark.parametrize("body,param", PLACEHOLDER_CANNOT_STAND.values(),
                         ids=PLACEHOLDER_CANNOT_STAND.keys())  # fmt: skip
def test_pseudonymise_refuses_fields_a_placeholder_cannot_stand_in(  # type: ignore[no-untyped-def]
    walls, body: dict[str, Any], param: str
) -> None:
    srv, stub = walls
    before = len(stub.bodies)
    r = post(srv, "/v1/chat/completions", {"model": "echo", **body}, "other")
    assert_blocked(r, param)
    assert len(stub.bodies) == before
    record, content = last_call(srv, "globex")
    assert record["data"]["error_code"] == "personal_data_blocked" and content is None


def test_metadata_user_with_an_address_is_kept_as_a_digest(walls) -> None:  # type: ignore[no-untyped-def]
    srv, _ = walls
    r = post(srv, "/v1/chat/completions", {"model": "echo", "metadata": {"user": EMAIL},
                                           "messages": [{"role": "user", "content": "Hi"}]},
             "other")  # fmt: skip
    assert r.status == 200, r.body
    record, _ = last_call(srv, "globex")
    assert record["subject"].startswith("hmac:") and len(record["subject"]) == 5 + 64
    r = post(srv, "/v1/chat/completions", {"model": "echo", "metadata": {"user": "u-42"},
                                           "messages": [{"role": "user", "content": "Hi"}]},
             "other")  # fmt: skip
    assert last_call(srv, "globex")[0]["subject"] == "u-42"  # an id without personal data


# -- one request must not freeze the server ---------------------------------------------------


def test_many_distinct_addresses_do_not_freeze_the_server(walls) -> None:  # type: ignore[no-untyped-def]
    """Megabytes of distinct addresses under pseudonymise: /healthz answers within 100 ms.

    Before, the pseudonymiser looked for each new placeholder in the whole text,
    on the event loop: 504 KiB froze the server for 6 s, 7 MB for a quarter of an hour.
    """
    srv, _ = walls

    def body(count: int) -> bytes:
        addresses = " ".join(f"user{i}@example.com" for i in range(count))
        return json.dumps({"model": CHAT_MODEL, "max_tokens": 1,
                           "messages": [{"role": "user", "content": addresses}]}).encode()

    def send(raw: bytes) -> httpx.Response:
        headers = {**srv.headers("other"), "content-type": "application/json"}
        return httpx.post(srv.base_url + "/v1/chat/completions", content=raw, headers=headers,
                          timeout=120)  # fmt: skip

    # A first, smaller one: the interpreter's first full garbage collection after
    # start-up (a pause of its own, whatever the request) happens here.
    assert send(body(50_000)).status_code in (200, 400)
    raw = body(200_000)  # about 4 MB, encoded before the clock starts
    outcome: dict[str, Any] = {}

    def attack() -> None:
        try:
            outcome["response"] = send(raw)
        except httpx.HTTPError as exc:  # a frozen server: the client gives up
            outcome["error"] = exc

    latencies: list[float] = []
    attacker = threading.Thread(target=attack)
    with httpx.Client(base_url=srv.base_url, timeout=10) as probe:
        probe.get("/healthz")
        attacker.start()
        deadline = time.monotonic() + 150
        while attacker.is_alive() and time.monotonic() < deadline:
            t0 = time.perf_counter()
            try:
                probe.get("/healthz").raise_for_status()
                latencies.append(time.perf_counter() - t0)
            except httpx.HTTPError:
                latencies.append(float("inf"))
            time.sleep(0.02)
    attacker.join(timeout=5)
    assert "error" not in outcome and "response" in outcome, "the request did not end in time"
    response = outcome["response"]
    assert response.status_code in (200, 400), response.text[:500]
    if response.status_code == 400:
        assert response.json()["error"]["code"] == "context_length_exceeded"
    assert len(latencies) >= 5
    slow = [round(x, 3) for x in latencies if x > 0.1]
    assert not slow, f"/healthz took over 100 ms {len(slow)} times of {len(latencies)}: {slow[:10]}"
