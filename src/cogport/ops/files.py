"""File rows (:class:`~cogport.db.tables.StoredFile`): uploads (Files API) and model output files.

Storage keys are ``uploads/<file id>/<name>`` (``content`` for older rows) and ``outputs/<file id>/<basename>``:
one folder per file, so names never collide and removing a file removes its folder.

An output file is created *unlinked* when coglet uploads it (the receiver does not know the prediction):
owned by the admin account, ``prediction_id`` NULL, expiring after :data:`ORPHAN_GRACE`. When the
prediction finishes, :func:`link_outputs` hands the files its output names to the prediction and its
account; unlinked leftovers are removed by the retention service once they expire.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cogport.db.keyset import Cursor, KeysetPage, paginate
from cogport.db.tables import Account, StoredFile, utcnow
from cogport.db.writer import Tx
from cogport.errors import FileNotFound
from cogport.files.streams import Digest
from cogport.files.urls import own_output
from cogport.identifiers import new_capability, same_secret
from cogport.ops import accounts
from cogport.ops.principals import Principal
from cogport.storage.base import Storage

UPLOAD = "upload"
OUTPUT = "output"
FETCHED = "input"
"""The bytes of an input URL cogport fetched for a run (:mod:`cogport.lifecycle.files_in`): not listed,
reachable by signed URL only, removed when they expire or with their run."""
ORPHAN_GRACE = timedelta(hours=24)
"""How long an output file may stay unlinked (its prediction still running) before it is removed."""


def storage_key(kind: str, file_id: str, name: str = "content") -> str:
    return f"{kind}s/{file_id}/{name}"


async def add(
    session: AsyncSession,
    *,
    file_id: str,
    kind: str,
    account_id: int,
    name: str,
    content_type: str,
    digest: Digest,
    storage_key: str,
    metadata: dict[str, Any] | None = None,
    expires_at: datetime | None = None,
    prediction_id: str | None = None,
) -> StoredFile:
    row = StoredFile(
        id=file_id,
        account_id=account_id,
        kind=kind,
        prediction_id=prediction_id,
        name=name,
        content_type=content_type,
        size=digest.size,
        sha256=digest.sha256,
        md5=digest.md5,
        metadata_=metadata or {},
        storage_key=storage_key,
        access_token=new_capability(),
        created_at=utcnow(),
        expires_at=expires_at,
    )
    session.add(row)
    await session.flush()
    return row


async def orphan_owner(session: AsyncSession) -> int:
    """The account that holds output files until :func:`link_outputs` gives them to their prediction's."""
    admin = await accounts.any_admin(session)
    if admin is None:
        raise RuntimeError("no admin account: the server bootstraps one at start-up")
    return admin.id


async def get_upload(session: AsyncSession, principal: Principal, file_id: str) -> StoredFile:
    """One of the caller's uploads; anyone else's (or none) is 404 ``File not found``."""
    row = await session.get(StoredFile, file_id)
    if row is None or row.kind != UPLOAD or row.account_id != principal.id:
        raise FileNotFound()
    return row


async def upload_with_owner(session: AsyncSession, file_id: str) -> tuple[StoredFile, Account] | None:
    result = await session.execute(
        select(StoredFile, Account)
        .join(Account, Account.id == StoredFile.account_id)
        .where(StoredFile.id == file_id, StoredFile.kind.in_((UPLOAD, FETCHED)))
    )
    row = result.one_or_none()
    return None if row is None else (row[0], row[1])


def _key(row: StoredFile) -> tuple[Any, Any]:
    return row.created_at, row.id


async def list_uploads(
    session: AsyncSession, principal: Principal, *, cursor: Cursor | None, limit: int = 100
) -> KeysetPage[StoredFile]:
    """The caller's uploads, newest first."""
    query = select(StoredFile).where(StoredFile.account_id == principal.id, StoredFile.kind == UPLOAD)
    return await paginate(
        session,
        query,
        sort=StoredFile.created_at,
        tiebreak=StoredFile.id,
        descending=True,
        cursor=cursor,
        limit=limit,
        key_of=_key,
    )


async def output_by_capability(session: AsyncSession, file_id: str, token: str) -> StoredFile | None:
    """The output file a capability URL names, when its token is right."""
    row = await session.get(StoredFile, file_id)
    if row is None or row.kind != OUTPUT or not same_secret(token, row.access_token):
        return None
    return row


def output_refs(value: Any) -> Iterator[tuple[str, str]]:
    """``(file_id, token)`` of every output capability URL in an output value (lists and objects too)."""
    if isinstance(value, str):
        ref = own_output(value)
        if ref is not None:
            yield ref
    elif isinstance(value, list | tuple):
        for item in value:
            yield from output_refs(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from output_refs(item)


def link_outputs(tx: Tx, prediction_id: str, account_id: int, output: Any) -> int:
    """Give the output files named in ``output`` to the prediction and its account; return how many.

    A group-writer operation, run in the transaction that records a prediction's terminal state (any
    status: a failed or canceled prediction may have produced files), with the output as stored. Files
    already linked to another prediction, or named with a wrong token, are left alone; calling it twice
    is harmless."""
    refs = dict(output_refs(output))
    if not refs:
        return 0
    files = cast(Table, StoredFile.__table__)
    rows = tx.conn.execute(
        select(files.c.id, files.c.access_token).where(
            files.c.id.in_(refs),
            files.c.kind == OUTPUT,
            or_(files.c.prediction_id.is_(None), files.c.prediction_id == prediction_id),
        )
    ).all()
    ids = [file_id for file_id, token in rows if same_secret(refs[file_id], token)]
    if ids:
        tx.conn.execute(
            update(files)
            .where(files.c.id.in_(ids))
            .values(prediction_id=prediction_id, account_id=account_id, expires_at=None)
        )
    return len(ids)


async def remove(session: AsyncSession, storage: Storage, rows: Sequence[StoredFile]) -> None:
    """Delete file rows and then their bytes."""
    if not rows:
        return
    await session.execute(delete(StoredFile).where(StoredFile.id.in_([row.id for row in rows])))
    await session.flush()
    for row in rows:
        await remove_bytes(storage, row.id, row.storage_key)


async def remove_bytes(storage: Storage, file_id: str, key: str) -> None:
    parts = key.split("/")
    if len(parts) == 3 and parts[1] == file_id:
        await storage.delete_prefix(f"{parts[0]}/{parts[1]}")  # the file's own folder
    else:
        await storage.delete(key)


async def delete_upload(session: AsyncSession, storage: Storage, principal: Principal, file_id: str) -> None:
    """Delete one of the caller's uploads (404 for anything else), bytes included."""
    await remove(session, storage, [await get_upload(session, principal, file_id)])


async def delete_prediction_files(session: AsyncSession, storage: Storage, prediction_ids: Iterable[str]) -> int:
    """Delete the output files of these predictions (rows and bytes); return how many. For version
    deletion and data retention."""
    ids = list(prediction_ids)
    if not ids:
        return 0
    result = await session.execute(select(StoredFile).where(StoredFile.prediction_id.in_(ids)))
    rows = list(result.scalars())
    await remove(session, storage, rows)
    return len(rows)


async def expired(session: AsyncSession, now: datetime, limit: int = 100) -> list[StoredFile]:
    """Uploads past ``expires_at``, and output files never linked to a prediction past theirs."""
    result = await session.execute(
        select(StoredFile)
        .where(
            StoredFile.expires_at < now,
            or_(
                StoredFile.kind.in_((UPLOAD, FETCHED)),
                and_(StoredFile.kind == OUTPUT, StoredFile.prediction_id.is_(None)),
            ),
        )
        .limit(limit)
    )
    return list(result.scalars())
