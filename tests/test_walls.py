"""The walls end to end: personal-data policies, the ledger, erasure, through a real server.

An "echo" model served by a loopback stub upstream repeats what it was sent,
so the test can see exactly what the model saw (placeholders, not personal
data) and what the client got back (the real values, streaming included).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from intramuros.ledger import verify_export
from tests.conftest import Server, cli, free_port, make_keys, start_server, stop_server

# Real models or a server process: the slow tier.
pytestmark = pytest.mark.slow

EMAIL = "alice.martin@example.com"
PHONE = "+33 6 12 34 56 78"
# The server reads a tenant's policy again after this many seconds (its cache).
POLICY_CACHE_SECONDS = 1.1
IBAN = "FR76 3000 6000 0112 3456 7890 189"


class EchoUpstream:
    """An OpenAI-compatible stub that answers 'You wrote: <last user message>'."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._json({"object": "list", "data": [{"id": "echo", "object": "model"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.bodies.append(body)
                text = "You wrote: " + str(body["messages"][-1]["content"])
                usage = {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
                if not body.get("stream"):
                    self._json({"id": "x", "object": "chat.completion", "created": 0,
                                "model": "echo", "usage": usage, "choices": [{
                                    "index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": text}}]})
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                # three characters a chunk: placeholders arrive cut in pieces
                for i in range(0, len(text), 3):
                    self._event({"choices": [{"index": 0, "delta": {"content": text[i:i + 3]},
                                              "finish_reason": None}]})
                self._event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                self._event({"choices": [], "usage": usage})
                self.wfile.write(b"data: [DONE]\n\n")

            def _event(self, obj: dict[str, Any]) -> None:
                self.wfile.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
                self.wfile.flush()

            def _json(self, obj: dict[str, Any]) -> None:
                data = json.dumps(obj).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.port = free_port()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def walls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, EchoUpstream, Path]]:
    data = tmp_path_factory.mktemp("walls")
    key_file = data / "ledger.key"
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "intramuros.cli", "ledger", "keygen", str(key_file)],
                   check=True, capture_output=True, timeout=60)
    # The server keys the chain: every command on its data needs the key too.
    env = pytest.MonkeyPatch()
    env.setenv("INTRAMUROS_LEDGER_KEY_FILE", str(key_file))
    stub = EchoUpstream()
    cli(data, "models", "add-upstream", "echo", "--base-url", f"http://127.0.0.1:{stub.port}/v1",
        "--upstream-model", "echo", "--capabilities", "chat")
    # The policy is set before the server starts: a running server sees a change within
    # its policy cache's second, and its retention pass at start-up reads (and caches) it.
    keys = make_keys(data)
    cli(data, "tenants", "policy", "acme", "--store-content", "--pii", "email=pseudonymise",
        "--pii", "iban=block")
    srv = start_server(data, "--preload-models", "", "--ledger-key-file", str(key_file),
                       auth=keys)
    yield srv, stub, key_file
    for c in _clients.values():
        c.close()
    _clients.clear()
    stop_server(srv)
    stub.close()
    env.undo()


_clients: dict[tuple[int, str], openai.OpenAI] = {}


def client(srv: Server, who: str = "user") -> openai.OpenAI:
    """One client per server and key, closed when the module's server stops."""
    key = (srv.port, who)
    if key not in _clients:
        _clients[key] = openai.OpenAI(base_url=srv.base_url + "/v1", api_key=srv.keys[who],
                                      max_retries=0)  # fmt: skip
    return _clients[key]


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_pseudonymise_model_sees_placeholders_client_gets_values(walls) -> None:  # type: ignore[no-untyped-def]
    srv, stub, _ = walls
    prompt = f"Mail {EMAIL} or call {PHONE}, mail {EMAIL} again."
    r = client(srv).chat.completions.create(model="echo", messages=ask(prompt))  # type: ignore[arg-type]
    seen = stub.bodies[-1]["messages"][-1]["content"]
    assert EMAIL not in seen and seen.count("<EMAIL_1>") == 2
    assert PHONE in seen  # redact-in-logs: the model may see it
    assert r.choices[0].message.content == "You wrote: " + prompt
    chunks = list(client(srv).chat.completions.create(
        model="echo", messages=ask(prompt), stream=True))  # type: ignore[arg-type]  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "You wrote: " + prompt
    assert EMAIL not in stub.bodies[-1]["messages"][-1]["content"]


def test_block_lists_the_categories(walls) -> None:  # type: ignore[no-untyped-def]
    srv, stub, _ = walls
    before = len(stub.bodies)
    with pytest.raises(openai.BadRequestError) as exc:
        client(srv).chat.completions.create(model="echo", messages=ask(f"Pay {IBAN} now"))  # type: ignore[arg-type]
    err = exc.value.body
    assert isinstance(err, dict) and err["code"] == "personal_data_blocked"
    assert "iban" in err["message"] and IBAN not in err["message"]
    assert err["param"] == "messages[0].content"  # the field where it was found
    assert len(stub.bodies) == before, "a blocked request never reaches the model"
    # another tenant, default policy: not blocked, the model sees it, logs do not
    r = client(srv, "other").chat.completions.create(model="echo", messages=ask(f"Pay {IBAN}"))  # type: ignore[arg-type]
    assert IBAN in (r.choices[0].message.content or "")


def test_ledger_records_decisions_and_redacted_encrypted_content(walls) -> None:  # type: ignore[no-untyped-def]
    srv, _, _ = walls
    client(srv).chat.completions.create(
        model="echo", messages=ask(f"I am {EMAIL}, phone {PHONE}"), user="u-7")  # type: ignore[arg-type]  # fmt: skip
    admin = srv.headers("admin")
    rows = httpx.get(srv.base_url + "/v1/admin/ledger?tenant=acme&limit=1000",
                     headers=admin).json()["data"]  # fmt: skip
    calls = [r for r in rows if r["kind"] == "model_call" and r["subject"] == "u-7"]
    assert calls, rows
    rec = calls[-1]
    assert rec["data"]["pii"] == {"email": {"count": 1, "action": "pseudonymise"},
                                  "phone": {"count": 1, "action": "redact-in-logs"}}
    assert rec["data"]["model"] == "echo" and rec["key_id"] and rec["has_content"]
    content = httpx.get(srv.base_url + f"/v1/admin/ledger/{rec['seq']}/content",
                        headers=admin).json()["content"]  # fmt: skip
    assert content["prompt"] == ["I am [EMAIL], phone [PHONE]"]
    assert content["output"] == "You wrote: I am [EMAIL], phone [PHONE]"
    # user keys cannot read the ledger
    r = httpx.get(srv.base_url + f"/v1/admin/ledger/{rec['seq']}/content", headers=srv.headers())
    assert r.status_code == 403
    # the whole chain spans every tenant: an operator's to verify
    assert httpx.get(srv.base_url + "/v1/admin/ledger/verify", headers=admin).status_code == 403
    assert httpx.get(srv.base_url + "/v1/admin/ledger/verify",
                     headers=srv.headers("operator")).json()["ok"]  # fmt: skip


def test_nothing_personal_in_database_logs_or_metrics(walls) -> None:  # type: ignore[no-untyped-def]
    srv, _, _ = walls
    metrics = httpx.get(srv.base_url + "/metrics").text
    blobs = {"metrics": metrics.encode(), "log": srv.log.read_bytes()}
    for f in srv.data_dir.glob("intramuros.db*"):
        blobs[f.name] = f.read_bytes()
    for value in (EMAIL, PHONE, IBAN, "alice.martin"):
        for name, blob in blobs.items():
            assert value.encode() not in blob, f"{value!r} found in {name}"


def test_admin_actions_are_in_the_ledger(walls) -> None:  # type: ignore[no-untyped-def]
    srv, _, _ = walls
    admin = srv.headers("operator")
    made = httpx.post(srv.base_url + "/v1/admin/keys", headers=admin, json={"tenant": "globex"})
    rows = httpx.get(srv.base_url + "/v1/admin/ledger?limit=1000", headers=admin).json()["data"]
    actions = [(r["data"]["action"], r["data"].get("key_id")) for r in rows if r["kind"] == "admin"]
    assert ("key_create", made.json()["id"]) in actions
    assert any(a == "tenant_policy" for a, _ in actions)  # from the CLI


def test_erasure_keeps_the_chain(walls) -> None:  # type: ignore[no-untyped-def]
    srv, _, key_file = walls
    marker = "subject-secret-marker-91"
    client(srv).chat.completions.create(
        model="echo", messages=ask(marker), metadata={"user": "u-erase"})  # type: ignore[arg-type]  # fmt: skip
    admin = srv.headers("admin")
    rows = httpx.get(srv.base_url + "/v1/admin/ledger?tenant=acme&limit=1000",
                     headers=admin).json()["data"]  # fmt: skip
    seq = [r for r in rows if r["subject"] == "u-erase"][-1]["seq"]
    content = httpx.get(srv.base_url + f"/v1/admin/ledger/{seq}/content", headers=admin).json()
    assert content["content"]["prompt"] == [marker]
    out = cli(srv.data_dir, "erase", "--tenant", "acme", "--subject", "u-erase",
              "--ledger-key-file", str(key_file))  # fmt: skip
    assert "1 record" in out
    after = httpx.get(srv.base_url + f"/v1/admin/ledger/{seq}/content", headers=admin).json()
    assert after["content"] is None
    rows = httpx.get(srv.base_url + "/v1/admin/ledger?tenant=acme&limit=1000",
                     headers=admin).json()["data"]  # fmt: skip
    tomb = [r for r in rows if r["kind"] == "erasure"][-1]
    assert tomb["subject"] == "u-erase" and tomb["data"]["actor"].startswith("cli:")
    assert tomb["data"]["count"] == 1
    verify = cli(srv.data_dir, "ledger", "verify", "--ledger-key-file", str(key_file))
    assert json.loads(verify)["ok"] is True


def test_tampering_is_detected_by_the_cli(walls, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    srv, _, _ = walls
    checkpoint = tmp_path / "head.json"
    checkpoint.write_text(cli(srv.data_dir, "ledger", "checkpoint"))
    export = tmp_path / "export"
    cli(srv.data_dir, "ledger", "export", "--tenant", "acme", "--out", str(export))
    assert verify_export(export).ok
    # copy the database, then edit one record in the copy
    src = sqlite3.connect(srv.data_dir / "intramuros.db")
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    dst = sqlite3.connect(bad_dir / "intramuros.db")
    src.backup(dst)
    src.close()
    seq = dst.execute("SELECT min(seq) FROM ledger_records WHERE kind='model_call'").fetchone()[0]
    dst.execute("UPDATE ledger_records SET data = replace(data, '\"status\":200', "
                "'\"status\":201') WHERE seq = ?", (seq,))  # fmt: skip
    dst.commit()
    last = dst.execute("SELECT max(seq) FROM ledger_records").fetchone()[0]
    dst.close()

    def verify(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "intramuros.cli", "ledger", "verify",
                               "--data-dir", str(bad_dir), *extra],
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    r = verify()
    assert r.returncode == 1
    assert f"FAILED at record {seq}: edited" in r.stderr and "Traceback" not in r.stderr
    # a truncated copy passes alone but not against the kept checkpoint
    trunc_dir = tmp_path / "trunc"
    trunc_dir.mkdir()
    src = sqlite3.connect(srv.data_dir / "intramuros.db")
    dst = sqlite3.connect(trunc_dir / "intramuros.db")
    src.backup(dst)
    src.close()
    dst.execute("DELETE FROM ledger_content WHERE seq >= ?", (last - 1,))
    dst.execute("DELETE FROM ledger_records WHERE seq >= ?", (last - 1,))
    dst.commit()
    dst.close()
    bad_dir = trunc_dir
    assert verify().returncode == 0
    r = verify("--checkpoint", str(checkpoint))
    assert r.returncode == 1 and "truncated" in r.stderr


def test_blocked_call_is_recorded_and_allow_keeps_the_value(walls) -> None:  # type: ignore[no-untyped-def]
    srv, _, _ = walls
    admin = srv.headers("operator")  # it reads two tenants' records
    rows = httpx.get(srv.base_url + "/v1/admin/ledger?tenant=acme&limit=1000",
                     headers=admin).json()["data"]  # fmt: skip
    blocked = [r for r in rows if r["data"].get("error_code") == "personal_data_blocked"]
    assert blocked and blocked[-1]["data"]["pii"]["iban"] == {"count": 1, "action": "block"}
    assert blocked[-1]["data"]["status"] == 400
    # globex allows IBANs and keeps text: the value is kept, encrypted
    cli(srv.data_dir, "tenants", "policy", "globex", "--store-content", "--pii", "iban=allow")
    time.sleep(POLICY_CACHE_SECONDS)  # a running server sees a new policy within this time
    client(srv, "other").chat.completions.create(model="echo", messages=ask(f"Pay {IBAN}"))  # type: ignore[arg-type]
    rows = httpx.get(srv.base_url + "/v1/admin/ledger?tenant=globex&limit=1000",
                     headers=admin).json()["data"]  # fmt: skip
    seq = [r for r in rows if r["kind"] == "model_call"][-1]["seq"]
    content = httpx.get(srv.base_url + f"/v1/admin/ledger/{seq}/content", headers=admin).json()
    assert content["content"]["prompt"] == [f"Pay {IBAN}"]
    for f in srv.data_dir.glob("intramuros.db*"):
        assert IBAN.encode() not in f.read_bytes(), "kept text is encrypted at rest"


def test_erasing_a_subject_that_is_personal_data(walls) -> None:  # type: ignore[no-untyped-def]
    # An end-user id that is an e-mail address is recorded only as its keyed digest; erasure
    # by the address finds it, and the tombstone does not write the address either.
    srv, _, key_file = walls
    subject = "carla.subject@example.org"
    client(srv).chat.completions.create(model="echo", messages=ask("Hello there"),  # type: ignore[arg-type]
                                        user=subject)  # fmt: skip
    op = srv.headers("operator")
    rows = httpx.get(srv.base_url + "/v1/admin/ledger?tenant=acme&limit=1000",
                     headers=op).json()["data"]  # fmt: skip
    mine = [r for r in rows if r["kind"] == "model_call" and r["data"]["pii"].get("email")
            and r["subject"] and r["subject"].startswith("hmac:") and r["has_content"]]
    assert mine, "the call was recorded under the digest of its subject"
    out = cli(srv.data_dir, "erase", "--tenant", "acme", "--subject", subject,
              "--ledger-key-file", str(key_file))  # fmt: skip
    assert "1 record" in out
    after = httpx.get(srv.base_url + f"/v1/admin/ledger/{mine[-1]['seq']}/content",
                      headers=op).json()  # fmt: skip
    assert after["content"] is None
    tomb = [r for r in httpx.get(srv.base_url + "/v1/admin/ledger?tenant=acme&limit=1000",
                                 headers=op).json()["data"] if r["kind"] == "erasure"][-1]
    assert tomb["subject"] == mine[-1]["subject"]
    for f in srv.data_dir.glob("intramuros.db*"):
        assert subject.encode() not in f.read_bytes()
