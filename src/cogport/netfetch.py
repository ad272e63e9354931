"""Fetching a URL a user named (an input file), safely.

The URL is parsed once and checked with a :class:`~cogport.netpolicy.HostPolicy`; the connection goes to the
address that was checked (:func:`~cogport.netpolicy.pinned`), never to what the name resolves to a moment
later; each redirect is checked again the same way, at most ``max_redirects`` of them; the body is bounded
in size and the whole fetch in time. Environment proxies are ignored (the client is made with
``trust_env=False``): a proxy would connect wherever it likes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx

from cogport.netpolicy import Admitted, HostPolicy, ambiguous, pinned

CHUNK = 256 * 1024


class FetchFailed(Exception):
    """The URL could not (or may not) be fetched; ``str(exc)`` says why, for the user."""


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int
    timeout: float
    """Seconds for the whole fetch, redirects and body included."""
    max_redirects: int = 5


@dataclass
class Fetched:
    url: str
    """The URL the body came from (after redirects)."""
    content_type: str
    name: str
    """The last path segment of ``url`` (``file`` when it has none)."""
    chunks: AsyncIterator[bytes]
    """The body, at most ``max_bytes`` (more fails with :class:`FetchFailed`)."""


def client() -> httpx.AsyncClient:
    """The client fetches go through: no redirects followed by httpx, no proxies from the environment."""
    return httpx.AsyncClient(follow_redirects=False, trust_env=False, timeout=httpx.Timeout(30.0, connect=10.0))


@asynccontextmanager
async def fetch(http: httpx.AsyncClient, policy: HostPolicy, url: str, limits: FetchLimits) -> AsyncIterator[Fetched]:
    """Open ``url`` under ``policy`` and ``limits``; raises :class:`FetchFailed`."""
    try:
        async with asyncio.timeout(limits.timeout):
            response, final = await _follow(http, policy, url, limits)
            try:
                yield Fetched(
                    url=final,
                    content_type=response.headers.get("content-type", "application/octet-stream"),
                    name=_name(final),
                    chunks=_bounded(response, limits.max_bytes),
                )
            finally:
                await response.aclose()
    except TimeoutError as exc:
        raise FetchFailed(f"it took longer than {limits.timeout:g} s") from exc
    except httpx.HTTPError as exc:
        raise FetchFailed(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from exc


async def _follow(
    http: httpx.AsyncClient, policy: HostPolicy, url: str, limits: FetchLimits
) -> tuple[httpx.Response, str]:
    """The response with the body, and the URL it came from (after the redirects)."""
    for _hop in range(limits.max_redirects + 1):
        admitted = await _admit(policy, url)
        request = pinned(http, "GET", admitted, headers={"Accept": "*/*", "User-Agent": "cogport"})
        response = await http.send(request, stream=True)
        if not response.is_redirect:
            if response.status_code >= 400:
                await response.aclose()
                raise FetchFailed(f"{_show(url)} answered {response.status_code} {response.reason_phrase}".rstrip())
            return response, url
        location = response.headers.get("location", "")
        await response.aclose()
        url = urljoin(url, location)
    raise FetchFailed(f"more than {limits.max_redirects} redirects")


async def _admit(policy: HostPolicy, url: str) -> Admitted:
    if urlsplit(url).scheme not in ("http", "https"):
        raise FetchFailed(f"{_show(url)} is not an http(s) URL")
    if ambiguous(url):
        raise FetchFailed(f"{_show(url)}: the host part is ambiguous (user info, a backslash or encoded characters)")
    verdict = await policy.admit(url)
    if not isinstance(verdict, Admitted):
        raise FetchFailed(f"{_show(url)} is refused: {verdict.reason}")
    return verdict


async def _bounded(response: httpx.Response, max_bytes: int) -> AsyncIterator[bytes]:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise FetchFailed(f"it is larger than the limit of {max_bytes} bytes ({declared} bytes)")
    seen = 0
    async for chunk in response.aiter_bytes(CHUNK):
        seen += len(chunk)
        if seen > max_bytes:
            raise FetchFailed(f"it is larger than the limit of {max_bytes} bytes")
        yield chunk


def _name(url: str) -> str:
    last = urlsplit(url).path.rstrip("/").rpartition("/")[2]
    return last or "file"


def _show(url: str) -> str:
    return url if len(url) <= 120 else url[:117] + "..."
