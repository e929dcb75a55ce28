"""A tenant's personal-data policy over a request's named fields (``gate.privacy``,
``gate.request_texts``): which field a value is in, what the model sees, what is kept.

Unit tests of the logic; tests/test_abuse_pii.py runs the same through a real server.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from intramuros.engines.base import ChatParams, SamplingParams, ToolSpec
from intramuros.gate import privacy
from intramuros.gate.policy import TenantPolicy
from intramuros.gate.privacy import PersonalDataBlocked, PersonalDataUnchecked, TextField
from intramuros.gate.request_texts import (
    ChatTexts,
    CompletionTexts,
    EmbeddingTexts,
    chat_size,
    json_leaves,
)

IBAN = "FR76 3000 6000 0112 3456 7890 189"
EMAIL = "jane.roe@example.com"
BLOCK_IBAN = TenantPolicy(pii={"iban": "block"}, store_content=True)
PSEUDO_EMAIL = TenantPolicy(pii={"email": "pseudonymise"}, store_content=True)


def chat(messages: list[dict[str, Any]], **kw: Any) -> ChatTexts:
    params = ChatParams(messages=messages, sampling=SamplingParams(stop=kw.pop("stop", ())),
                        tools=kw.pop("tools", ()), response_format=kw.pop("rf", None))  # fmt: skip
    return ChatTexts(params.messages, params.tools, params.response_format,
                     params.sampling.stop, **kw)  # fmt: skip


def refusal(texts: Any, policy: TenantPolicy, subject: tuple[str, str] | None = None) -> str:
    fields = list(texts.fields)
    if subject:
        fields.append(TextField(subject[0], (subject[1],), "subject"))
    decision = privacy.inspect_fields(fields, policy)
    with pytest.raises((PersonalDataBlocked, PersonalDataUnchecked)) as exc:
        decision.enforce("messages")
    assert exc.value.param is not None
    return exc.value.param


# -- which field -----------------------------------------------------------------------------


def test_every_chat_field_is_named() -> None:
    call = {"id": "call_1", "type": "function",
            "function": {"name": "pay", "arguments": json.dumps({"to": "x"})}}  # fmt: skip
    texts = chat(
        [{"role": "system", "content": "Be brief."},
         {"role": "user", "name": "ann", "content": [{"type": "text", "text": "a"},
                                                      {"type": "image_url",
                                                       "image_url": {"url": "https://x/i.png"}},
                                                      {"type": "image_url", "image_url": {
                                                          "url": "data:image/png;base64,AA"}}]},
         {"role": "assistant", "content": None, "tool_calls": [call], "refusal": "no"},
         {"role": "tool", "tool_call_id": "call_1", "name": "pay", "content": "ok"}],
        tools=(ToolSpec("pay", "Pays.", {"type": "object", "description": "d"}),),
        rf={"type": "json_schema", "schema": {"type": "object"}}, stop=("END",),
        schema_name="r", first_index=-1,
    )  # fmt: skip
    assert [(f.param, f.kind) for f in texts.fields] == [
        ("messages[0].name", "fixed"), ("messages[0].content[0].text", "text"),
        ("messages[0].content[1].image_url.url", "fixed"),
        ("messages[1].refusal", "text"), ("messages[1].tool_calls[0].id", "fixed"),
        ("messages[1].tool_calls[0].function.name", "fixed"),
        ("messages[1].tool_calls[0].function.arguments", "text"),
        ("messages[2].name", "fixed"), ("messages[2].tool_call_id", "fixed"),
        ("messages[2].content", "text"),
        ("tools[0].function.name", "fixed"), ("tools[0].function.description", "text"),
        ("tools[0].function.parameters", "fixed"), ("response_format.json_schema.schema", "fixed"),
        ("response_format.json_schema.name", "fixed"), ("stop", "text"),
    ]  # the gateway's own system prompt (first_index=-1) is not scanned; data: URLs are not
    assert texts.fields[6].pieces == ("to", "x")  # JSON: keys and strings
    assert [f.param for f in texts.fields if f.record] == [
        "messages[0].content[0].text", "messages[1].tool_calls[0].function.arguments",
        "messages[2].content"]  # fmt: skip


@pytest.mark.parametrize("messages,param", [
    ([{"role": "user", "content": "FR76 3000 6000 0112"},
      {"role": "user", "content": "3456 7890 189"}], "messages[0].content"),
    ([{"role": "user", "content": [{"type": "text", "text": "FR76 3000 6000 0112"},
                                   {"type": "text", "text": "3456 7890 189"}]}],
     "messages[0].content[0].text"),
    ([{"role": "user", "content": "Hi"},
      {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {
          "name": "f", "arguments": json.dumps(["FR76 3000 6000 0112", "3456 7890 189"])}}]}],
     "messages[1].tool_calls[0].function.arguments"),
    ([{"role": "user", "content": "Hi"},
      {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {
          "name": "f", "arguments": '{"to": "\\u0046R76 3000 6000 0112 3456 7890 189"}'}}]}],
     "messages[1].tool_calls[0].function.arguments"),
])  # fmt: skip
def test_a_value_cut_across_fields_or_escaped_is_found(messages: list[dict[str, Any]],
                                                        param: str) -> None:  # fmt: skip
    assert refusal(chat(messages), BLOCK_IBAN) == param


def test_the_subject_is_scanned_on_its_own() -> None:
    texts = chat([{"role": "user", "content": "FR76 3000 6000 0112"}])
    # Not joined with the messages: half an IBAN in each is not one.
    decision = privacy.inspect_fields(
        [*texts.fields, TextField("user", ("3456 7890 189",), "subject")], BLOCK_IBAN)
    decision.enforce("messages")
    assert refusal(chat([{"role": "user", "content": "Hi"}]), BLOCK_IBAN,
                   ("metadata.user", IBAN)) == "metadata.user"  # fmt: skip


def test_completion_and_embedding_fields() -> None:
    texts = CompletionTexts(["Hello", [1, 2, 3]], " to " + IBAN, ("x",), lambda t: "decoded")
    assert [(f.param, f.kind) for f in texts.fields] == [
        ("prompt[0]", "text"), ("prompt[1]", "fixed"), ("suffix", "text"), ("stop", "text")]
    assert refusal(texts, BLOCK_IBAN) == "suffix"
    decoded = CompletionTexts([[5, 6]], None, (), lambda t: f"pay {IBAN}")
    assert refusal(decoded, BLOCK_IBAN) == "prompt"
    opaque = EmbeddingTexts(["a", [1, 2]], lambda t: None)
    assert [(f.param, f.kind) for f in opaque.fields] == [("input[0]", "text"),
                                                         ("input[1]", "opaque")]
    # Unreadable token ids pass only under a policy with nothing to block or replace.
    assert refusal(opaque, BLOCK_IBAN) == "input[1]"
    privacy.inspect_fields(opaque.fields, TenantPolicy()).enforce("input")


# -- what the model sees under pseudonymise ----------------------------------------------------


def test_pseudonymised_where_a_placeholder_stands_and_kept_redacted() -> None:
    args = json.dumps({"to": EMAIL, "n": 3, "cc": [EMAIL.replace("@", "\u200b@")]})
    texts = chat(
        [{"role": "user", "content": [{"type": "text", "text": f"Mail {EMAIL}"}]},
         {"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                                               "function": {"name": "mail", "arguments": args}}]},
         {"role": "tool", "tool_call_id": "c", "content": f"sent to {EMAIL}"}],
        tools=(ToolSpec("mail", f"Mails {EMAIL}.", {"type": "object"}),), stop=(f"bye {EMAIL}",),
    )  # fmt: skip
    decision = privacy.inspect_fields(texts.fields, PSEUDO_EMAIL)
    decision.enforce("messages")
    seen = texts.protect(decision)
    assert seen is not None
    assert seen.messages[0]["content"][0]["text"] == "Mail <EMAIL_1>"
    sent = json.loads(seen.messages[1]["tool_calls"][0]["function"]["arguments"])
    assert sent == {"to": "<EMAIL_1>", "n": 3, "cc": ["<EMAIL_2>"]}
    assert seen.messages[2]["content"] == "sent to <EMAIL_1>"
    assert seen.descriptions == ["Mails <EMAIL_1>."] and seen.stop == ("bye <EMAIL_1>",)
    assert texts.fields[0].pieces == (f"Mail {EMAIL}",)  # the request itself is untouched
    assert decision.for_client("Done: <EMAIL_2>") == "Done: " + EMAIL.replace("@", "\u200b@")
    kept = texts.record(decision)
    assert kept[0] == "Mail [EMAIL]"
    assert json.loads(kept[1]) == {"to": "[EMAIL]", "n": 3, "cc": ["[EMAIL]"]}
    assert kept[2] == "sent to [EMAIL]"
    # Nothing found: the model sees the request as sent.
    plain = chat([{"role": "user", "content": "Hi"}])
    assert plain.protect(privacy.inspect_fields(plain.fields, PSEUDO_EMAIL)) is None


def test_a_value_cut_across_messages_gets_one_placeholder_where_it_starts() -> None:
    policy = TenantPolicy(pii={"iban": "pseudonymise"})
    texts = chat([{"role": "user", "content": "To FR76 3000 6000 0112"},
                  {"role": "user", "content": "3456 7890 189 please"}])  # fmt: skip
    decision = privacy.inspect_fields(texts.fields, policy)
    seen = texts.protect(decision)
    assert seen is not None
    assert [m["content"] for m in seen.messages] == ["To <IBAN_1>", " please"]
    assert decision.for_client("<IBAN_1>") == "FR76 3000 6000 0112\n3456 7890 189"


@pytest.mark.parametrize("field,param", [
    ({"tools": (ToolSpec("mail", "Mails.", {"type": "object", "description": EMAIL}),)},
     "tools[0].function.parameters"),
    ({"rf": {"type": "json_schema", "schema": {"type": "object", "default": EMAIL}}},
     "response_format.json_schema.schema"),
    ({"schema_name": EMAIL}, "response_format.json_schema.name"),
])  # fmt: skip
def test_pseudonymise_refuses_a_field_no_placeholder_can_stand_in(field: dict[str, Any],
                                                                  param: str) -> None:  # fmt: skip
    texts = chat([{"role": "user", "content": "Hi"}], **field)
    assert refusal(texts, PSEUDO_EMAIL) == param
    decision = privacy.inspect_fields(texts.fields, PSEUDO_EMAIL)
    assert decision.refused and decision.pseudonymiser is None


def test_block_and_param_order_follow_the_request() -> None:
    policy = TenantPolicy(pii={"iban": "block", "email": "pseudonymise"})
    texts = chat([{"role": "user", "name": EMAIL, "content": "Hi"},
                  {"role": "user", "content": IBAN}])  # fmt: skip
    assert refusal(texts, policy) == "messages[1].content"  # a block names where it is
    texts = chat([{"role": "user", "name": EMAIL, "content": "Hi"}])
    assert refusal(texts, policy) == "messages[0].name"


# -- the subject ---------------------------------------------------------------------------------


def test_subject_kept_in_clear_only_when_it_holds_nothing_personal() -> None:
    from intramuros.ledger.crypto import LedgerKeys

    keys = LedgerKeys({"v1": bytes(32)}, "v1")
    field = TextField("user", (EMAIL,), "subject")
    decision = privacy.inspect_fields([field], PSEUDO_EMAIL, keys=keys)
    assert decision.subject == privacy.subject_digest(EMAIL, keys)
    assert decision.subject.startswith("hmac:") and len(decision.subject) == 69
    unkeyed = privacy.inspect_fields([field], TenantPolicy())  # redact-in-logs
    assert unkeyed.subject is not None and unkeyed.subject.startswith("sha256:")
    assert unkeyed.subject != decision.subject
    allowed = privacy.inspect_fields([field], TenantPolicy(pii={"email": "allow"}))
    assert allowed.subject == EMAIL
    assert privacy.inspect_fields([TextField("user", ("u-42",), "subject")],
                                  PSEUDO_EMAIL).subject == "u-42"  # fmt: skip
    assert privacy.provisional_subject("u-42", keys) == "u-42"
    assert privacy.provisional_subject(EMAIL, keys) == decision.subject
    assert privacy.provisional_subject(None, keys) is None
    # Erasure by subject finds the digest whichever key version made it.
    rotated = LedgerKeys({"v1": bytes(32), "v2": bytes(range(32))}, "v2")
    forms = privacy.subject_digests(EMAIL, rotated)
    assert decision.subject in forms and unkeyed.subject in forms and len(forms) == 3


# -- the API other workloads use -------------------------------------------------------------


def test_inspect_texts_keeps_its_contract() -> None:
    decision = privacy.inspect([f"page one {EMAIL}", f"page two {IBAN}"], PSEUDO_EMAIL)
    assert decision.summary() == {"email": {"count": 1, "action": "pseudonymise"},
                                  "iban": {"count": 1, "action": "redact-in-logs"}}  # fmt: skip
    decision.enforce("document")
    assert decision.for_model(f"to {EMAIL}") == "to <EMAIL_1>"
    assert decision.for_client("<EMAIL_1>") == EMAIL
    assert decision.for_record(f"{EMAIL} {IBAN}") == "[EMAIL] [IBAN]"
    blocked = privacy.inspect(["FR76 3000 6000 0112", "3456 7890 189"], BLOCK_IBAN)
    with pytest.raises(PersonalDataBlocked) as exc:
        blocked.enforce("document")
    assert exc.value.param == "document" and exc.value.code == "personal_data_blocked"
    decision.release()
    assert decision.pseudonymiser is None and decision.summary()


def test_json_leaves_are_walked_without_recursion() -> None:
    deep: Any = "x"
    for _ in range(100):
        deep = [deep]
    assert json_leaves(deep) is None  # too deep: the field is read as one string
    assert json_leaves({"a": [1, True, None, 2.5, {"b": "c"}]}) == ["a", "1", "2.5", "b", "c"]
    texts = chat([{"role": "user", "content": "Hi"},
                  {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {
                      "name": "f", "arguments": json.dumps(deep)}}]}])  # fmt: skip
    assert texts.fields[-1].pieces == (json.dumps(deep),)


def test_chat_size_counts_text_and_calls_structures_large() -> None:
    messages = [{"role": "user", "name": "n" * 1000, "content": "abc"},
                {"role": "user", "content": [{"type": "text", "text": "de"},
                                             {"type": "image_url", "image_url": {"url": "u"}}]}]
    # every string counts: stop, role, name, content; part types, text, URL
    expected = 4 + (4 + 1000 + 3) + (4 + 4 + 2 + 9 + 1)
    assert chat_size(messages, (), False, ["stop", None]) == expected
    assert chat_size([{"content": "a", "tool_calls": [{}]}], (), False) >= 1 << 30
    assert chat_size([], [object()], False) >= 1 << 30


# -- token ids, decoded by the model's tokenizer ------------------------------------------------


@pytest.mark.slow
def test_llamacpp_engine_decodes_token_ids(tmp_path: Any) -> None:
    from intramuros.catalog.catalog import Catalog
    from intramuros.engines.llamacpp import LlamaCppEngine
    from intramuros.errors import InvalidRequest
    from intramuros.settings import Settings
    from intramuros.store.db import Database
    from tests.conftest import CHAT_MODEL

    settings = Settings(data_dir=tmp_path)
    db = Database(settings.resolved_database_url())
    db.migrate()
    catalog = Catalog(db, settings)
    catalog.sync_bundled()
    engine = LlamaCppEngine(catalog.get(CHAT_MODEL), settings)
    engine.load()
    try:
        tokens = list(engine._llm.tokenize(f"Pay {IBAN}".encode(), add_bos=False))
        assert engine.detokenize(tokens) == f"Pay {IBAN}"
        with pytest.raises(InvalidRequest) as exc:
            engine.detokenize([1, 10**9])
        assert exc.value.param == "prompt"
        # Decoding while another thread uses the model is what the server does.
        done = threading.Event()
        worker = threading.Thread(target=lambda: (engine.count_tokens("hello " * 500), done.set()))
        worker.start()
        assert engine.detokenize(tokens[:2])
        worker.join(timeout=30)
        assert done.is_set()
    finally:
        engine.close()
        db.close()
