"""Where the web source may connect: allowed hosts and ports, and public addresses only.

Two rules guard every request the crawler sends (start URLs, links, images, robots.txt
and every redirect hop, robots.txt redirects included):

* **Allowed origins.** ``allowed_hosts`` / ``allowed_image_hosts`` entries are ``host``
  or ``host:port`` (IPv6 literals in brackets: ``[2001:db8::1]:8443``). An entry without
  a port allows the default port of the URL's scheme only (80 for http, 443 for https),
  so ``example.org`` covers ``http://example.org/`` and ``https://example.org/`` but not
  ``http://example.org:8080/``; an entry with a port allows that port only.
  :class:`AllowedOrigins` says whether a URL fits a list of entries.
* **Public addresses.** Unless ``allow_private_addresses`` is set, a host is refused when
  *any* address it resolves to (or, for an IP literal, the address itself) is loopback,
  link-local, private, reserved, multicast, unspecified or otherwise not globally
  routable, IPv4 and IPv6 alike. IPv4 addresses carried inside IPv6 ones (IPv4-mapped,
  6to4, the NAT64 prefix) are judged as the IPv4 address. :func:`address_problem` is the
  classifier.

The address rule is enforced in two places, on purpose:

1. Before each hop, :func:`host_address_refusal` resolves the host and checks every
   address. This gives a clear refusal (its own outcome reason) before anything is sent,
   robots.txt included.
2. When a connection is opened, :class:`GuardedAdapter` resolves the host again, checks
   every address and connects only to an address it has just checked. A resolver answer
   that changes between 1 and 2 (DNS rebinding: public when checked, internal when
   connecting) therefore cannot reach an internal address: the check and the connect use
   the same answer. Pooled keep-alive connections stay on the address they were opened to.

Proxies would defeat 2 (the connection goes to the proxy, which resolves the host
itself), so the guarded session ignores proxy settings from the environment and the
adapter refuses to build proxied connections.
"""
from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, LocationParseError, NameResolutionError, NewConnectionError
from urllib3.util import connection

_DEFAULT_PORTS = {"http": 80, "https": 443}
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052 well-known prefix: IPv4 in the last 32 bits
_PRIVATE_HINT = "set allow_private_addresses: true only to crawl a server you run on a private network"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressRefused(Exception):
    """A connection to a non-public address was refused before it was opened.

    Deliberately not an ``OSError``: urllib3 would take one for a network failure and
    retry it, while a policy refusal must end the request at once.
    """


# --- hosts and ports ------------------------------------------------------------
def canonical_host(host: str) -> str:
    """A host name lower-cased without a trailing dot; an IP literal in its compressed form."""
    host = host.strip().lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def url_port(url: str) -> int:
    """The port a URL connects to: the explicit one, else its scheme's default.

    Raises:
        ValueError: When the port is not a number in 0-65535 or the scheme is not http(s).
    """
    parts = urlsplit(url)
    port = parts.port  # raises ValueError for a port out of range or not a number
    if port is not None:
        return port
    if parts.scheme not in _DEFAULT_PORTS:
        raise ValueError(f"{url!r} is not an http(s) URL")
    return _DEFAULT_PORTS[parts.scheme]


def format_entry(host: str, port: int | None) -> str:
    """An allowed-hosts entry: ``host``, ``host:port``, ``[v6]`` or ``[v6]:port``."""
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


def parse_entry(entry: str) -> tuple[str, int | None]:
    """Split an allowed-hosts entry into ``(canonical host, port or None)``.

    Raises:
        ValueError: With what a valid entry looks like, when ``entry`` is not one.
    """
    text = str(entry).strip()
    usage = (f"allowed host entry {entry!r} is not 'host' or 'host:port' (IPv6 in brackets, e.g. "
             f"'[2001:db8::1]:8443'); give the host name without scheme, path or user")
    if not text or any(c in text for c in "/@?#\\ \t"):
        raise ValueError(usage)
    port_text = ""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(usage)
        port_text = rest[1:] if rest else ""
        if rest and not port_text:
            raise ValueError(usage)
    elif text.count(":") > 1:  # a bare IPv6 literal cannot carry a port
        host = text
    else:
        host, colon, port_text = text.partition(":")
        if colon and not port_text:
            raise ValueError(usage)
    if not host:
        raise ValueError(usage)
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(usage) from None
    port: int | None = None
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"allowed host entry {entry!r}: the port must be a number in 1-65535")
        port = int(port_text)
    return canonical_host(host), port


def entry_for_url(url: str) -> str:
    """The allowed-hosts entry that admits exactly the host and port of ``url``.

    A URL on its scheme's default port gives a port-less entry, which also admits the
    other scheme's default port: ``http://example.org/`` allows the common redirect to
    ``https://example.org/``.

    Raises:
        ValueError: When the URL has no host or an invalid port.
    """
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"{url!r} has no host")
    port = parts.port
    if port == _DEFAULT_PORTS.get(parts.scheme):
        port = None
    return format_entry(canonical_host(parts.hostname), port)


class AllowedOrigins:
    """A list of allowed-hosts entries, answering whether a URL may be fetched.

    Args:
        entries: ``host`` / ``host:port`` strings (see :func:`parse_entry`).
    """

    def __init__(self, entries: Iterable[str]) -> None:
        self.entries = [parse_entry(entry) for entry in entries]
        self.hosts = {host for host, _port in self.entries}

    def refusal(self, url: str) -> tuple[str, str] | None:
        """Why ``url`` is outside the allowed origins, or None when it is inside.

        Returns:
            None, or ``("host", detail)`` when the host is not listed at all, or
            ``("port", detail)`` when the host is listed but not with this port.
        """
        parts = urlsplit(url)
        host = canonical_host(parts.hostname or "")
        if host not in self.hosts:
            return "host", f"host {host!r} is not an allowed host"
        try:
            port = url_port(url)
        except ValueError as error:
            return "port", f"unusable port in {url!r}: {error}"
        default = _DEFAULT_PORTS.get(parts.scheme)
        for allowed_host, allowed_port in self.entries:
            if allowed_host == host and (allowed_port == port or (allowed_port is None and port == default)):
                return None
        allowed = ", ".join(format_entry(h, p) for h, p in self.entries if h == host)
        return "port", f"port {port} of {host!r} is not allowed (allowed: {allowed})"


# --- addresses ----------------------------------------------------------------------
def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, NAT64), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_problem(address: str | IPAddress) -> str:
    """Why an address is not a public one, or ``""`` when it is.

    Args:
        address: An IPv4 or IPv6 address (an IPv6 scope suffix such as ``%eth0`` is allowed).

    Returns:
        ``""`` for a globally routable unicast address, else one of "unspecified",
        "loopback", "link-local", "multicast", "private", "reserved" or "not globally
        routable" (shared/CGNAT, documentation and benchmarking ranges, ...).

    Raises:
        ValueError: When ``address`` is not an IP address.
    """
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            problem = address_problem(inner)
            if problem or ip.ipv4_mapped is not None:  # a mapped address is just the IPv4 one
                return problem
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
    )
    for name, hit in checks:
        if hit:
            return name
    return "" if ip.is_global else "not globally routable"


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to for a TCP connection, in resolver order, unique.

    An IP literal is returned as is, without asking the resolver.

    Raises:
        socket.gaierror: When the name does not resolve.
    """
    bare = host[1:-1] if host.startswith("[") else host
    try:
        return [str(ipaddress.ip_address(bare))]
    except ValueError:
        pass
    addresses: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in socket.getaddrinfo(bare, port, type=socket.SOCK_STREAM):
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def _refusal_of(host: str, addresses: list[str]) -> str | None:
    """Why one of ``host``'s addresses is not public, or None when all are."""
    literal = canonical_host(host.strip("[]"))
    for address in addresses:
        problem = address_problem(address.split("%", 1)[0])
        if problem:
            what = (f"{host} is a {problem} address" if address == literal
                    else f"{host} resolves to {address} ({problem})")
            return f"{what}; {_PRIVATE_HINT}"
    return None


def host_address_refusal(host: str, port: int) -> str | None:
    """Resolve ``host`` and say why it may not be contacted, or None when it may.

    Every address the name resolves to must be public: one internal address among
    public ones is enough to refuse. A name that does not resolve gives None; the request
    then fails on the same lookup and is reported as a network failure.
    """
    try:
        addresses = resolve(host, port)
    except (OSError, UnicodeError):  # gaierror, or a label IDNA cannot encode
        return None
    return _refusal_of(host, addresses)


# --- the connection-time guard -------------------------------------------------------
class _GuardedConnectionMixin:
    """Resolve, check every address, then connect only to an address just checked.

    Replaces urllib3's ``HTTPConnection._new_conn``, raising the same urllib3 errors for
    network failures (so retries behave as before) and :class:`AddressRefused` for a
    non-public address, before any socket is opened.
    """

    def _new_conn(self: Any) -> socket.socket:
        try:
            addresses = resolve(self.host, self.port)
        except socket.gaierror as error:
            raise NameResolutionError(self.host, self, error) from error
        except UnicodeError:  # what urllib3 itself raises for a name IDNA cannot encode
            raise LocationParseError(f"'{self.host}', label empty or too long") from None
        refused = _refusal_of(self.host, addresses)
        if refused:
            raise AddressRefused(refused)
        error: Exception = NewConnectionError(self, f"{self.host!r} resolved to no address")
        for address in addresses:  # like socket.create_connection: the first address that answers
            try:
                return connection.create_connection(
                    (address, self.port), self.timeout,
                    source_address=self.source_address, socket_options=self.socket_options,
                )
            except TimeoutError as timeout:
                error = ConnectTimeoutError(
                    self, f"Connection to {self.host} timed out. (connect timeout={self.timeout})")
                error.__cause__ = timeout
            except OSError as failure:
                error = NewConnectionError(self, f"Failed to establish a new connection: {failure}")
                error.__cause__ = failure
        raise error


class _GuardedHTTPConnection(_GuardedConnectionMixin, HTTPConnection):
    pass


class _GuardedHTTPSConnection(_GuardedConnectionMixin, HTTPSConnection):
    pass  # TLS still verifies the certificate against the host name, not the address


class _GuardedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class GuardedAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` whose connections go to public addresses only.

    Raises :class:`AddressRefused` (through ``session.get``) when a host resolves to a
    non-public address; no connection is opened then.
    """

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _GuardedHTTPConnectionPool,
            "https": _GuardedHTTPSConnectionPool,
        }

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        raise AddressRefused(
            f"proxy {proxy!r} refused: behind a proxy the crawler cannot check which address a request "
            "reaches; remove the session's proxy setting (the address check needs direct connections)"
        )
