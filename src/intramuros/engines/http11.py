"""A lean HTTP/1.1 client for whole JSON calls to a plain-HTTP upstream.

A chat completion through an upstream engine is, for agents making hundreds
of calls, mostly what sits in front of the upstream. On this path httpx's
client spends several times the processor time of the exchange itself
(request building, cookies, redirects, URL merging, its connection pool),
and the standard library's ``http.client`` parses headers with the e-mail
parser. Whole (non-streamed) calls to an upstream reached over plain HTTP
(the usual in-building vLLM or llama-server) go through this client instead:
a kept-alive socket and httptools' parser in C (uvicorn's own). Streams,
probes and TLS upstreams stay on httpx.

Its answers are :class:`Answer` (status, headers, body; ``as_httpx()`` for
the engine's error handling), and transport failures raise httpx's exception
classes (``ConnectError``, ``ConnectTimeout``, ``ReadTimeout``,
``RemoteProtocolError``...), chained to the original error, so the engine's
retry rules are the same for both clients. A reused connection that the
upstream had closed while idle is replaced once, when not one byte of an
answer came on it.
"""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httptools
import httpx

# Idle connections kept per upstream (more are opened when calls overlap).
MAX_IDLE = 32
# An answer larger than this is refused (a whole chat answer is kilobytes; embeddings of
# a large batch megabytes).
MAX_ANSWER_BYTES = 256 * 1024 * 1024
# The status line and headers: more is an upstream gone wrong (h11, under httpx, allows
# 16 KiB).
MAX_HEAD_BYTES = 64 * 1024
_READ = 65536


@dataclass
class Answer:
    """An upstream's whole answer."""

    status_code: int
    headers: list[tuple[bytes, bytes]]
    content: bytes
    url: str

    def json(self) -> Any:
        """The body parsed as JSON (ValueError if it is not)."""
        return json.loads(self.content)

    def as_httpx(self) -> httpx.Response:
        """The same answer as an ``httpx.Response`` (for the engine's error handling)."""
        return httpx.Response(self.status_code, headers=self.headers, content=self.content,
                              request=httpx.Request("POST", self.url))  # fmt: skip


@dataclass
class _Reading:
    """httptools' callbacks for one answer."""

    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: list[bytes] = field(default_factory=list)
    size: int = 0
    headers_done: bool = False
    keep_alive: bool = False
    complete: bool = False
    parser: Any = None

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.headers_done = True
        # Asked now: once the message is complete, the parser has reset its state.
        assert self.parser is not None
        self.keep_alive = self.parser.should_keep_alive()

    def until_close(self) -> bool:
        """Whether the body, having neither a length nor chunks, ends at the close."""
        return self.headers_done and not any(
            name.lower() in (b"content-length", b"transfer-encoding") for name, _ in self.headers)

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > MAX_ANSWER_BYTES:
            raise _TooLarge()
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


class LeanHTTP:
    """Kept-alive connections to one ``http://`` base URL; thread-safe."""

    def __init__(self, base_url: str, headers: dict[str, str], *, timeout: float,
                 connect_timeout: float) -> None:  # fmt: skip
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"LeanHTTP serves http:// URLs only, not {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.base_path = parts.path.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.origin = f"http://{host}:{self.port}"
        if any(c in f"{k}{v}" for k, v in headers.items() for c in "\r\n\0"):
            raise ValueError("an upstream header holds a line break or NUL")
        fixed = {"Host": host if self.port == 80 else f"{host}:{self.port}",
                 "Content-Type": "application/json", "Accept": "application/json",
                 "Connection": "keep-alive", **headers}
        self._head = "".join(f"{k}: {v}\r\n" for k, v in fixed.items()).encode("latin-1")
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._idle: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False

    def post_json(self, path: str, body: dict[str, Any]) -> Answer:
        """POST ``body`` as JSON to ``path`` (relative to the base URL); the whole answer."""
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":"),
                          allow_nan=False).encode()  # fmt: skip
        target = f"{self.base_path}/{path.lstrip('/')}"
        message = (b"POST " + target.encode() + b" HTTP/1.1\r\n" + self._head
                   + b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data)
        url = self.origin + target
        reused = self._take()
        if reused is not None:
            try:
                return self._exchange(reused, message, url)
            except _Stale:
                pass  # closed by the upstream while idle: once more, on a new connection
        try:
            return self._exchange(self._connect(url), message, url)
        except _Stale as stale:
            raise httpx.RemoteProtocolError(
                "The upstream closed the connection without an answer.",
                request=httpx.Request("POST", url)) from stale.__cause__  # fmt: skip

    def close(self) -> None:
        """Close every idle connection; a call running now closes its own when done."""
        with self._lock:
            idle, self._idle = self._idle, []
            self._closed = True
        for sock in idle:
            sock.close()

    # -- connections -----------------------------------------------------------

    def _take(self) -> socket.socket | None:
        with self._lock:
            return self._idle.pop() if self._idle else None

    def _give_back(self, sock: socket.socket) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < MAX_IDLE:
                self._idle.append(sock)
                return
        sock.close()

    def _connect(self, url: str) -> socket.socket:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"connect: {exc}",
                                       request=httpx.Request("POST", url)) from exc  # fmt: skip
        except OSError as exc:  # refused, unreachable, or refused by the egress guard
            raise httpx.ConnectError(f"connect: {exc}",
                                     request=httpx.Request("POST", url)) from exc  # fmt: skip
        sock.settimeout(self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _exchange(self, sock: socket.socket, message: bytes, url: str) -> Answer:
        """One request and its whole answer on ``sock`` (kept for reuse if alive)."""
        reading = _Reading()
        parser = httptools.HttpResponseParser(reading)
        reading.parser = parser
        received = 0
        sent = False
        try:
            sock.sendall(message)
            sent = True
            while not reading.complete:
                chunk = sock.recv(_READ)
                if not chunk:
                    if received == 0:
                        raise _Stale()  # closed before one byte of an answer
                    if reading.until_close():
                        break  # a body without a length ends with the connection
                    raise httpx.RemoteProtocolError(
                        "The upstream closed the connection mid-answer.",
                        request=httpx.Request("POST", url))  # fmt: skip
                received += len(chunk)
                parser.feed_data(chunk)
                if not reading.headers_done and received > MAX_HEAD_BYTES:
                    raise _TooLarge()  # a head without end (the parser would buffer it all)
        except _Stale:
            sock.close()
            raise
        except (ConnectionResetError, BrokenPipeError) as exc:
            sock.close()
            if received == 0:
                raise _Stale() from exc
            raise httpx.ReadError(f"read: {exc}", request=httpx.Request("POST", url)) from exc
        except TimeoutError as exc:
            sock.close()
            timeout = httpx.ReadTimeout if sent else httpx.WriteTimeout
            raise timeout(f"timed out: {exc}", request=httpx.Request("POST", url)) from exc
        except (httptools.HttpParserError, _TooLarge) as exc:
            sock.close()
            raise httpx.RemoteProtocolError(f"malformed answer: {exc!r}",
                                            request=httpx.Request("POST", url)) from exc
        except OSError as exc:
            sock.close()
            failure = httpx.ReadError if sent else httpx.WriteError
            raise failure(f"{exc}", request=httpx.Request("POST", url)) from exc
        except BaseException:
            sock.close()
            raise
        if reading.complete and reading.keep_alive:
            self._give_back(sock)
        else:
            sock.close()
        return Answer(parser.get_status_code(), reading.headers, b"".join(reading.body), url)


class _Stale(Exception):
    """A kept-alive connection turned out closed before any answer."""


class _TooLarge(Exception):
    """The answer's head is over ``MAX_HEAD_BYTES`` or its body over ``MAX_ANSWER_BYTES``."""
