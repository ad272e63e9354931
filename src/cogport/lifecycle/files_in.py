"""File inputs: what a model receives for each file-typed input.

File inputs take ``http(s)://`` and ``data:`` URLs. Those are passed on unchanged (coglet fetches them),
except URLs of this server itself, which are resolved here, without a network round trip:

* an upload's ``urls.get`` (``{base}/v1/files/{id}``, what the official clients put into inputs): only the
  caller's own uploads; anyone else's is 422, exactly like a missing one (nothing leaks);
* an output capability URL (``{base}/v1/files/outputs/{id}/{token}/{name}``, to chain predictions).

A resolved file reaches the model as a ``data:`` URL when it is small (``files_inline_max_bytes``), else
as a signed download URL on this server's internal (loopback) address, valid ``files_input_url_ttl``
seconds. Other URLs that point at this machine's loopback or link-local addresses are refused, so an input
cannot make the model fetch from services on the host.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.ext.asyncio import AsyncSession

from cogport.db.tables import StoredFile
from cogport.errors import FileNotFound, ValidationFailed
from cogport.files.signing import download_query, signing_key
from cogport.files.urls import download_url, internal_base_url, known_bases, output_url, own_file_id, own_output
from cogport.lifecycle.inputs import FILE_SCHEMES, CheckedInput, component
from cogport.netpolicy import HostPolicy, ambiguous, is_local_host
from cogport.ops import files as file_ops
from cogport.ops.principals import Principal
from cogport.settings import Settings
from cogport.storage.base import Storage

Problem = tuple[str, str, str]


async def resolve_inputs(
    session: AsyncSession,
    storage: Storage,
    principal: Principal,
    schema: dict[str, Any],
    checked_input: CheckedInput,
    base_url: str,
    settings: Settings,
) -> dict[str, Any]:
    """The input to hand to the model, from a validated input (:func:`cogport.lifecycle.inputs.validate`).

    ``schema`` is the version's OpenAPI schema and ``base_url`` the public base URL of the request (both
    are used to tell this server's own file URLs). Inputs listed in ``checked_input.file_fields`` (strings
    or lists of strings) are resolved as described in the module docstring; for a version without an
    ``Input`` schema, every top-level string (or list of strings) that is one of this server's file URLs
    is. Everything else is returned as it is. Raises :class:`~cogport.errors.ValidationFailed` (422, one
    ``invalid_fields`` entry per bad file) for someone else's or a missing file, a local path, another
    scheme, or a loopback URL. Call it inside the create-prediction transaction, after ``validate``.
    """
    resolver = _Resolver(session, storage, principal, settings, known_bases(settings, base_url))
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
    return value


class _Resolver:
    def __init__(
        self, session: AsyncSession, storage: Storage, principal: Principal, settings: Settings, bases: list[str]
    ) -> None:
        self.session = session
        self.storage = storage
        self.principal = principal
        self.settings = settings
        self.bases = bases
        self.problems: list[Problem] = []
        self.policy = HostPolicy.of(settings.inputs.allow_private_networks, settings_prefix="COGPORT_INPUTS")

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
        if only_own:
            return value
        if not value.startswith(FILE_SCHEMES):
            return self.fail("format", name, f"{name} must be an http(s) or data URL")
        if value.startswith(("http://", "https://")):
            if is_local_host(urlsplit(value).hostname):
                return self.fail("format", name, f"{name} must not point at this machine's local addresses")
            if ambiguous(value):
                problem = "the URL's host part is ambiguous (user info, a backslash or encoded characters)"
                return self.fail("format", name, f"{name}: {problem}")
            refusal = await self.policy.check(value)
            if refusal is not None and not refusal.retry:  # a name that does not resolve fails the model's fetch
                return self.fail("format", name, f"{name} is refused: {refusal.reason}")
        return value

    async def _upload(self, name: str, file_id: str) -> Any:
        row = await self.session.get(StoredFile, file_id)
        if row is None or row.kind != file_ops.UPLOAD or row.account_id != self.principal.id:
            return self.fail("file_not_found", name, f"The file {file_id} does not exist or is not yours to use")
        username = self.principal.account.username
        return await self._deliver(name, row, lambda: self._signed(row, username))

    async def _output(self, name: str, file_id: str, token: str) -> Any:
        row = await file_ops.output_by_capability(self.session, file_id, token)
        if row is None:
            return self.fail("file_not_found", name, f"The output file {file_id} does not exist")
        internal = internal_base_url(self.settings)
        return await self._deliver(name, row, lambda: output_url(internal, row.id, row.access_token, row.name))

    async def _deliver(self, name: str, row: StoredFile, url: Callable[[], str]) -> Any:
        """A ``data:`` URL for a small file, else ``url()``."""
        if row.size > self.settings.files_inline_max_bytes:
            return url()
        try:
            data = await self.storage.get(row.storage_key)
        except FileNotFound:
            return self.fail("file_not_found", name, f"The file {row.id} has no content any more")
        media_type = row.content_type.replace(" ", "")
        return f"data:{media_type};base64,{base64.b64encode(data).decode()}"

    def _signed(self, row: StoredFile, owner: str) -> str:
        query = download_query(signing_key(self.settings), owner, row.id, self.settings.files_input_url_ttl)
        return download_url(internal_base_url(self.settings), row.id, query, name=row.name)
