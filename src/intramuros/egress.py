"""Egress guard: refuse outbound connections made from Python code in this process.

The gateway must talk only to this machine and to the upstream engines the
operator configured. :class:`EgressGuard` enforces that process-wide with an
audit hook (:func:`sys.addaudithook`) on the socket events

* ``socket.connect`` (TCP, and UDP ``connect``), ``socket.sendto`` and
  ``socket.sendmsg`` (unconnected UDP): the peer address must be allowed;
* ``socket.getaddrinfo``, ``socket.gethostbyname`` (also ``gethostbyname_ex``),
  ``socket.gethostbyaddr`` and ``socket.getnameinfo``: the name (or address)
  looked up must be allowed, so a refused name never reaches the resolver and
  no DNS query leaves the machine for it.

Raising inside an audit hook aborts the operation before the system call, so a
refused connect or lookup sends nothing. The caller gets :class:`EgressRefused`
(a :class:`PermissionError`, hence an :class:`OSError`, which HTTP clients such as
httpx report as a connect error that chains to it).

What is allowed (:class:`EgressPolicy`): addresses inside ``networks``
(loopback by default), IP literals and host names listed in ``hosts`` (the
upstream engines' hosts), the name ``localhost``, and any address that a
lookup of an allowed name returned (see below). ``AF_UNIX`` and ``AF_NETLINK``
sockets never leave the machine and are always allowed; other address families
(``AF_PACKET``, ``AF_VSOCK``, Bluetooth, ...) are refused.

Three things the audit events alone cannot do, hence three thin wrappers that
:meth:`EgressGuard.install` puts in place:

1. *Addresses resolved from an allowed name.* The ``socket.getaddrinfo`` event
   shows the name but not the answer, and ``socket.connect`` shows the address
   but not the name it came from. So ``socket.getaddrinfo``,
   ``socket.gethostbyname`` and ``socket.gethostbyname_ex`` are replaced by
   wrappers that, for an allowed name, record the addresses it resolved to;
   connects to those addresses are then allowed. Code that bound the original
   function before :meth:`~EgressGuard.install` (``from socket import
   getaddrinfo``) bypasses the recording, which fails closed: its lookups are
   still checked, its connects to the resolved addresses are refused.
2. *Names in socket addresses.* ``sock.connect(("name", 80))`` (likewise
   ``connect_ex``, ``sendto``, ``sendmsg``) resolves the name inside CPython
   *before* the ``socket.connect`` audit event fires, so the hook alone would
   refuse the connect only after a DNS query had gone out. The methods of
   :class:`socket.socket` are wrapped to check the address first.
3. Nothing else: the audit hook itself still sees every connect, including
   those that bypass the wrappers (``_socket.socket`` used directly).

Limits. Only traffic that goes through Python's :mod:`socket` module is seen.
C code that opens sockets itself (llama.cpp, libcurl, uvloop/libuv, ctypes
calls to ``connect``) and child processes are invisible to audit hooks; the
``strace`` test in ``tests/test_offline.py`` covers C-level connects. Serve
with the stdlib asyncio loop (uvicorn ``loop="asyncio"``), not uvloop, or the
event loop's own connects and lookups bypass the guard. Reverse lookups of
allowed addresses are permitted and go to the system resolver if
``/etc/hosts`` does not answer them. Audit hooks cannot be removed: install one
guard per process (tests run it in a subprocess) and change what it allows
with :meth:`EgressGuard.update`.

The hook is called for every audit event of the process (imports, ``open``,
``id()``...), so non-socket events cost one dict lookup, and an allowed peer
(e.g. loopback) costs one set lookup after the first time it is seen.
"""

from __future__ import annotations

import _socket
import dataclasses
import errno
import functools
import ipaddress
import logging
import socket
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NoReturn, cast

__all__ = [
    "LOOPBACK_NETWORKS",
    "EgressGuard",
    "EgressPolicy",
    "EgressRefused",
    "current_guard",
    "install_guard",
]

_log = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Allowed by default: the whole IPv4 loopback block and ``::1``.
LOOPBACK_NETWORKS: tuple[IPNetwork, ...] = (
    ipaddress.IPv4Network("127.0.0.0/8"),
    ipaddress.IPv6Network("::1/128"),
)

#: Host names allowed without being listed (resolved from /etc/hosts).
LOCAL_NAMES = frozenset({"localhost"})

_INET_FAMILIES = frozenset({socket.AF_INET, socket.AF_INET6})
_LOCAL_FAMILIES = frozenset(
    int(f) for f in (getattr(socket, "AF_UNIX", None), getattr(socket, "AF_NETLINK", None)) if f
)

# The C-level ``family`` member of a socket: an int, without the enum
# conversion that the ``socket.socket.family`` property adds (hot path).
_sock_family: Callable[[Any], int] = cast(Any, vars(_socket.socket)["family"]).__get__

_CACHE_LIMIT = 4096


class EgressRefused(PermissionError):
    """A connect, send or name lookup refused by the egress policy.

    ``target`` is ``host:port`` (or just the host for lookups without a port),
    ``event`` the audit event that was refused. ``errno`` is ``EACCES``.
    """

    def __init__(self, target: str, event: str = "socket.connect") -> None:
        self.target = target
        self.event = event
        super().__init__(
            errno.EACCES,
            f"egress to {target} refused by intramuros policy ({event}): "
            "only loopback and the configured upstream hosts are allowed",
        )

    def __reduce__(self) -> tuple[type[EgressRefused], tuple[str, str]]:
        return (type(self), (self.target, self.event))


def _text(host: object) -> str:
    """A host as text: str as is, bytes decoded (undecodable bytes never match)."""
    if isinstance(host, str):
        return host
    if isinstance(host, bytes | bytearray):
        return bytes(host).decode("ascii", "replace")
    return repr(host)


def _parse_ip(host: str | IPAddress) -> IPAddress | None:
    """The IP address a literal denotes (IPv4-mapped IPv6 as IPv4), else None."""
    if isinstance(host, str):
        try:
            ip: IPAddress = ipaddress.ip_address(host)
        except ValueError:
            return None
    else:
        ip = host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _normalize_host(host: str) -> str:
    """Canonical form for comparisons: IP literals canonical, names lowercase."""
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    ip = _parse_ip(text)
    if ip is not None:
        return str(ip)
    return text.lower().rstrip(".")


def _target(host: str, port: object) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{_text(port)}"


@dataclass(frozen=True)
class EgressPolicy:
    """What this process may connect to and look up.

    ``networks``: addresses always allowed (loopback by default).
    ``hosts``: extra host names and IP literals allowed, typically the hosts of
    the upstream engines (``"gpu-box"``, ``"10.0.0.5"``). Names are compared
    case-insensitively, without a trailing dot; no wildcards.
    """

    networks: tuple[IPNetwork, ...] = LOOPBACK_NETWORKS
    hosts: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if isinstance(self.hosts, str):  # a str is an iterable of one-letter hosts
            raise TypeError("EgressPolicy.hosts must be a collection of host names, not a str")
        nets = tuple(
            ipaddress.ip_network(n) if isinstance(n, str) else n
            for n in cast(Iterable[IPNetwork | str], self.networks)
        )
        object.__setattr__(self, "networks", nets)
        object.__setattr__(self, "hosts", frozenset(_normalize_host(h) for h in self.hosts))

    @classmethod
    def from_config(
        cls,
        networks: Iterable[str | IPNetwork] = LOOPBACK_NETWORKS,
        hosts: Iterable[str] = (),
    ) -> EgressPolicy:
        """A policy from plain settings values (CIDR strings, host names)."""
        if isinstance(hosts, str):
            raise TypeError("hosts must be a collection of host names, not a str")
        nets = tuple(ipaddress.ip_network(n) if isinstance(n, str) else n for n in networks)
        return cls(networks=nets, hosts=frozenset(hosts))

    def with_hosts(self, *hosts: str) -> EgressPolicy:
        """This policy plus more allowed hosts (e.g. a newly added upstream)."""
        return dataclasses.replace(self, hosts=self.hosts | frozenset(hosts))

    def allows_address(self, ip: str | IPAddress) -> bool:
        """Whether a connect to this IP address is allowed by the policy itself.

        (The guard also allows addresses that an allowed name resolved to.)
        Not an IP address: False.
        """
        addr = _parse_ip(ip)
        if addr is None:
            return False
        return any(addr in net for net in self.networks) or str(addr) in self.hosts

    def allows_name(self, host: str) -> bool:
        """Whether looking up (or connecting by) this name is allowed.

        True for ``localhost``, for names and IP literals listed in ``hosts``
        and for IP literals inside ``networks``.
        """
        name = _normalize_host(host)
        if not name:
            return False
        return name in LOCAL_NAMES or name in self.hosts or self.allows_address(name)


class _State:
    """One policy and what was learned under it; replaced wholesale by update()."""

    __slots__ = ("ok", "policy", "resolved", "resolved_ips")

    def __init__(self, policy: EgressPolicy, resolved: dict[str, set[str]]) -> None:
        self.policy = policy
        #: Hosts (as given by callers) already found allowed: the hot path.
        self.ok: set[object] = set()
        #: Allowed name -> addresses it resolved to.
        self.resolved = resolved
        self.resolved_ips: set[str] = set().union(*resolved.values())


_Handler = Callable[[str, tuple[Any, ...]], None]


class EgressGuard:
    """Refuses, process-wide, connects and lookups that the policy does not allow.

    Create it, then :meth:`install` it once; ``refused`` counts refusals and
    ``on_refused(target)`` is called for each one before :class:`EgressRefused`
    is raised (an exception from it is logged, never replaces the refusal).
    """

    def __init__(
        self, policy: EgressPolicy, on_refused: Callable[[str], None] | None = None
    ) -> None:
        self.on_refused = on_refused
        self.refused = 0
        self._state = _State(policy, {})
        self._lock = threading.Lock()
        self._local = threading.local()
        self._installed = False
        self._handlers: dict[str, _Handler] = {
            "socket.connect": self._on_address,
            "socket.sendto": self._on_address,
            "socket.sendmsg": self._on_address,
            "socket.getaddrinfo": self._on_lookup,
            "socket.gethostbyname": self._on_lookup,
            "socket.gethostbyaddr": self._on_lookup,
            "socket.getnameinfo": self._on_nameinfo,
        }

    @property
    def policy(self) -> EgressPolicy:
        return self._state.policy

    @property
    def installed(self) -> bool:
        return self._installed

    def install(self) -> None:
        """Start enforcing, for the life of the process. Idempotent.

        Only one guard can be installed per process (audit hooks cannot be
        removed); installing a second one raises :class:`RuntimeError`.
        """
        global _GUARD
        with _INSTALL_LOCK:
            if self._installed:
                return
            if _GUARD is not None:
                raise RuntimeError("another EgressGuard is installed; use its update()")
            self._wrap_socket_module()
            sys.addaudithook(self._audit)
            self._installed = True
            _GUARD = self

    def update(self, policy: EgressPolicy) -> None:
        """Enforce ``policy`` from now on (e.g. after an upstream is added).

        Addresses recorded for names the new policy still allows stay allowed;
        those of names it drops are forgotten.
        """
        with self._lock:
            kept = {
                name: set(ips)
                for name, ips in self._state.resolved.items()
                if policy.allows_name(name)
            }
            self._state = _State(policy, kept)

    # -- decisions ---------------------------------------------------------

    def _check(self, host: object, port: object, event: str) -> None:
        state = self._state
        try:
            if host in state.ok:
                return
        except TypeError:  # unhashable (bytearray)
            pass
        text = _text(host)
        ip = _parse_ip(text)
        if ip is None:
            allowed = state.policy.allows_name(text)
        else:
            allowed = state.policy.allows_address(ip) or str(ip) in state.resolved_ips
        if not allowed:
            self._refuse(_target(text, port), event)
        if isinstance(host, str | bytes) and len(state.ok) < _CACHE_LIMIT:
            state.ok.add(host)

    def _refuse(self, target: str, event: str) -> NoReturn:
        with self._lock:
            self.refused += 1
        callback = self.on_refused
        # The callback may log, and a log handler may itself try to send
        # somewhere refused: do not call it again from inside itself.
        if callback is not None and not getattr(self._local, "busy", False):
            self._local.busy = True
            try:
                callback(target)
            except Exception:
                _log.exception("egress on_refused callback failed")
            finally:
                self._local.busy = False
        raise EgressRefused(target, event)

    def _record(self, host: object, ips: Iterable[str]) -> None:
        """Remember what an allowed name resolved to (IP literals need not)."""
        if host is None:
            return
        text = _text(host)
        if _parse_ip(text) is not None:
            return
        found = {str(ip) for ip in map(_parse_ip, ips) if ip is not None}
        with self._lock:
            state = self._state
            if not found or not state.policy.allows_name(text):
                return
            name = _normalize_host(text)
            new = found - state.resolved_ips
            if new:
                state.resolved.setdefault(name, set()).update(found)
                state.resolved_ips.update(new)

    # -- audit hook ----------------------------------------------------------

    def _audit(self, event: str, args: tuple[Any, ...]) -> None:
        handler = self._handlers.get(event)
        if handler is not None:
            handler(event, args)

    def _on_address(self, event: str, args: tuple[Any, ...]) -> None:
        sock, address = args[0], args[1]
        if address is None:  # sendmsg on a connected socket: checked at connect
            return
        family = _sock_family(sock)
        if family in _LOCAL_FAMILIES:
            return
        if family in _INET_FAMILIES:
            self._check(address[0], address[1], event)
        else:
            self._refuse(f"{address!r} (address family {family})", event)

    def _on_lookup(self, event: str, args: tuple[Any, ...]) -> None:
        host = args[0]
        if host is None:  # getaddrinfo(None, ...): wildcard or loopback, no lookup
            return
        self._check(host, args[1] if event == "socket.getaddrinfo" else None, event)

    def _on_nameinfo(self, event: str, args: tuple[Any, ...]) -> None:
        sockaddr = args[0]
        if isinstance(sockaddr, tuple) and len(sockaddr) >= 2:
            self._check(sockaddr[0], sockaddr[1], event)
        else:
            self._refuse(repr(sockaddr), event)

    # -- wrappers (see the module docstring for why) --------------------------

    def _precheck(self, event: str, sock: Any, address: Any) -> None:
        """Check a host name in a socket address before CPython resolves it."""
        if (
            type(address) is tuple
            and len(address) >= 2
            and isinstance(address[0], str | bytes | bytearray)
            and _sock_family(sock) in _INET_FAMILIES
        ):
            self._check(address[0], address[1], event)

    def _wrap_socket_module(self) -> None:
        guard = self
        cls = socket.socket
        orig_getaddrinfo = socket.getaddrinfo
        orig_gethostbyname = socket.gethostbyname
        orig_gethostbyname_ex = socket.gethostbyname_ex
        orig_connect = cls.connect
        orig_connect_ex = cls.connect_ex
        orig_sendto: Callable[..., int] = cls.sendto
        orig_sendmsg: Callable[..., int] = cls.sendmsg

        @functools.wraps(orig_getaddrinfo)
        def getaddrinfo(
            host: bytes | str | None,
            port: bytes | str | int | None,
            family: int = 0,
            type: int = 0,
            proto: int = 0,
            flags: int = 0,
        ) -> list[tuple[Any, ...]]:
            result = orig_getaddrinfo(host, port, family, type, proto, flags)
            guard._record(host, [str(r[4][0]) for r in result if r[0] in _INET_FAMILIES])
            return cast(list[tuple[Any, ...]], result)

        @functools.wraps(orig_gethostbyname)
        def gethostbyname(hostname: str, /) -> str:
            ip = orig_gethostbyname(hostname)
            guard._record(hostname, [ip])
            return ip

        @functools.wraps(orig_gethostbyname_ex)
        def gethostbyname_ex(hostname: str, /) -> tuple[str, list[str], list[str]]:
            result = orig_gethostbyname_ex(hostname)
            guard._record(hostname, result[2])
            return result

        @functools.wraps(orig_connect)
        def connect(sock: socket.socket, address: Any, /) -> None:
            guard._precheck("socket.connect", sock, address)
            orig_connect(sock, address)

        @functools.wraps(orig_connect_ex)
        def connect_ex(sock: socket.socket, address: Any, /) -> int:
            guard._precheck("socket.connect", sock, address)
            return orig_connect_ex(sock, address)

        @functools.wraps(orig_sendto)
        def sendto(sock: socket.socket, *args: Any) -> int:
            if len(args) >= 2:  # (data, address) or (data, flags, address)
                guard._precheck("socket.sendto", sock, args[-1])
            return orig_sendto(sock, *args)

        @functools.wraps(orig_sendmsg)
        def sendmsg(sock: socket.socket, *args: Any) -> int:
            if len(args) >= 4:  # (buffers, ancdata, flags, address)
                guard._precheck("socket.sendmsg", sock, args[3])
            return orig_sendmsg(sock, *args)

        for name, function in (
            ("getaddrinfo", getaddrinfo),
            ("gethostbyname", gethostbyname),
            ("gethostbyname_ex", gethostbyname_ex),
        ):
            setattr(socket, name, function)
        for name, method in (
            ("connect", connect),
            ("connect_ex", connect_ex),
            ("sendto", sendto),
            ("sendmsg", sendmsg),
        ):
            setattr(cls, name, method)


_GUARD: EgressGuard | None = None
_INSTALL_LOCK = threading.Lock()


def install_guard(
    policy: EgressPolicy, on_refused: Callable[[str], None] | None = None
) -> EgressGuard:
    """Install the process-wide guard, or update it if one is installed.

    On update, ``on_refused`` replaces the callback only when given.
    """
    with _INSTALL_LOCK:
        guard = _GUARD
    if guard is not None:
        guard.update(policy)
        if on_refused is not None:
            guard.on_refused = on_refused
        return guard
    guard = EgressGuard(policy, on_refused)
    try:
        guard.install()
    except RuntimeError:  # lost a race with another install_guard()
        return install_guard(policy, on_refused)
    return guard


def current_guard() -> EgressGuard | None:
    """The installed guard, if any."""
    return _GUARD
