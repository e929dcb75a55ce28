"""The lean dispatcher (api/lean.py): the hot routes answer as FastAPI would (fast tier).

The same hostile and well-formed requests go to the app as built (lean routes
on) and to the app with lean dispatch off (FastAPI serves everything): the
status and the error body must be the same, request by request. Then the
dispatcher alone, on a small app: errors, a crash, what it refuses to serve.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from pydantic import BaseModel
from starlette.testclient import TestClient

from intramuros.api import app as app_module
from intramuros.api import errors
from intramuros.api import lean as lean_module
from intramuros.api.lean import LeanDispatch, lean_route, lean_routes
from intramuros.errors import InvalidRequest
from intramuros.platform.lean import lean
from tests.inprocess import FAKE_CHAT, InProcessApp, serve_in_process

HOT = {"/v1/chat/completions", "/v1/completions", "/v1/kyc/screen"}
CHAT = {"model": FAKE_CHAT, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 3}

# (path, body bytes or a JSON value, content type, key holder): hostile and plain requests.
CASES: list[tuple[str, Any, str | None, str | None]] = [
    ("/v1/chat/completions", CHAT, "application/json", "user"),
    ("/v1/chat/completions", CHAT, "application/json; charset=utf-8", "user"),
    ("/v1/chat/completions", CHAT, "text/plain", "user"),
    ("/v1/chat/completions", CHAT, None, "user"),
    ("/v1/chat/completions", CHAT, "application/json", None),
    ("/v1/chat/completions", CHAT, "application/json", "bad"),
    ("/v1/chat/completions", b"", "application/json", "user"),
    ("/v1/chat/completions", b"{not json", "application/json", "user"),
    ("/v1/chat/completions", b"[1, 2]", "application/json", "user"),
    ("/v1/chat/completions", b"\xff\xfe{}", "application/json", "user"),
    ("/v1/chat/completions", b"[" * 20_000 + b"]" * 20_000, "application/json", "user"),
    ("/v1/chat/completions", {**CHAT, "messages": None}, "application/json", "user"),
    ("/v1/chat/completions", {"model": FAKE_CHAT}, "application/json", "user"),
    ("/v1/chat/completions", {**CHAT, "temperature": "hot"}, "application/json", "user"),
    ("/v1/chat/completions", {**CHAT, "max_tokens": -1}, "application/json", "user"),
    ("/v1/chat/completions", {**CHAT, "model": "no-such-model"}, "application/json", "user"),
    ("/v1/chat/completions", {**CHAT, "model": "x" * 5000}, "application/json", "user"),
    ("/v1/chat/completions", {**CHAT, "unknown_field": 1}, "application/json", "user"),
    ("/v1/completions", {"model": FAKE_CHAT, "prompt": "Hi", "max_tokens": 2},
     "application/json", "user"),
    ("/v1/completions", {"model": FAKE_CHAT}, "application/json", "user"),
    ("/v1/completions", {"model": FAKE_CHAT, "prompt": "Hi", "max_tokens": 2},
     "application/json", None),
    ("/v1/kyc/screen", {"name": "Jean Dupont", "type": "person"}, "application/json", "user"),
    ("/v1/kyc/screen", {"name": ""}, "application/json", "user"),
    ("/v1/kyc/screen", {"type": "person"}, "application/json", "user"),
    ("/v1/kyc/screen", {"name": "A", "limit": "many"}, "application/json", None),
]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[InProcessApp, InProcessApp]]:
    """The app as built, and the same app with lean dispatch off."""
    with serve_in_process(tmp_path_factory.mktemp("lean")) as on:
        original = app_module.lean_routes
        app_module.lean_routes = lambda routers: {}  # type: ignore[assignment]
        try:
            with serve_in_process(tmp_path_factory.mktemp("fastapi")) as off:
                yield on, off
        finally:
            app_module.lean_routes = original


def send(target: InProcessApp, path: str, body: Any, content_type: str | None,
         who: str | None) -> httpx.Response:  # fmt: skip
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {} if content_type is None else {"content-type": content_type}
    if who == "bad":
        headers["authorization"] = "Bearer sk-not-a-key"
    elif who is not None:
        headers.update(target.headers(who))
    return target.http.post(path, content=raw, headers=headers)


def comparable(r: httpx.Response) -> Any:
    """What must be equal between the two apps: the error, or the answer's shape."""
    if r.status_code >= 400:
        return r.status_code, r.json()
    doc = r.json()
    return r.status_code, sorted(doc), doc.get("object"), r.headers.get("x-intramuros-model")


def test_the_hot_routes_are_served_lean(pair: tuple[InProcessApp, InProcessApp]) -> None:
    on, off = pair
    lean_mw = [m for m in on.app.user_middleware if m.cls is LeanDispatch]
    assert len(lean_mw) == 1
    assert set(lean_mw[0].kwargs["routes"]) == HOT
    off_mw = [m for m in off.app.user_middleware if m.cls is LeanDispatch]
    assert off_mw[0].kwargs["routes"] == {}


@pytest.mark.parametrize("case", range(len(CASES)))
def test_lean_and_fastapi_answer_alike(pair: tuple[InProcessApp, InProcessApp],
                                       case: int) -> None:  # fmt: skip
    on, off = pair
    path, body, content_type, who = CASES[case]
    got = send(on, path, body, content_type, who)
    expected = send(off, path, body, content_type, who)
    assert comparable(got) == comparable(expected), (got.text[:300], expected.text[:300])


def test_a_lean_call_is_recorded_like_any_other(pair: tuple[InProcessApp, InProcessApp]) -> None:
    on, _ = pair
    r = send(on, "/v1/chat/completions", CHAT, "application/json", "user")
    assert r.status_code == 200
    request_id = r.headers.get("x-request-id") or r.json()["id"]
    assert request_id
    usage = r.json()["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    assert usage["energy_joules"] >= 0 and "latency_ms" in usage


# -- the dispatcher alone ----------------------------------------------------------


class Body(BaseModel):
    n: int


async def who_calls(request: Request) -> str:
    if request.headers.get("x-who") != "me":
        raise InvalidRequest("who?", param="x-who")
    return "me"


CALLS: list[int] = []


def small_app() -> FastAPI:
    router = APIRouter()

    @router.post("/echo")
    @lean
    async def echo(body: Body, request: Request, response: Response,
                   who: str = Depends(who_calls)) -> Response:  # fmt: skip
        CALLS.append(body.n)
        if body.n == 13:
            raise InvalidRequest("unlucky", param="n")
        if body.n == 666:
            raise RuntimeError("a bug")
        if body.n == 7:
            return {"not": "a response"}  # type: ignore[return-value]
        return Response(json.dumps({"n": body.n, "who": who}), media_type="application/json")

    app = FastAPI()
    errors.install(app)
    app.include_router(router)
    app.add_middleware(LeanDispatch, routes=lean_routes([router]))
    return app


@pytest.fixture()
def small() -> Iterator[TestClient]:
    CALLS.clear()
    with TestClient(small_app(), raise_server_exceptions=False) as client:
        yield client


def test_the_endpoint_is_called_once_with_its_dependencies(small: TestClient) -> None:
    r = small.post("/echo", json={"n": 1}, headers={"x-who": "me"})
    assert (r.status_code, r.json()) == (200, {"n": 1, "who": "me"})
    assert CALLS == [1]


def test_errors_of_dependencies_and_endpoints_are_ours(small: TestClient) -> None:
    r = small.post("/echo", json={"n": 1})
    assert r.status_code == 400 and r.json()["error"]["param"] == "x-who"
    r = small.post("/echo", json={"n": 13}, headers={"x-who": "me"})
    assert r.status_code == 400 and r.json()["error"]["message"] == "unlucky"
    r = small.post("/echo", json={"n": 666}, headers={"x-who": "me"})
    assert r.status_code == 500
    assert r.json()["error"]["message"] == "Internal server error."  # no detail leaks
    r = small.post("/echo", json={"n": 7}, headers={"x-who": "me"})
    assert r.status_code == 500


def test_a_large_body_goes_to_fastapi_and_is_parsed_once_there(
    small: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[int] = []
    real = lean_module._parsed

    def counting(*args: Any) -> Any:
        parsed.append(1)
        return real(*args)

    monkeypatch.setattr(lean_module, "_parsed", counting)
    padded = json.dumps({"n": 2, "pad": " " * lean_module.MAX_LEAN_BODY}).encode()
    r = small.post("/echo", content=padded, headers={"x-who": "me",
                                                     "content-type": "application/json"})
    assert (r.status_code, r.json()) == (200, {"n": 2, "who": "me"})
    assert CALLS == [2] and parsed == []  # served by FastAPI, the lean parse skipped
    small.post("/echo", json={"n": 3}, headers={"x-who": "me"})
    assert parsed == [1]


def test_a_body_that_does_not_validate_goes_to_fastapi(small: TestClient) -> None:
    r = small.post("/echo", json={"n": "x"}, headers={"x-who": "me"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"
    assert CALLS == []


def test_routes_the_dispatcher_cannot_serve_are_refused_at_start() -> None:
    router = APIRouter()

    @router.get("/get")
    @lean
    async def get() -> Response:
        return Response()

    @router.post("/items/{item}")
    @lean
    async def with_path(item: str, body: Body) -> Response:
        return Response()

    @router.post("/query")
    @lean
    async def with_query(body: Body, limit: int = 3) -> Response:
        return Response()

    @router.post("/sync")
    @lean
    def sync(body: Body) -> Response:
        return Response()

    @router.post("/nobody")
    @lean
    async def nobody(request: Request) -> Response:
        return Response()

    for route in router.routes:
        with pytest.raises(ValueError, match="lean route"):
            lean_route(route)  # type: ignore[arg-type]


def test_only_marked_routes_are_lean() -> None:
    router = APIRouter()

    @router.post("/plain")
    async def plain(body: Body) -> Response:
        return Response()

    assert lean_routes([router]) == {}
