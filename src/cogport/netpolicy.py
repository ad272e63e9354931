"""Which network addresses this server may be made to reach: input URLs and webhook targets.

Host names are parsed once, in every encoding HTTP clients accept (``127.1``, ``2130706433``, ``0x7f.1``,
``[::ffff:127.0.0.1]``), and names are resolved (IPv4 and IPv6) so the addresses, not the spelling, decide.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_HOST_CHARS = re.compile(r"[a-z0-9.\-_:\[\]]+", re.IGNORECASE)


def ambiguous(url: str) -> bool:
    """Whether URL parsers may disagree on ``url``'s host (a backslash, user info, %-encoded or other odd
    characters in the host): then what is checked here might not be what a downloader connects to."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return True
    return "\\" in url or "@" in parts.netloc or not _HOST_CHARS.fullmatch(host)


_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT: not is_private, but not public either


def parse_address(host: str) -> Address | None:
    """``host`` as an IP address if it is one in any accepted spelling, else ``None`` (a name)."""
    host = host.strip("[]").lower()
    try:
        address: Address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        if not host or not all(c in "0123456789abcdefx." for c in host):
            return None
        try:  # the shorthand forms HTTP clients accept: 127.1, 2130706433, 0x7f.1
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_local_address(address: Address) -> bool:
    """Loopback, link-local (cloud metadata) and unspecified addresses."""
    return address.is_loopback or address.is_link_local or address.is_unspecified


def is_private_address(address: Address) -> bool:
    """Local addresses plus private, shared (CGNAT), reserved and multicast ones: anything not public."""
    return (
        is_local_address(address)
        or address.is_private
        or address.is_reserved
        or address.is_multicast
        or (isinstance(address, ipaddress.IPv4Address) and address in _SHARED)
    )


def is_local_host(host: str | None) -> bool:
    """Loopback, link-local and unspecified addresses, and ``localhost``, without resolving a name."""
    if not host:
        return True
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    address = parse_address(host)
    return address is not None and is_local_address(address)


async def resolve(host: str, port: int) -> list[Address]:
    """Every address ``host`` resolves to (IPv4 and IPv6); raises :class:`OSError` when it does not."""
    literal = parse_address(host)
    if literal is not None:
        return [literal]
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found = [parse_address(str(info[4][0])) for info in infos]
    return [address for address in found if address is not None]


@dataclass(frozen=True)
class HostRule:
    """An ``allowed_hosts``/``denied_hosts`` entry: ``example.com`` (that name), ``.example.com`` (it and
    every name under it), or an address or network (``10.1.2.3``, ``10.1.0.0/16``, ``fd00::/8``), which
    matches the addresses a name resolves to."""

    name: str | None = None
    network: Network | None = None

    @classmethod
    def parse(cls, entry: str) -> HostRule:
        entry = entry.strip().lower()
        try:
            return cls(network=ipaddress.ip_network(entry.strip("[]"), strict=False))
        except ValueError:
            return cls(name=entry)

    def matches(self, host: str, addresses: Iterable[Address]) -> bool:
        if self.network is not None:
            return any(address.version == self.network.version and address in self.network for address in addresses)
        assert self.name is not None
        if self.name.startswith("."):
            return host == self.name[1:] or host.endswith(self.name)
        return host == self.name


@dataclass(frozen=True)
class Refusal:
    reason: str
    retry: bool = False
    """True when the check could not be made (the name did not resolve): it may work later."""


Resolver = Callable[[str, int], Awaitable[list[Address]]]


@dataclass(frozen=True)
class Admitted:
    """A URL the policy lets through, with the addresses checked: connect to one of these, not to what the
    name resolves to later (see :func:`pinned`)."""

    url: str
    host: str
    addresses: tuple[Address, ...]


@dataclass(frozen=True)
class HostPolicy:
    """Whether a URL's host may be reached; see :meth:`check`."""

    allow_private_networks: bool = False
    allowed: tuple[HostRule, ...] = field(default=())
    denied: tuple[HostRule, ...] = field(default=())
    settings_prefix: str = "COGPORT_WEBHOOKS"
    """Where its settings live (named in refusals)."""
    refuse_local: bool = False
    """Refuse loopback, link-local and unspecified addresses even when private networks are allowed
    (entries of ``allowed`` still admit them)."""
    resolver: Resolver = field(default=lambda host, port: resolve(host, port), compare=False)
    """How names become addresses (:func:`resolve`; tests give a name two answers to show pinning)."""

    @classmethod
    def of(
        cls,
        allow_private_networks: bool,
        allowed: Iterable[str] = (),
        denied: Iterable[str] = (),
        *,
        settings_prefix: str = "COGPORT_WEBHOOKS",
        refuse_local: bool = False,
    ) -> HostPolicy:
        return cls(
            allow_private_networks,
            tuple(HostRule.parse(entry) for entry in allowed),
            tuple(HostRule.parse(entry) for entry in denied),
            settings_prefix,
            refuse_local,
        )

    async def check(self, url: str) -> Refusal | None:
        """``None`` when ``url`` may be reached, else why not (see :meth:`admit`)."""
        verdict = await self.admit(url)
        return verdict if isinstance(verdict, Refusal) else None

    async def admit(self, url: str) -> Admitted | Refusal:
        """The addresses ``url`` may be reached at, or why it may not.

        Order: a denied entry refuses; with ``allowed`` set, only a host matching one of its entries
        passes (and such a host may be private); otherwise a host any of whose addresses is not public is
        refused unless private networks are allowed.
        """
        try:
            parts = urlsplit(url)
            host = (parts.hostname or "").rstrip(".")
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:  # bad brackets, a port out of range
            return Refusal(f"it is not a valid URL ({exc})")
        if parts.scheme not in ("http", "https") or not host:
            return Refusal("it is not an http(s) URL with a host")

        private_refused = not self.allow_private_networks and not self.allowed
        local_refused = (private_refused or self.refuse_local) and not self.allowed
        if local_refused and is_local_host(host):  # localhost names need no resolving to be refused
            return self._private(host) if private_refused else self._local(host)
        try:
            addresses = await self.resolver(host, port)
        except (OSError, ValueError) as exc:
            return Refusal(f"its host {host!r} does not resolve ({exc})", retry=True)
        if not addresses:
            return Refusal(f"its host {host!r} does not resolve", retry=True)
        if any(rule.matches(host, addresses) for rule in self.denied):
            return Refusal(f"its host {host!r} is denied ({self.settings_prefix}__DENIED_HOSTS)")
        if self.allowed:
            if any(rule.matches(host, addresses) for rule in self.allowed):
                return Admitted(url, host, tuple(addresses))
            return Refusal(f"its host {host!r} is not in {self.settings_prefix}__ALLOWED_HOSTS")
        if private_refused and any(map(is_private_address, addresses)):
            return self._private(host)
        if local_refused and any(map(is_local_address, addresses)):
            return self._local(host)
        return Admitted(url, host, tuple(addresses))

    def _local(self, host: str) -> Refusal:
        return Refusal(
            f"its host {host!r} is a loopback or link-local address "
            f"(admitted only by an entry of {self.settings_prefix}__ALLOWED_HOSTS)"
        )

    def _private(self, host: str) -> Refusal:
        return Refusal(
            f"its host {host!r} is a loopback, link-local or private address "
            f"(allowed with {self.settings_prefix}__ALLOW_PRIVATE_NETWORKS=true)"
        )


def pinned(client: httpx.AsyncClient, method: str, admitted: Admitted, **kwargs: object) -> httpx.Request:
    """A request for ``admitted.url`` that connects to the first address checked, whatever the name
    resolves to by then (DNS rebinding): the URL carries the address, ``Host`` the name, and for HTTPS the
    TLS server name (SNI, and the name the certificate is verified against) stays the name."""
    url = httpx.URL(admitted.url)
    address = admitted.addresses[0]
    headers = httpx.Headers(kwargs.pop("headers", None) or {})  # type: ignore[arg-type]
    headers["Host"] = url.netloc.decode("ascii").rpartition("@")[2]
    extensions: dict[str, object] = {}
    if url.scheme == "https":
        extensions["sni_hostname"] = url.host
    request = client.build_request(method, url.copy_with(host=str(address)), headers=headers, **kwargs)  # type: ignore[arg-type]
    request.extensions.update(extensions)
    return request
