"""The upstream pool's bookkeeping, with httpx's mock transport (fast tier).

The real failover (processes killed under load) is in test_upstream_pool.py.
"""

from __future__ import annotations

import threading

import httpx

from intramuros.engines.upstream_pool import UpstreamPool

URLS = ["http://a:1/v1", "http://b:2/v1", "http://c:3/v1"]


def make_pool(up: dict[str, bool], **kw: float) -> UpstreamPool:
    def handler(request: httpx.Request) -> httpx.Response:
        host = request.url.host
        return httpx.Response(200 if up[host] else 503, json={"data": []})

    def client(url: str) -> httpx.Client:
        return httpx.Client(base_url=url + "/", transport=httpx.MockTransport(handler))

    return UpstreamPool(URLS, client, name="m", max_failures=int(kw.get("max_failures", 2)),
                        probe_seconds=kw.get("probe_seconds", 0.05))  # fmt: skip


def test_the_least_outstanding_upstream_is_picked_and_each_only_once_per_call() -> None:
    pool = make_pool({"a": True, "b": True, "c": True})
    first = pool.pick(set())
    second = pool.pick(set())
    third = pool.pick(set())
    assert first and second and third
    assert len({first.url, second.url, third.url}) == 3  # spread while all are busy
    with pool.using(first):
        pass
    assert pool.pick(set()) is first  # the one that came back has the fewest outstanding
    tried = {m.url for m in pool.members}
    assert pool.pick(tried) is None


def test_failures_in_a_row_take_an_upstream_out_and_the_prober_puts_it_back() -> None:
    up = {"a": True, "b": False, "c": True}
    pool = make_pool(up)
    b = pool.members[1]
    pool.failed(b, "HTTP 503")
    pool.succeeded(b)  # a success in between: not in a row
    pool.failed(b, "HTTP 503")
    assert b.in_service
    pool.failed(b, "HTTP 503")
    assert not b.in_service and b.taken_out == 1
    # Out of service: not picked while others serve.
    picked = {pool.pick(set()).url for _ in range(6)}  # type: ignore[union-attr]
    assert "http://b:2/v1" not in picked
    up["b"] = True
    done = threading.Event()
    for _ in range(100):
        if b.in_service:
            done.set()
            break
        threading.Event().wait(0.02)
    assert done.is_set(), "the prober did not put the upstream back"
    assert b.failures == 0
    stats = {(s.name, s.labels): s.value for s in pool.stats()}
    assert stats[("upstream_taken_out", (("upstream", "b:2"),))] == 1
    assert stats[("upstream_failures", (("upstream", "b:2"),))] == 3
    pool.close()


def test_with_every_upstream_out_calls_still_try_one() -> None:
    pool = make_pool({"a": False, "b": False, "c": False}, probe_seconds=60)
    for m in pool.members:
        for _ in range(2):
            pool.failed(m, "down")
    assert not pool.any_in_service()
    assert pool.pick(set()) is not None
    pool.close()
