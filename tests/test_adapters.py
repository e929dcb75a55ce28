"""LoRA adapters on a shared base, on a real server with the bundled model.

Adapters are written by ``tests/lora.py`` (seeded random low-rank updates) and
added with the real CLI while the server runs. Each decode step serves one
adapter set, so a request that is alone under its adapter computes exactly
what it computes alone: "the same answer" is exact. (Two requests under the
same adapter share steps, and llama.cpp's float32 LoRA products round
differently with the number of rows for some ranks: their greedy text may then
part from the lone one at a near-tie; they are checked to be whole answers.)
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import CHAT_MODEL, Server, bundled_file, start_server, stop_server
from tests.lora import make_lora
from tests.test_batching import together

# Real models or a server process: the slow tier.
pytestmark = pytest.mark.slow

QUESTION = "Name three colours."


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("adapters"), "--llama-slots", "4",
                          "--preload-models", CHAT_MODEL, auth=True)  # fmt: skip
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("adapter-files")


@pytest.fixture(scope="module")
def client(srv: Server) -> openai.OpenAI:
    return srv.openai("user")  # type: ignore[no-any-return]


def add(srv: Server, name: str, path: Path) -> str:
    return srv.cli("models", "add-adapter", name, "--base", CHAT_MODEL, "--adapter", str(path),
                   "--license", "apache-2.0", "--description", "a test adapter")  # fmt: skip


def answer(client: openai.OpenAI, model: str) -> str:
    messages = [{"role": "user", "content": QUESTION}]
    r = client.chat.completions.create(model=model, temperature=0, max_tokens=24,
                                       messages=messages)  # type: ignore[arg-type]  # fmt: skip
    return r.choices[0].message.content or ""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_two_adapters_and_the_base_in_one_batch(srv: Server, client: openai.OpenAI,
                                                files: Path) -> None:  # fmt: skip
    base_file = bundled_file(CHAT_MODEL)
    for seed in (1, 2):
        out = add(srv, f"tuned-{seed}", make_lora(base_file, files / f"a{seed}.gguf", seed=seed))
        assert f"tuned-{seed}" in out and "sha256" in out
    before = rss_kib(srv.proc.pid)
    alone = {m: answer(client, m) for m in (CHAT_MODEL, "tuned-1", "tuned-2")}
    grown = rss_kib(srv.proc.pid) - before
    # Three different models' answers: the adapters change what the model writes.
    assert len(set(alone.values())) == 3, alone
    # Each adapter costs about its own size (~4 MB here), not a copy of the base (~100 MB).
    assert grown * 1024 < 0.5 * base_file.stat().st_size, grown
    models = [CHAT_MODEL, "tuned-1", "tuned-2"]
    for _ in range(2):
        batched = together([lambda m=m: answer(client, m) for m in models])
        assert batched == [alone[m] for m in models]
    twice = together([lambda m=m: answer(client, m) for m in ["tuned-1", "tuned-1", CHAT_MODEL]])
    assert twice[2] == alone[CHAT_MODEL] and all(len(t) > 20 for t in twice), twice
    # They are models of the catalogue, with their provenance.
    listed = {m.id: m for m in client.models.list().data}
    assert {"tuned-1", "tuned-2"} <= set(listed)
    shown = json.loads(srv.cli("models", "list", "--json"))
    tuned = next(m for m in shown if m["name"] == "tuned-1")
    assert tuned["base"] == CHAT_MODEL and tuned["license"] == "apache-2.0"
    assert tuned["sha256"] and tuned["origin"]["kind"] == "file"


def test_an_adapter_removed_while_serving_is_let_go(srv: Server, client: openai.OpenAI,
                                                    files: Path) -> None:  # fmt: skip
    add(srv, "short-lived", make_lora(bundled_file(CHAT_MODEL), files / "s.gguf", seed=3))
    assert answer(client, "short-lived")
    srv.cli("models", "remove", "short-lived")
    deadline = time.monotonic() + 5
    while True:
        try:
            answer(client, "short-lived")
        except openai.NotFoundError as exc:
            assert exc.body["code"] == "model_not_found"  # type: ignore[index]
            break
        assert time.monotonic() < deadline, "a removed adapter was still served after 5 s"
        time.sleep(0.2)
    assert answer(client, CHAT_MODEL)


def test_a_changed_adapter_file_is_refused(srv: Server, client: openai.OpenAI,
                                           files: Path) -> None:  # fmt: skip
    path = make_lora(bundled_file(CHAT_MODEL), files / "c.gguf", seed=4)
    add(srv, "tampered", path)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # one byte of the weights
    path.write_bytes(bytes(data))
    with pytest.raises(openai.APIStatusError) as caught:
        answer(client, "tampered")
    assert caught.value.status_code == 503
    assert caught.value.body["code"] == "model_integrity_error"  # type: ignore[index]
    assert str(path) not in caught.value.message
    assert answer(client, CHAT_MODEL)


def test_bad_adapters_are_refused_with_a_reason(srv: Server, files: Path) -> None:
    base_file = bundled_file(CHAT_MODEL)

    def refused(*args: str) -> str:
        with pytest.raises(AssertionError) as caught:
            srv.cli("models", "add-adapter", *args)
        return str(caught.value)

    other_arch = make_lora(base_file, files / "arch.gguf", seed=5, architecture="gemma3")
    assert "adapts a 'gemma3' model" in refused("x1", "--base", CHAT_MODEL,
                                                "--adapter", str(other_arch))  # fmt: skip
    assert "not a LoRA adapter" in refused("x2", "--base", CHAT_MODEL,
                                           "--adapter", str(base_file))  # fmt: skip
    garbage = files / "garbage.gguf"
    garbage.write_bytes(b"GGUF" + b"\xff" * 64)
    assert "cannot read GGUF header" in refused("x3", "--base", CHAT_MODEL,
                                                "--adapter", str(garbage))  # fmt: skip
    assert "does not exist" in refused("x4", "--base", "no-such-model", "--adapter",
                                  str(other_arch)).lower()  # fmt: skip
    # An adapter is not a model on its own.
    with pytest.raises(AssertionError, match="is an adapter, not a model"):
        srv.cli("models", "add", str(other_arch), "--name", "x5")
    # Nor an adapter a base; and a base cannot go while an adapter needs it.
    srv.cli("models", "add", str(base_file), "--name", "own-base")
    good = make_lora(base_file, files / "good.gguf", seed=7)
    srv.cli("models", "add-adapter", "on-own", "--base", "own-base", "--adapter", str(good))
    assert "is itself an adapter" in refused("x6", "--base", "on-own", "--adapter", str(good))
    with pytest.raises(AssertionError, match="remove those adapters first"):
        srv.cli("models", "remove", "own-base")
    srv.cli("models", "remove", "on-own")
    srv.cli("models", "remove", "own-base")


def test_an_adapter_llama_cpp_cannot_apply_fails_its_request_only(
    srv: Server, client: openai.OpenAI, files: Path
) -> None:
    """Right header, wrong shapes: accepted into the catalogue (the header is all we read),
    then refused by llama.cpp at its first request, with a clean error; the server and the
    base model go on."""
    bad = make_lora(bundled_file(CHAT_MODEL), files / "shape.gguf", seed=6, wrong_shape=True)
    add(srv, "misshapen", bad)
    with pytest.raises(openai.APIStatusError) as caught:
        answer(client, "misshapen")
    assert caught.value.status_code == 503
    assert caught.value.body["code"] == "engine_unavailable"  # type: ignore[index]
    assert "misshapen" in caught.value.message and str(bad) not in caught.value.message
    assert answer(client, CHAT_MODEL)
    assert httpx.get(srv.base_url + "/healthz", timeout=5).status_code == 200
