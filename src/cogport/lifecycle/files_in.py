"""File inputs: what a model receives for each file-typed input.

File inputs take ``http(s)://`` and ``data:`` URLs. ``data:`` URLs pass on unchanged. URLs of this server
itself are resolved here, without a network round trip:

* an upload's ``urls.get`` (``{base}/v1/files/{id}``, what the official clients put into inputs): only the
  caller's own uploads; anyone else's is 422, exactly like a missing one (nothing leaks);
* an output capability URL (``{base}/v1/files/outputs/{id}/{token}/{name}``, to chain predictions).

``base`` is any name this server is known by (:func:`~cogport.files.urls.known_bases`), the request's
included. A queued run's input is resolved again when it is dispatched, where the request's name is not
known (no ``public_url``: a reverse proxy's, a LAN name): there the URLs of the caller's own uploads and
output capability URLs are recognised on any host (``any_host``). They were told from other URLs on the
request's name when the run was created, and a URL on another host that happens to name one of the
caller's files resolves to that file, which the caller may use anyway.

Any other URL is checked against the input policy (``COGPORT_INPUTS__*``: loopback, link-local and private
addresses refused, every spelling) when the run is created, and fetched by cogport itself when it starts
(:class:`InputFetcher`, through :mod:`cogport.netfetch`: pinned to the address checked, redirects checked
again, bounded size and time). The model never gets the URL, only the bytes, so its downloader cannot be
sent anywhere. A fetch that fails fails the run with the reason.

A file reaches the model as a ``data:`` URL when it is small (``files_inline_max_bytes``), else as a URL
valid ``files_input_url_ttl`` seconds: presigned by the storage when it can (S3: the model fetches straight
from the bucket), else a signed download URL on this server's internal (loopback) address.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from cogport import netfetch
from cogport.db.engine import Database
from cogport.db.tables import StoredFile, utcnow
from cogport.errors import FileNotFound, ValidationFailed
from cogport.files import media
from cogport.files.media import safe_name
from cogport.files.signing import download_query, signing_key
from cogport.files.streams import Digest, prepended
from cogport.files.urls import download_url, internal_base_url, known_bases, output_url, own_file_id, own_output
from cogport.identifiers import new_object_id
from cogport.lifecycle.inputs import FILE_SCHEMES, CheckedInput, component
from cogport.netpolicy import HostPolicy, ambiguous
from cogport.ops import files as file_ops
from cogport.ops.principals import Principal
from cogport.settings import Settings
from cogport.storage.base import Storage

Problem = tuple[str, str, str]


def input_policy(settings: Settings) -> HostPolicy:
    """The policy input URLs are checked (and fetched) under."""
    inputs = settings.inputs
    return HostPolicy.of(
        inputs.allow_private_networks,
        inputs.allowed_hosts,
        inputs.denied_hosts,
        settings_prefix="COGPORT_INPUTS",
        refuse_local=True,
    )


@dataclass
class ModelInput:
    value: dict[str, Any]
    """The input for the model."""
    to_fetch: int = 0
    """URLs left as they are because no fetcher was given (checked only): fetch before running."""


class InputFetcher:
    """Fetches input URLs (see the module docstring) for the account of the run that names them."""

    def __init__(self, database: Database, storage: Storage, settings: Settings, policy: HostPolicy) -> None:
        self.database = database
        self.storage = storage
        self.settings = settings
        self._http: httpx.AsyncClient | None = None
        """Made at the first fetch: its TLS setup (loading the CA bundle) is ~20-50 ms of CPU, at every start
        of a server that may never fetch a URL."""
        self.policy = policy
        self.limits = netfetch.FetchLimits(
            max_bytes=settings.inputs.max_bytes,
            timeout=settings.inputs.fetch_timeout,
            max_redirects=settings.inputs.max_redirects,
        )

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def deliver(self, url: str, principal: Principal, prediction_id: str | None) -> str:
        """What the model gets for ``url``: a ``data:`` URL or a signed internal URL of the fetched bytes.
        Raises :class:`~cogport.netfetch.FetchFailed`."""
        inline_max = self.settings.files_inline_max_bytes
        if self._http is None:
            self._http = netfetch.client()
        async with netfetch.fetch(self._http, self.policy, url, self.limits) as fetched:
            media_type = media.media_type(fetched.content_type.split(";")[0])
            head: list[bytes] = []
            size = 0
            chunks = fetched.chunks
            async for chunk in chunks:
                head.append(chunk)
                size += len(chunk)
                if size > inline_max:
                    break
            else:
                return f"data:{media_type};base64,{base64.b64encode(b''.join(head)).decode()}"
            row = await self._store(fetched, media_type, prepended(head, chunks), principal, prediction_id)
        username = principal.account.username
        return await handed_over(
            self.storage, self.settings, row, lambda: signed_download(self.settings, row, username)
        )

    async def _store(
        self,
        fetched: netfetch.Fetched,
        media_type: str,
        chunks: AsyncIterator[bytes],
        principal: Principal,
        prediction_id: str | None,
    ) -> StoredFile:
        file_id = new_object_id()
        key = file_ops.storage_key(file_ops.FETCHED, file_id, safe_name(fetched.name[:200] or "content"))
        digest = Digest()

        async def counted() -> AsyncIterator[bytes]:
            async for chunk in chunks:
                digest.update(chunk)
                yield chunk

        try:
            await self.storage.put_stream(key, counted())
            async with self.database.session() as session:
                return await file_ops.add(
                    session,
                    file_id=file_id,
                    kind=file_ops.FETCHED,
                    account_id=principal.id,
                    name=fetched.name[:200],
                    content_type=media_type[:255],
                    digest=digest,
                    storage_key=key,
                    expires_at=utcnow() + timedelta(seconds=self.settings.files_input_url_ttl),
                    prediction_id=prediction_id,
                )
        except BaseException:
            await file_ops.remove_bytes(self.storage, file_id, key)
            raise


async def resolve_inputs(
    session: AsyncSession,
    storage: Storage,
    principal: Principal,
    schema: dict[str, Any],
    checked_input: CheckedInput,
    base_url: str,
    settings: Settings,
    *,
    fetcher: InputFetcher | None = None,
    prediction_id: str | None = None,
    any_host: bool = False,
) -> ModelInput:
    """The input to hand to the model, from a validated input (:func:`cogport.lifecycle.inputs.validate`).

    ``schema`` is the version's OpenAPI schema and ``base_url`` the public base URL of the request (both
    are used to tell this server's own file URLs). Inputs listed in ``checked_input.file_fields`` (strings
    or lists of strings) are resolved as described in the module docstring; for a version without an
    ``Input`` schema, every top-level string (or list of strings) that is one of this server's file URLs
    is. Everything else is returned as it is. Raises :class:`~cogport.errors.ValidationFailed` (422, one
    ``invalid_fields`` entry per bad file) for someone else's or a missing file, a local path, another
    scheme, or a URL the input policy refuses. Other URLs are fetched with ``fetcher`` (for
    ``prediction_id``; a fetch that fails is a 422 too), or, without one, checked and counted in
    ``to_fetch``. With ``any_host`` (a run created before, with the request's host), the caller's own
    uploads and output files are recognised on any host too.
    """
    resolver = _Resolver(session, storage, principal, settings, known_bases(settings, base_url), fetcher)
    resolver.prediction_id = prediction_id
    resolver.any_host = any_host
    value = dict(checked_input.value)
    if component(schema, "Input") is not None:
        names = list(checked_input.file_fields)
        only_own = False
    else:
        names = list(value)
        only_own = True
    for name in names:
        item = value.get(name)
        if isinstance(item, list):
            value[name] = [await resolver.resolve(f"{name}.{i}", entry, only_own) for i, entry in enumerate(item)]
        elif item is not None:
            value[name] = await resolver.resolve(name, item, only_own)
    if resolver.problems:
        raise ValidationFailed(resolver.problems)
    return ModelInput(value, resolver.to_fetch)


class _Resolver:
    def __init__(
        self,
        session: AsyncSession,
        storage: Storage,
        principal: Principal,
        settings: Settings,
        bases: list[str],
        fetcher: InputFetcher | None,
    ) -> None:
        self.session = session
        self.storage = storage
        self.principal = principal
        self.settings = settings
        self.bases = bases
        self.fetcher = fetcher
        self.prediction_id: str | None = None
        self.any_host = False
        self.to_fetch = 0
        self.problems: list[Problem] = []
        self.policy = fetcher.policy if fetcher is not None else input_policy(settings)

    def fail(self, kind: str, name: str, description: str) -> Any:
        self.problems.append((kind, f"input.{name}", description))
        return None

    async def resolve(self, name: str, value: Any, only_own: bool) -> Any:
        if not isinstance(value, str):
            return value if only_own else self.fail("type", name, f"{name} must be a URL")
        file_id = own_file_id(value, self.bases)
        if file_id is not None:
            return await self._upload(name, file_id)
        output = own_output(value, self.bases)
        if output is not None:
            return await self._output(name, *output)
        if self.any_host:
            found = await self._own_on_any_host(value)
            if found is not None:
                return await self._deliver(name, *found)
        if only_own:
            return value
        if not value.startswith(FILE_SCHEMES):
            return self.fail("format", name, f"{name} must be an http(s) or data URL")
        if not value.startswith(("http://", "https://")):
            return value  # data:
        if self.fetcher is not None:
            try:
                return await self.fetcher.deliver(value, self.principal, self.prediction_id)
            except netfetch.FetchFailed as exc:
                return self.fail("format", name, f"{name} could not be fetched: {exc}")
        if ambiguous(value):
            problem = "the URL's host part is ambiguous (user info, a backslash or encoded characters)"
            return self.fail("format", name, f"{name}: {problem}")
        refusal = await self.policy.check(value)
        if refusal is not None and not refusal.retry:  # a name that does not resolve fails when fetched
            return self.fail("format", name, f"{name} is refused: {refusal.reason}")
        self.to_fetch += 1
        return value

    async def _upload(self, name: str, file_id: str) -> Any:
        found = await self._own_upload(file_id)
        if found is None:
            return self.fail("file_not_found", name, f"The file {file_id} does not exist or is not yours to use")
        return await self._deliver(name, *found)

    async def _output(self, name: str, file_id: str, token: str) -> Any:
        found = await self._own_output(file_id, token)
        if found is None:
            return self.fail("file_not_found", name, f"The output file {file_id} does not exist")
        return await self._deliver(name, *found)

    async def _own_on_any_host(self, value: str) -> tuple[StoredFile, Callable[[], str]] | None:
        """The caller's upload or an output file that ``value`` names on whatever host; None when it
        names none (then it is any other URL)."""
        file_id = own_file_id(value, None)
        if file_id is not None:
            return await self._own_upload(file_id)
        output = own_output(value, None)
        return await self._own_output(*output) if output is not None else None

    async def _own_upload(self, file_id: str) -> tuple[StoredFile, Callable[[], str]] | None:
        row = await self.session.get(StoredFile, file_id)
        if row is None or row.kind != file_ops.UPLOAD or row.account_id != self.principal.id:
            return None
        username = self.principal.account.username
        return row, lambda: signed_download(self.settings, row, username)

    async def _own_output(self, file_id: str, token: str) -> tuple[StoredFile, Callable[[], str]] | None:
        row = await file_ops.output_by_capability(self.session, file_id, token)
        if row is None:
            return None
        internal = internal_base_url(self.settings)
        return row, lambda: output_url(internal, row.id, row.access_token, row.name)

    async def _deliver(self, name: str, row: StoredFile, url: Callable[[], str]) -> Any:
        """A ``data:`` URL for a small file, else a URL to fetch it from (see :func:`handed_over`)."""
        if row.size > self.settings.files_inline_max_bytes:
            return await handed_over(self.storage, self.settings, row, url)
        try:
            data = await self.storage.get(row.storage_key)
        except FileNotFound:
            return self.fail("file_not_found", name, f"The file {row.id} has no content any more")
        media_type = row.content_type.replace(" ", "")
        return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


async def handed_over(storage: Storage, settings: Settings, row: StoredFile, fallback: Callable[[], str]) -> str:
    """The URL a model fetches ``row`` from: presigned by the storage (S3: straight from the bucket, the
    bytes never pass through this server), else ``fallback()``, a URL on this server's internal address.
    Either is valid ``files_input_url_ttl`` seconds."""
    presigned = await storage.presign(
        row.storage_key,
        settings.files_input_url_ttl,
        filename=row.name,
        content_type=media.media_type(row.content_type),
    )
    return presigned or fallback()


def signed_download(settings: Settings, row: StoredFile, owner: str) -> str:
    """The signed internal download URL of an uploaded (or fetched) file ``row`` of ``owner``."""
    query = download_query(signing_key(settings), owner, row.id, settings.files_input_url_ttl)
    return download_url(internal_base_url(settings), row.id, query, name=row.name)
