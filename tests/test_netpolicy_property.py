"""Property tests for the URL policy (:mod:`cogport.netpolicy`): every spelling of a non-public address is
refused, public ones pass, and no input makes the check raise. Names are resolved by a table, not DNS."""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from cogport.netpolicy import Address, Admitted, HostPolicy, Refusal, parse_address

NON_PUBLIC_V4 = [
    ipaddress.ip_network(n)
    for n in ("127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "0.0.0.0/8")
]
NON_PUBLIC_V6 = [ipaddress.ip_network(n) for n in ("::1/128", "fe80::/10", "fc00::/7")]
PUBLIC_V4 = ipaddress.ip_network("8.0.0.0/7")  # 8.0.0.0 - 9.255.255.255: global unicast


def _in(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> st.SearchStrategy[Address]:
    first = int(network.network_address)
    return st.integers(first, first + network.num_addresses - 1).map(
        lambda n: ipaddress.ip_address(n) if network.version == 4 else ipaddress.IPv6Address(n)
    )


non_public_v4 = st.sampled_from(NON_PUBLIC_V4).flatmap(_in)
non_public_v6 = st.sampled_from(NON_PUBLIC_V6).flatmap(_in)


def spellings(address: ipaddress.IPv4Address) -> list[str]:
    """The ways HTTP clients accept to write one IPv4 address in a URL's host."""
    n = int(address)
    a, b, c, d = address.packed
    return [
        str(address),
        str(n),  # 2130706433
        hex(n),  # 0x7f000001
        f"{hex(a)}.{b}.{c}.{d}",  # 0x7f.0.0.1
        f"{a}.{(b << 16) | (c << 8) | d}",  # 127.1 style
        f"{a}.{b}.{(c << 8) | d}",
        f"[::ffff:{address}]",
    ]


def run(coroutine):  # type: ignore[no-untyped-def]
    return asyncio.run(coroutine)


DEFAULT = HostPolicy.of(False, settings_prefix="COGPORT_INPUTS", refuse_local=True)


@settings(max_examples=300, deadline=None)
@given(non_public_v4, st.sampled_from(["http", "https"]), st.integers(1, 65535))
def test_every_spelling_of_a_non_public_ipv4_address_is_refused(
    address: ipaddress.IPv4Address, scheme: str, port: int
) -> None:
    for host in spellings(address):
        assert parse_address(host) == address, host
        verdict = run(DEFAULT.admit(f"{scheme}://{host}:{port}/x"))
        assert isinstance(verdict, Refusal) and not verdict.retry, (host, verdict)


@settings(max_examples=200, deadline=None)
@given(non_public_v6)
def test_non_public_ipv6_addresses_are_refused(address: ipaddress.IPv6Address) -> None:
    verdict = run(DEFAULT.admit(f"http://[{address}]/x"))
    assert isinstance(verdict, Refusal), (address, verdict)


@settings(max_examples=200, deadline=None)
@given(_in(PUBLIC_V4), non_public_v4)
def test_a_name_is_judged_by_every_address_it_resolves_to(
    public: ipaddress.IPv4Address, private: ipaddress.IPv4Address
) -> None:
    async def table(host: str, port: int) -> list[Address]:
        return {"public.test": [public], "mixed.test": [public, private]}.get(host, [])

    policy = replace(DEFAULT, resolver=table)
    admitted = run(policy.admit("https://public.test/a.png"))
    assert isinstance(admitted, Admitted) and admitted.addresses == (public,)
    assert isinstance(run(policy.admit("https://mixed.test/a.png")), Refusal)
    unknown = run(policy.admit("https://unknown.test/a.png"))
    assert isinstance(unknown, Refusal) and unknown.retry


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80), st.sampled_from(["http://", "https://", "", "ftp://", "http://[", "http://a@"]))
def test_no_url_makes_the_check_raise(text: str, prefix: str) -> None:
    async def nothing(host: str, port: int) -> list[Address]:
        raise OSError("no DNS in this test")

    verdict = run(replace(DEFAULT, resolver=nothing).admit(prefix + text))
    assert isinstance(verdict, Admitted | Refusal)
    if isinstance(verdict, Admitted):
        assert all(address.is_global for address in verdict.addresses)
