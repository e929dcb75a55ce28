"""The egress guard refuses connects, sends and lookups outside its policy.

The guard installs a process-wide audit hook that cannot be removed, so every
scenario runs in its own ``python -c`` subprocess. No test sends anything
beyond loopback: the guard allows only ``127.0.0.1/32``, refusals are checked
on ``127.0.0.2`` (still loopback) and on names such as ``example.invalid``,
which the guard must refuse before any resolver runs.

Should the guard let something through by mistake, a tripwire in the
subprocess stops it before the system call: wrappers *under* the guard's
socket wrappers and an audit hook added *after* the guard's, both of which see
only what the guard allowed, raise ``RuntimeError`` for any non-loopback
address, any name lookup other than ``localhost`` and any reverse lookup.
"""

from __future__ import annotations

import ipaddress
import json
import os
import pickle
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from intramuros.egress import LOOPBACK_NETWORKS, EgressPolicy, EgressRefused

PRELUDE = r'''
import ipaddress, json, socket, sys

TRIPPED = []

def _safe_host(host):
    if host is None:
        return True
    if isinstance(host, (bytes, bytearray)):
        host = bytes(host).decode("ascii", "replace")
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return host.lower().rstrip(".") == "localhost"

def _trip(what):
    TRIPPED.append(what)
    raise RuntimeError("TRIPWIRE: the guard let through " + what)

def _trip_address(sock, address):
    if (sock.family in (socket.AF_INET, socket.AF_INET6) and type(address) is tuple
            and not _safe_host(address[0])):
        _trip(repr(address))

_orig = {n: getattr(socket.socket, n) for n in ("connect", "connect_ex", "sendto", "sendmsg")}

def _connect(sock, address):
    _trip_address(sock, address)
    return _orig["connect"](sock, address)

def _connect_ex(sock, address):
    _trip_address(sock, address)
    return _orig["connect_ex"](sock, address)

def _sendto(sock, *args):
    if len(args) >= 2:
        _trip_address(sock, args[-1])
    return _orig["sendto"](sock, *args)

def _sendmsg(sock, *args):
    if len(args) >= 4:
        _trip_address(sock, args[3])
    return _orig["sendmsg"](sock, *args)

for _n, _f in (("connect", _connect), ("connect_ex", _connect_ex), ("sendto", _sendto),
               ("sendmsg", _sendmsg)):
    setattr(socket.socket, _n, _f)

def _tripwire_hook(event, args):
    if event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
        if args[1] is not None:
            _trip_address(args[0], args[1])
    elif event in ("socket.getaddrinfo", "socket.gethostbyname"):
        if not _safe_host(args[0]):
            _trip(event + " " + repr(args[0]))
    elif event in ("socket.gethostbyaddr", "socket.getnameinfo"):
        _trip(event + " " + repr(args[0]))

from intramuros.egress import EgressGuard, EgressPolicy, EgressRefused
from intramuros.egress import current_guard, install_guard

REFUSED = []
ONLY_127_0_0_1 = EgressPolicy(networks=(ipaddress.ip_network("127.0.0.1/32"),))
guard = install_guard(ONLY_127_0_0_1, on_refused=REFUSED.append)
sys.addaudithook(_tripwire_hook)

def _chain(exc):
    seen = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        if isinstance(exc, BaseExceptionGroup):
            for sub in exc.exceptions:
                seen.extend(e for e in _chain(sub) if e not in seen)
        exc = exc.__cause__ or exc.__context__
    return seen

def describe(exc):
    """An exception, and whether the guard's refusal is it or what it chains to."""
    chain = _chain(exc)
    return {
        "error": type(exc).__name__,
        "message": str(exc),
        "guard": isinstance(exc, EgressRefused),
        "guard_in_chain": any(isinstance(e, EgressRefused) for e in chain),
        "chain": [type(e).__name__ for e in chain],
    }

def attempt(fn):
    """What calling fn did: its value, or its exception described."""
    try:
        value = fn()
    except Exception as exc:
        return describe(exc)
    return {"ok": repr(value)}

def listener(host="127.0.0.1", kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind((host, 0))
    if kind == socket.SOCK_STREAM:
        s.listen()
    return s

result = {}
'''

EPILOGUE = r"""
result["refused"] = guard.refused
result["on_refused"] = REFUSED
result["tripped"] = TRIPPED
print("RESULT " + json.dumps(result))
"""


def run_guarded(body: str) -> dict[str, Any]:
    """Run ``body`` after the prelude in a fresh interpreter; its ``result`` dict."""
    code = PRELUDE + textwrap.dedent(body) + EPILOGUE
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, proc.stdout + proc.stderr
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    assert result["tripped"] == [], "the guard let through what it should have refused"
    return result


def assert_refused_by_guard(outcome: dict[str, Any], target: str) -> None:
    assert outcome.get("error") == "EgressRefused", outcome
    assert outcome["guard"] is True
    assert target in outcome["message"]
    assert "refused by intramuros policy" in outcome["message"]


# -- in the subprocess: the installed guard ------------------------------------


def test_connect_outside_policy_refused_before_syscall() -> None:
    r = run_guarded("""
        s = socket.socket()
        result["connect"] = attempt(lambda: s.connect(("127.0.0.2", 9)))
        result["connect_ex"] = attempt(lambda: s.connect_ex(("127.0.0.2", 9)))
        s.close()
    """)
    assert_refused_by_guard(r["connect"], "127.0.0.2:9")
    # connect_ex reports errors as an errno, but a refusal is still raised.
    assert_refused_by_guard(r["connect_ex"], "127.0.0.2:9")
    assert r["on_refused"] == ["127.0.0.2:9", "127.0.0.2:9"]


def test_refusal_is_counted_reported_and_a_permission_error() -> None:
    r = run_guarded("""
        s = socket.socket()
        try:
            s.connect(("127.0.0.2", 9))
        except EgressRefused as exc:
            result["type"] = [isinstance(exc, PermissionError), isinstance(exc, OSError)]
            result["target"], result["event"], result["errno"] = exc.target, exc.event, exc.errno
        s.close()
    """)
    assert r["type"] == [True, True]
    assert (r["target"], r["event"]) == ("127.0.0.2:9", "socket.connect")
    assert r["errno"] == 13
    assert r["refused"] == 1
    assert r["on_refused"] == ["127.0.0.2:9"]


def test_connect_to_allowed_loopback_server() -> None:
    r = run_guarded("""
        srv = listener()
        port = srv.getsockname()[1]
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        peer, _ = srv.accept()
        c.sendall(b"ping")
        result["received"] = peer.recv(4).decode()
        for s in (c, peer, srv):
            s.close()
    """)
    assert r["received"] == "ping"
    assert r["refused"] == 0


def test_lookup_of_unlisted_name_refused_without_resolver() -> None:
    r = run_guarded("""
        result["getaddrinfo"] = attempt(lambda: socket.getaddrinfo("example.invalid", 80))
        result["bytes"] = attempt(lambda: socket.getaddrinfo(b"example.invalid", 80))
        result["gethostbyname"] = attempt(lambda: socket.gethostbyname("example.invalid"))
        result["gethostbyname_ex"] = attempt(lambda: socket.gethostbyname_ex("example.invalid"))
        result["gethostbyaddr"] = attempt(lambda: socket.gethostbyaddr("127.0.0.2"))
        result["getnameinfo"] = attempt(lambda: socket.getnameinfo(("127.0.0.2", 9), 0))
    """)
    # EgressRefused, not socket.gaierror/herror: the guard stopped the lookup.
    assert_refused_by_guard(r["getaddrinfo"], "example.invalid:80")
    assert_refused_by_guard(r["bytes"], "example.invalid:80")
    assert_refused_by_guard(r["gethostbyname"], "example.invalid")
    assert_refused_by_guard(r["gethostbyname_ex"], "example.invalid")
    assert_refused_by_guard(r["gethostbyaddr"], "127.0.0.2")
    assert_refused_by_guard(r["getnameinfo"], "127.0.0.2:9")
    assert r["refused"] == 6
    assert r["on_refused"][0] == "example.invalid:80"


def test_name_in_socket_address_refused_before_cpython_resolves_it() -> None:
    # connect(("name", port)) resolves the name inside CPython before the
    # socket.connect audit event: the guard's socket wrappers must catch it.
    r = run_guarded("""
        tcp = socket.socket()
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        result["connect"] = attempt(lambda: tcp.connect(("example.invalid", 80)))
        result["connect_ex"] = attempt(lambda: tcp.connect_ex(("example.invalid", 80)))
        result["sendto"] = attempt(lambda: udp.sendto(b"x", ("example.invalid", 53)))
        result["sendto_flags"] = attempt(lambda: udp.sendto(b"x", 0, ("example.invalid", 53)))
        result["sendmsg"] = attempt(lambda: udp.sendmsg([b"x"], [], 0, ("example.invalid", 53)))
        tcp.close()
        udp.close()
    """)
    assert_refused_by_guard(r["connect"], "example.invalid:80")
    assert_refused_by_guard(r["connect_ex"], "example.invalid:80")
    for key in ("sendto", "sendto_flags", "sendmsg"):
        assert_refused_by_guard(r[key], "example.invalid:53")
    assert r["refused"] == 5


def test_localhost_lookup_and_connect_by_name_allowed() -> None:
    r = run_guarded("""
        infos = socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)
        result["addresses"] = sorted({i[4][0] for i in infos})
        srv = listener()
        c = socket.create_connection(("localhost", srv.getsockname()[1]), timeout=10)
        result["connected"] = c.getpeername()[0]
        for s in (c, srv):
            s.close()
    """)
    assert r["addresses"]
    assert all(ipaddress.ip_address(a).is_loopback for a in r["addresses"])
    assert r["connected"] == "127.0.0.1"
    assert r["refused"] == 0


def test_update_allows_a_host_added_at_run_time() -> None:
    r = run_guarded("""
        srv = listener("127.0.0.2")
        port = srv.getsockname()[1]
        s = socket.socket()
        result["before"] = attempt(lambda: s.connect(("127.0.0.2", port)))
        s.close()
        guard.update(guard.policy.with_hosts("127.0.0.2"))
        s = socket.socket()
        s.settimeout(10)
        result["after"] = attempt(lambda: s.connect(("127.0.0.2", port)))
        result["closed_port"] = attempt(lambda: socket.create_connection(("127.0.0.2", 9), 10))
        s.close()
        guard.update(ONLY_127_0_0_1)
        s = socket.socket()
        result["removed"] = attempt(lambda: s.connect(("127.0.0.2", port)))
        s.close()
        srv.close()
    """)
    assert_refused_by_guard(r["before"], "127.0.0.2:")
    assert r["after"] == {"ok": "None"}
    # Past the guard, the kernel answers: connection refused, not EgressRefused.
    assert r["closed_port"]["error"] == "ConnectionRefusedError", r["closed_port"]
    assert r["closed_port"]["guard_in_chain"] is False
    assert_refused_by_guard(r["removed"], "127.0.0.2:")
    assert r["refused"] == 2


def test_addresses_resolved_from_an_allowed_name_are_allowed() -> None:
    # With only 127.0.0.2/32 in networks, 127.0.0.1 is outside the policy; but
    # "localhost" is an allowed name, so once a lookup of it has returned
    # 127.0.0.1, connects there are allowed (as for an upstream's host name).
    r = run_guarded("""
        srv = listener()
        port = srv.getsockname()[1]
        guard.update(EgressPolicy(networks=(ipaddress.ip_network("127.0.0.2/32"),)))
        s = socket.socket()
        result["before"] = attempt(lambda: s.connect(("127.0.0.1", port)))
        s.close()
        infos = socket.getaddrinfo("localhost", port, socket.AF_INET, socket.SOCK_STREAM)
        result["resolved"] = sorted({i[4][0] for i in infos})
        s = socket.socket()
        s.settimeout(10)
        result["after"] = attempt(lambda: s.connect(("127.0.0.1", port)))
        s.close()
        srv.close()

        # A name dropped from the policy takes its addresses with it.
        guard.update(ONLY_127_0_0_1.with_hosts("upstream.test"))
        guard._record("upstream.test", ["::1"])  # as a lookup of the name would
        s = socket.socket(socket.AF_INET6)
        result["recorded"] = attempt(lambda: s.connect_ex(("::1", 9)))
        s.close()
        guard.update(ONLY_127_0_0_1)
        s = socket.socket(socket.AF_INET6)
        result["dropped"] = attempt(lambda: s.connect_ex(("::1", 9)))
        s.close()
    """)
    assert_refused_by_guard(r["before"], "127.0.0.1:")
    assert r["resolved"] == ["127.0.0.1"]
    assert r["after"] == {"ok": "None"}
    # connect_ex returns an errno instead of raising (ECONNREFUSED, or
    # EADDRNOTAVAIL where IPv6 is off): either way the guard let it through.
    assert "ok" in r["recorded"], r["recorded"]
    assert_refused_by_guard(r["dropped"], "[::1]:9")
    assert r["refused"] == 2


def test_udp_sendto_outside_policy_refused_inside_allowed() -> None:
    r = run_guarded("""
        rx = listener(kind=socket.SOCK_DGRAM)
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        result["outside"] = attempt(lambda: tx.sendto(b"x", ("127.0.0.2", 9)))
        result["sendmsg"] = attempt(lambda: tx.sendmsg([b"x"], [], 0, ("127.0.0.2", 9)))
        result["connect"] = attempt(lambda: tx.connect(("127.0.0.2", 9)))
        tx.sendto(b"hello", rx.getsockname())
        rx.settimeout(10)
        result["received"] = rx.recv(16).decode()
        tx.close()
        rx.close()
    """)
    assert_refused_by_guard(r["outside"], "127.0.0.2:9")
    assert "socket.sendto" in r["outside"]["message"]
    assert_refused_by_guard(r["sendmsg"], "127.0.0.2:9")
    assert_refused_by_guard(r["connect"], "127.0.0.2:9")
    assert r["received"] == "hello"
    assert r["refused"] == 3


def test_unix_sockets_always_allowed(tmp_path: Any) -> None:
    path = tmp_path / "s.sock"
    r = run_guarded(f"""
        a, b = socket.socketpair()
        a.sendall(b"pair")
        result["pair"] = b.recv(4).decode()
        srv = socket.socket(socket.AF_UNIX)
        srv.bind({str(path)!r})
        srv.listen()
        c = socket.socket(socket.AF_UNIX)
        c.connect({str(path)!r})
        peer, _ = srv.accept()
        c.sendall(b"unix")
        result["stream"] = peer.recv(4).decode()
        d = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        result["dgram"] = attempt(lambda: d.sendto(b"x", {str(path) + "-absent"!r}))
        for s in (a, b, c, peer, srv, d):
            s.close()
    """)
    assert r["pair"] == "pair"
    assert r["stream"] == "unix"
    assert r["dgram"]["error"] == "FileNotFoundError"  # the kernel's answer, not the guard's
    assert r["refused"] == 0


def test_other_address_families_refused() -> None:
    r = run_guarded("""
        if hasattr(socket, "AF_VSOCK"):
            try:
                v = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
            except OSError:
                result["vsock"] = "unsupported"
            else:
                result["vsock"] = attempt(lambda: v.connect((2, 9)))
                v.close()
        else:
            result["vsock"] = "unsupported"
    """)
    if r["vsock"] == "unsupported":
        pytest.fail("no AF_VSOCK sockets here: this machine cannot run this check")
    assert r["vsock"]["guard"] is True
    assert "address family" in r["vsock"]["message"]


def test_httpx_request_fails_with_transport_error_from_guard() -> None:
    r = run_guarded("""
        import httpx
        with httpx.Client(trust_env=False, timeout=10) as client:
            result["sync"] = attempt(lambda: client.get("http://127.0.0.2:9/"))
            result["transport"] = issubclass(getattr(httpx, result["sync"]["error"]),
                                             httpx.TransportError)
    """)
    assert r["sync"]["error"] == "ConnectError", r["sync"]
    assert r["transport"] is True
    assert r["sync"]["guard_in_chain"] is True
    assert "127.0.0.2:9" in r["on_refused"][0]


def test_asyncio_and_async_httpx_refused() -> None:
    r = run_guarded("""
        import asyncio, httpx

        async def main():
            result["open_connection"] = await async_attempt(
                asyncio.open_connection("127.0.0.2", 9))
            async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
                result["httpx"] = await async_attempt(client.get("http://127.0.0.2:9/"))
            srv = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
            port = srv.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("localhost", port)
            result["allowed"] = True
            writer.close()
            srv.close()

        async def async_attempt(coro):
            try:
                await coro
            except Exception as exc:
                return describe(exc)
            return {"ok": True}

        asyncio.run(main())
    """)
    assert r["open_connection"]["guard_in_chain"] is True, r["open_connection"]
    assert r["httpx"]["error"] == "ConnectError", r["httpx"]
    assert r["httpx"]["guard_in_chain"] is True
    assert r["allowed"] is True


def test_install_is_idempotent_and_single() -> None:
    r = run_guarded("""
        guard.install()
        result["same"] = current_guard() is guard
        result["again"] = install_guard(ONLY_127_0_0_1) is guard
        result["callback_kept"] = guard.on_refused == REFUSED.append
        try:
            EgressGuard(EgressPolicy()).install()
        except RuntimeError as exc:
            result["second"] = str(exc)
        result["installed"] = guard.installed
    """)
    assert r["same"] is True
    assert r["again"] is True
    assert r["callback_kept"] is True
    assert "another EgressGuard" in r["second"]
    assert r["installed"] is True


def test_failing_or_reentrant_callback_never_replaces_the_refusal() -> None:
    r = run_guarded("""
        def noisy(target):
            REFUSED.append(target)
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)   # e.g. remote syslog
            s.sendto(b"refused " + target.encode(), ("127.0.0.2", 514))

        guard.on_refused = noisy
        s = socket.socket()
        result["connect"] = attempt(lambda: s.connect(("127.0.0.2", 9)))
        s.close()
    """)
    assert_refused_by_guard(r["connect"], "127.0.0.2:9")
    # The callback's own send was refused too, without calling it again.
    assert r["on_refused"] == ["127.0.0.2:9"]
    assert r["refused"] == 2


def test_no_guard_until_installed() -> None:
    code = (
        "from intramuros.egress import current_guard, EgressGuard, EgressPolicy\n"
        "import _socket, socket\n"
        "g = EgressGuard(EgressPolicy())\n"
        "print(current_guard() is None, g.installed,\n"
        "      socket.socket.connect is _socket.socket.connect)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    assert out == ["True", "False", "True"]  # nothing installed, nothing wrapped


# -- in process: the policy alone (no hook installed) -------------------------


def test_default_policy_allows_loopback_only() -> None:
    p = EgressPolicy()
    assert p.networks == LOOPBACK_NETWORKS
    for ip in ("127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"):
        assert p.allows_address(ip), ip
    for ip in ("10.0.0.5", "192.168.1.1", "8.8.8.8", "0.0.0.0", "::", "::2", "fe80::1",
               "::ffff:10.0.0.5", "not-an-ip", "", "127.1"):  # fmt: skip
        assert not p.allows_address(ip), ip
    assert p.allows_address(ipaddress.ip_address("127.0.0.9"))


def test_policy_names() -> None:
    p = EgressPolicy(hosts=frozenset({"GPU-Box.", "10.0.0.5", "[FE80::1]"}))
    assert p.hosts == {"gpu-box", "10.0.0.5", "fe80::1"}
    for name in ("localhost", "LOCALHOST.", "gpu-box", "gpu-box.", "GPU-BOX", "127.0.0.1",
                 "::1", "10.0.0.5", "fe80::1", "fe80:0:0::1", "::ffff:10.0.0.5"):  # fmt: skip
        assert p.allows_name(name), name
    for name in ("example.invalid", "gpu-box.example", "sub.localhost", "", "10.0.0.6",
                 "*.gpu-box", "localhost:80"):  # fmt: skip
        assert not p.allows_name(name), name
    assert p.allows_address("10.0.0.5")
    assert not p.allows_address("gpu-box")


def test_policy_networks_and_helpers() -> None:
    p = EgressPolicy(networks=(ipaddress.ip_network("127.0.0.1/32"),))
    assert p.allows_address("127.0.0.1")
    assert not p.allows_address("127.0.0.2")
    assert not p.allows_address("::1")
    assert not p.allows_name("127.0.0.2")
    assert p.allows_name("localhost")  # always: it resolves from /etc/hosts

    q = p.with_hosts("Gpu-Box", "127.0.0.2")
    assert q.hosts == {"gpu-box", "127.0.0.2"}
    assert q.networks == p.networks
    assert q.allows_address("127.0.0.2")
    assert p.hosts == frozenset()  # policies are immutable

    r = EgressPolicy.from_config(["10.1.0.0/16", "::1/128"], ["vllm.lan"])
    assert r.allows_address("10.1.2.3")
    assert not r.allows_address("127.0.0.1")
    assert r.allows_name("vllm.lan")
    with pytest.raises(ValueError):
        EgressPolicy.from_config(["not-a-network"])
    with pytest.raises(TypeError):
        EgressPolicy.from_config(hosts="gpu-box")
    with pytest.raises(AttributeError):
        p.hosts = frozenset({"x"})  # type: ignore[misc]


def test_refused_error() -> None:
    exc = EgressRefused("example.invalid:443", "socket.getaddrinfo")
    assert isinstance(exc, PermissionError)
    assert exc.errno == 13
    assert exc.target == "example.invalid:443"
    assert "example.invalid:443" in str(exc)
    assert "refused by intramuros policy" in str(exc)
    again = pickle.loads(pickle.dumps(exc))
    assert (type(again), again.target, again.event) == (EgressRefused, exc.target, exc.event)
    assert str(again) == str(exc)
