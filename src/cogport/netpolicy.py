"""Which network addresses this server may be made to reach: input URLs and webhook targets.

Host names are parsed once, in every encoding HTTP clients accept (``127.1``, ``2130706433``, ``0x7f.1``,
``[::ffff:127.0.0.1]``), and names are resolved (IPv4 and IPv6) so the addresses, not the spelling, decide.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_HOST_CHARS = re.compile(r"[a-z0-9.\-_:\[\]]+", re.IGNORECASE)


def ambiguous(url: str) -> bool:
    """Whether URL parsers may disagree on ``url``'s host (a backslash, user info, %-encoded or other odd
    characters in the host): then what is checked here might not be what a downloader connects to."""
    parts = urlsplit(url)
    host = parts.hostname or ""
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


@dataclass(frozen=True)
class HostPolicy:
    """Whether a URL's host may be reached; see :meth:`check`."""

    allow_private_networks: bool = False
    allowed: tuple[HostRule, ...] = field(default=())
    denied: tuple[HostRule, ...] = field(default=())
    settings_prefix: str = "COGPORT_WEBHOOKS"
    """Where its settings live (named in refusals)."""

    @classmethod
    def of(
        cls,
        allow_private_networks: bool,
        allowed: Iterable[str] = (),
        denied: Iterable[str] = (),
        *,
        settings_prefix: str = "COGPORT_WEBHOOKS",
    ) -> HostPolicy:
        return cls(
            allow_private_networks,
            tuple(HostRule.parse(entry) for entry in allowed),
            tuple(HostRule.parse(entry) for entry in denied),
            settings_prefix,
        )

    async def check(self, url: str) -> Refusal | None:
        """``None`` when ``url`` may be reached, else why not.

        Order: a denied entry refuses; with ``allowed`` set, only a host matching one of its entries
        passes (and such a host may be private); otherwise a host any of whose addresses is not public is
        refused unless private networks are allowed.
        """
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".")
        if parts.scheme not in ("http", "https") or not host:
            return Refusal("it is not an http(s) URL with a host")

        private_refused = not self.allow_private_networks and not self.allowed
        if private_refused and is_local_host(host):  # localhost names need no resolving to be refused
            return self._private(host)
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            addresses = await resolve(host, port)
        except (OSError, ValueError) as exc:
            return Refusal(f"its host {host!r} does not resolve ({exc})", retry=True)
        if not addresses:
            return Refusal(f"its host {host!r} does not resolve", retry=True)
        if any(rule.matches(host, addresses) for rule in self.denied):
            return Refusal(f"its host {host!r} is denied ({self.settings_prefix}__DENIED_HOSTS)")
        if self.allowed:
            if any(rule.matches(host, addresses) for rule in self.allowed):
                return None
            return Refusal(f"its host {host!r} is not in {self.settings_prefix}__ALLOWED_HOSTS")
        if private_refused and any(map(is_private_address, addresses)):
            return self._private(host)
        return None

    def _private(self, host: str) -> Refusal:
        return Refusal(
            f"its host {host!r} is a loopback, link-local or private address "
            f"(allowed with {self.settings_prefix}__ALLOW_PRIVATE_NETWORKS=true)"
        )
