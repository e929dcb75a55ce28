"""The lean HTTP/1.1 client of upstream engines, against scripted socket servers (fast tier).

Each test's server is a thread with a listening socket that answers as told:
kept-alive answers, chunked bodies, bodies ending at the close, a connection
closed while idle, garbage, silence. What is checked is what the engine
relies on: whole answers, reuse of connections, and httpx's exception
classes for each way a transport fails.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import httpx
import pytest

from intramuros.engines import http11
from intramuros.engines.http11 import LeanHTTP

OK_BODY = b'{"ok":true}'
Read = Callable[[socket.socket], bytes]
Handler = Callable[[socket.socket, int, Read], None]


def read_request(conn: socket.socket) -> bytes:
    """One request (head and Content-Length body) from ``conn``; b"" at its close."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += conn.recv(65536)
    return head + b"\r\n\r\n" + body


def answer(body: bytes = OK_BODY, *, status: str = "200 OK", close: bool = False) -> bytes:
    extra = b"Connection: close\r\n" if close else b""
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n".encode() + extra
            + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


@contextmanager
def scripted(handler: Handler) -> Iterator[tuple[str, list[bytes], list[int]]]:
    """A server calling ``handler(conn, n, read)`` for its n-th connection (``read`` reads
    one request and keeps it): (base URL, requests seen, connections accepted)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.05)  # accept() wakes to see the stop
    seen: list[bytes] = []
    accepted: list[int] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            accepted.append(len(accepted))
            threading.Thread(target=run, args=(conn, len(accepted)), daemon=True).start()

    def run(conn: socket.socket, n: int) -> None:
        with conn, suppress(OSError):
            handler(conn, n, recording)

    def recording(conn: socket.socket) -> bytes:
        request = read_request(conn)
        if request:
            seen.append(request)
        return request

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1", seen, accepted
    finally:
        stop.set()
        thread.join(5)
        listener.close()


OPENED: list[LeanHTTP] = []


def client(url: str, timeout: float = 5.0, **headers: str) -> LeanHTTP:
    lean = LeanHTTP(url, headers, timeout=timeout, connect_timeout=timeout)
    OPENED.append(lean)
    return lean


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while OPENED:
        OPENED.pop().close()


def keep_alive(conn: socket.socket, n: int, read: Read) -> None:
    while read(conn):
        conn.sendall(answer())


def test_answers_are_whole_and_one_connection_is_reused() -> None:
    with scripted(keep_alive) as (url, seen, accepted):
        lean = client(url, Authorization="Bearer k")
        for i in range(5):
            got = lean.post_json("chat/completions", {"i": i, "text": "é"})
            assert (got.status_code, got.json()) == (200, {"ok": True})
        lean.close()
    assert len(accepted) == 1, "each call opened a connection"
    head, _, body = seen[3].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"\r\nAuthorization: Bearer k\r\n" in head + b"\r\n"
    assert json.loads(body) == {"i": 3, "text": "é"}


def test_a_connection_the_upstream_closed_while_idle_is_replaced() -> None:
    def one_answer_each(conn: socket.socket, n: int, read: Read) -> None:
        # Kept alive by the headers, closed right after: as an upstream's idle timeout does.
        if read(conn):
            conn.sendall(answer())

    with scripted(one_answer_each) as (url, seen, accepted):
        lean = client(url)
        for _ in range(3):
            assert lean.post_json("x", {}).json() == {"ok": True}
    assert len(seen) == 3 and len(accepted) == 3


def test_chunked_answers_and_answers_ending_at_the_close() -> None:
    def chunked(conn: socket.socket, n: int, read: Read) -> None:
        read(conn)
        if n == 1:
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n")
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"b\":2}")

    with scripted(chunked) as (url, _seen, _accepted):
        lean = client(url)
        assert lean.post_json("x", {}).json() == {"a": 1}
        lean.close()  # the next call on a new connection: the server's second script
        lean = client(url)
        assert lean.post_json("x", {}).json() == {"b": 2}


def test_an_error_status_comes_back_as_an_answer_readable_by_httpx() -> None:
    def refuse(conn: socket.socket, n: int, read: Read) -> None:
        read(conn)
        conn.sendall(answer(b'{"error":{"message":"no"}}', status="429 Too Many Requests")
                     .replace(b"Content-Type", b"Retry-After: 7\r\nContent-Type"))

    with scripted(refuse) as (url, _seen, _accepted):
        got = client(url).post_json("x", {})
    assert got.status_code == 429
    as_httpx = got.as_httpx()
    assert as_httpx.headers["retry-after"] == "7"
    assert as_httpx.json()["error"]["message"] == "no"


def test_connection_refused_is_a_connect_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(httpx.ConnectError):
        client(f"http://127.0.0.1:{port}/v1").post_json("x", {})


@pytest.mark.parametrize("reply, error", [
    (b"garbage that is no status line\r\n\r\n", httpx.RemoteProtocolError),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"cut", httpx.RemoteProtocolError),
    (b"", httpx.RemoteProtocolError),  # closed without a byte, on a new connection
])  # fmt: skip
def test_broken_answers_are_protocol_errors(reply: bytes, error: type[Exception]) -> None:
    def broken(conn: socket.socket, n: int, read: Read) -> None:
        read(conn)
        conn.sendall(reply)

    with scripted(broken) as (url, _seen, _accepted), pytest.raises(error):
        client(url).post_json("x", {})


def test_a_silent_upstream_is_a_read_timeout() -> None:
    release = threading.Event()

    def silent(conn: socket.socket, n: int, read: Read) -> None:
        read(conn)
        release.wait(10)

    with scripted(silent) as (url, _seen, _accepted):
        with pytest.raises(httpx.ReadTimeout):
            client(url, timeout=0.3).post_json("x", {})
        release.set()


def test_an_answer_over_the_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http11, "MAX_ANSWER_BYTES", 1000)

    def huge(conn: socket.socket, n: int, read: Read) -> None:
        read(conn)
        conn.sendall(answer(b"[" + b"1," * 5000 + b"1]"))

    with scripted(huge) as (url, _seen, _accepted), pytest.raises(httpx.RemoteProtocolError):
        client(url).post_json("x", {})


@pytest.mark.parametrize("value", ["k\r\nX-Injected: 1", "k\nX: 1", "k\x00"])
def test_a_header_with_a_line_break_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="line break"):
        LeanHTTP("http://127.0.0.1:9/v1", {"Authorization": value}, timeout=1,
                 connect_timeout=1)  # fmt: skip


def test_only_plain_http_base_urls() -> None:
    with pytest.raises(ValueError):
        LeanHTTP("https://example.org/v1", {}, timeout=1, connect_timeout=1)


def test_concurrent_calls_each_get_a_connection_and_all_are_answered() -> None:
    with scripted(keep_alive) as (url, _seen, accepted):
        lean = client(url)
        results: list[int] = []
        errors: list[BaseException] = []

        def call() -> None:
            try:
                for _ in range(20):
                    results.append(lean.post_json("x", {}).status_code)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=call) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        lean.close()
    assert not errors
    assert results == [200] * 160
    assert len(accepted) <= 8, "connections were opened beyond the calls running at once"


def test_a_head_without_end_is_refused() -> None:
    def endless(conn: socket.socket, n: int, read: Read) -> None:
        read(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Long: ")
        for _ in range(40):  # 160 KiB of one header value, never ended
            conn.sendall(b"a" * 4096)

    with scripted(endless) as (url, _seen, _accepted), pytest.raises(httpx.RemoteProtocolError):
        client(url).post_json("x", {})
