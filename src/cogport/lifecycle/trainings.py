"""What a successful training makes: a new version of its destination model, with the trained weights.

The recorder calls :func:`publish` when a ``kind="training"`` row reports ``succeeded``, in the
transaction that records the terminal state, before it commits: the version exists exactly when the
training says ``succeeded``, and a training whose version cannot be made ends ``failed`` with the reason.

The weights are ``output["weights"]`` when it is a file, else the one file in the output: an output-file
URL of this server (coglet's ``--upload-url`` upload of a ``Path`` returned directly), or a ``data:`` URL
(coglet 0.23 sends the ``Path`` fields of an object output such as ``TrainingOutput`` inline), which is
then stored as an output file of the training first.

The trained version is the base version's code and environment plus the weights:

* ``source_path``, ``venv_path``, ``predict_ref``, ``environment``, ``concurrency``: the base's (the
  virtualenv is reused, nothing is rebuilt);
* ``weights_key``: the weights file, kept under ``weights/<content>/<name>`` in storage (a hard link
  to the training's output file where storage is local, a copy otherwise), so it outlives the training's
  own output file (data retention, version deletion of the base's predictions). The content is
  ``sha256(base id + "\\n" + weights sha256)``: the same result published to several models shares the
  bytes. The dispatcher copies it to a local file once (:mod:`cogport.runtime.weights`) and hands that
  to ``setup(weights)`` through ``COG_WEIGHTS``;
* ``openapi_schema``: the base's prediction schema (``Training*`` components and ``/trainings`` paths
  dropped) and no ``train_ref``: a trained version predicts, it is not trained again;
* ``base_version_pk``: the base (which therefore cannot be deleted while the trained version exists);
* ``id``: the content and the destination model, hashed as a push hashes its files and model
  (:func:`cogport.build.packing.version_id`): the same training result published twice to one model is
  the same version, published to two models it is two, so a bare id names one version. Versions trained
  before the id included the model keep the id they were given (the content itself): ids are made here
  and never recomputed.

The training's ``output`` becomes ``{"version": "owner/name:<id>", "weights": "<url>", ...}``: the official
Python client parses ``version`` with an ``owner/name:id`` pattern; ``weights`` stays the training's
output file URL; other fields ``train()`` returned are kept.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from dataclasses import replace
from typing import Any
from urllib.parse import unquote_to_bytes

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cogport.build import packing
from cogport.core.outcome import Outcome
from cogport.core.status import Status
from cogport.db.tables import Account, Model, Prediction, StoredFile, Version
from cogport.errors import CogportError, Conflict
from cogport.files import media
from cogport.files import urls as file_urls
from cogport.files.streams import Digest
from cogport.files.urls import own_output
from cogport.identifiers import new_object_id
from cogport.lifecycle.status import lock
from cogport.ops import accounts
from cogport.ops import files as file_ops
from cogport.ops import versions as version_ops
from cogport.ops.trainings import weights_in_use
from cogport.settings import Settings
from cogport.storage.base import Storage

log = logging.getLogger(__name__)

WEIGHTS_PREFIX = "weights"
TRAINING_COMPONENTS = frozenset({"TrainingInput", "TrainingOutput", "TrainingRequest", "TrainingResponse"})


class PublishFailed(Exception):
    """The trained version cannot be made; the message is the training's error."""


async def publish(
    session: AsyncSession, storage: Storage, settings: Settings, training_id: str, end: Outcome
) -> Outcome:
    """Make the trained version for a training that ended ``end`` (``succeeded``, with its output).

    Returns what to record: ``end`` with the output ``{"version": ..., "weights": ...}``, or failed with
    the reason when the version cannot be made. Locks the training row first, so a
    training that has meanwhile ended (canceled, failed by another process) publishes nothing.
    """
    training = await lock(session, training_id)
    if Status(training.status).is_terminal:
        return end  # transition() leaves it as it is
    try:
        return replace(end, output=await _publish(session, storage, settings, training, end.output))
    except PublishFailed as exc:
        reason = str(exc)
    except CogportError as exc:
        reason = f"The trained version could not be created: {exc.detail}"
    except OSError as exc:
        log.exception("storing the weights of training %s failed", training_id)
        reason = f"The trained weights could not be stored: {exc.strerror or exc}"
    log.warning("training %s failed after train() succeeded: %s", training_id, reason)
    return replace(end, status="failed", error=reason)


async def _publish(
    session: AsyncSession, storage: Storage, settings: Settings, training: Prediction, output: Any
) -> dict[str, Any]:
    destination, owner = await _destination(session, training)
    base = await session.get(Version, training.version_pk)
    if base is None or base.deleting:
        raise PublishFailed("The base version was deleted while it was training; no version was created")
    weights_url, weights = await _weights_file(session, storage, settings, training, output)
    content = hashlib.sha256(f"{base.id}\n{weights.sha256}".encode()).hexdigest()
    version_id = packing.version_id(content, destination.id, f"{owner.username}/{destination.name}")
    key = f"{WEIGHTS_PREFIX}/{content}/{weights.name}"
    await keep_weights(storage, weights.storage_key, key)
    version = await _create_version(
        session,
        destination,
        version_id,
        cog_version=base.cog_version,
        openapi_schema=prediction_schema(base.openapi_schema or {}),
        python_version=base.python_version,
        predict_ref=base.predict_ref,
        train_ref=None,
        concurrency=base.concurrency,
        environment=dict(base.environment or {}),
        gpu=base.gpu,
        source_path=base.source_path,
        venv_path=base.venv_path,
        weights_key=key,
        base_version_pk=base.pk,
    )
    training.output_version_pk = version.pk
    log.info("training %s published %s/%s:%s", training.id, owner.username, destination.name, version.id)
    extra = {k: v for k, v in output.items() if k not in ("version", "weights")} if isinstance(output, dict) else {}
    return {"version": f"{owner.username}/{destination.name}:{version.id}", "weights": weights_url, **extra}


async def _destination(session: AsyncSession, training: Prediction) -> tuple[Model, Account]:
    destination = (
        await session.get(Model, training.destination_model_id) if training.destination_model_id is not None else None
    )
    owner = await session.get(Account, destination.owner_id) if destination is not None else None
    if destination is None or owner is None:
        raise PublishFailed("The training destination no longer exists; no version was created")
    if owner.id != training.account_id and training.account_id not in await accounts.member_ids(session, owner.id):
        raise PublishFailed(f"You can no longer publish to {owner.username}/{destination.name}; no version was created")
    return destination, owner


def _is_file(url: str) -> bool:
    return own_output(url) is not None or url.startswith("data:")


async def _weights_file(
    session: AsyncSession, storage: Storage, settings: Settings, training: Prediction, output: Any
) -> tuple[str, StoredFile]:
    """The output file holding the weights: ``output["weights"]`` when it is one, else the only file."""
    if isinstance(output, dict) and isinstance(output.get("weights"), str) and _is_file(output["weights"]):
        candidates = [output["weights"]]
    else:
        candidates = [url for url in _strings(output) if _is_file(url)]
    if not candidates:
        raise PublishFailed(
            "train() returned no weights file: return the trained weights as a file "
            "(e.g. `class TrainingOutput(BaseModel): weights: Path`)"
        )
    if len(candidates) > 1:
        raise PublishFailed(
            f"train() returned {len(candidates)} files and no `weights` file among them: "
            "return the trained weights as `TrainingOutput.weights` (one file)"
        )
    if candidates[0].startswith("data:"):
        return await _store_data_url(session, storage, settings, training, candidates[0])
    ref = own_output(candidates[0])
    assert ref is not None
    file_id, token = ref
    row = await session.get(StoredFile, file_id)
    if (
        row is None
        or row.kind != file_ops.OUTPUT
        or row.access_token != token
        or row.prediction_id not in (None, training.id)
    ):
        raise PublishFailed("The weights file train() returned is missing from storage; no version was created")
    return candidates[0], row


async def _store_data_url(
    session: AsyncSession, storage: Storage, settings: Settings, training: Prediction, url: str
) -> tuple[str, StoredFile]:
    """Keep a ``data:`` URL's bytes as an output file of the training.

    coglet (0.23) uploads a ``Path`` that ``train()`` returns directly, but sends the ``Path`` fields of
    an object output (``TrainingOutput.weights``) inline as ``data:`` URLs: the weights then arrive in
    the response itself, and are stored here as if coglet had uploaded them.
    """
    try:
        content_type, data = _decode_data_url(url)
    except ValueError as exc:
        raise PublishFailed(f"The weights train() returned are not a valid data URL: {exc}") from None
    digest = Digest()
    digest.update(data)
    name = "weights" + media.extension(content_type)
    file_id = new_object_id()
    key = file_ops.storage_key(file_ops.OUTPUT, file_id, name)
    await storage.put(key, data)
    row = await file_ops.add(
        session,
        file_id=file_id,
        kind=file_ops.OUTPUT,
        account_id=training.account_id,
        name=name,
        content_type=content_type,
        digest=digest,
        storage_key=key,
        prediction_id=training.id,
    )
    return file_urls.output_url(file_urls.public_base_url(settings), row.id, row.access_token, name), row


def _decode_data_url(url: str) -> tuple[str, bytes]:
    header, comma, payload = url[len("data:") :].partition(",")
    if not comma:
        raise ValueError("no comma")
    params = header.split(";")
    content_type = params[0].strip() or "application/octet-stream"
    if "base64" in (p.strip().lower() for p in params[1:]):
        try:
            return content_type, base64.b64decode(payload, validate=True)
        except binascii.Error as exc:
            raise ValueError(str(exc)) from None
    return content_type, unquote_to_bytes(payload)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    return []


async def _create_version(session: AsyncSession, destination: Model, version_id: str, **fields: Any) -> Version:
    """The version (an existing one when the same result was published before).

    On PostgreSQL the insert runs in a savepoint, so a concurrent training that publishes the very same
    content first is found rather than failing this one. SQLite serialises writers (and its driver's
    savepoints would commit the enclosing transaction on release), so it needs none.
    """
    if session.bind is None or session.bind.dialect.name != "postgresql":
        version, _ = await version_ops.create(session, destination, version_id, **fields)
        return version
    try:
        async with session.begin_nested():
            version, _ = await version_ops.create(session, destination, version_id, **fields)
        return version
    except Conflict:
        existing = await session.execute(
            select(Version).where(Version.model_id == destination.id, Version.id == version_id)
        )
        found = existing.scalar_one_or_none()
        if found is None or found.deleting:
            raise
        return found


def prediction_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The base's OpenAPI schema without its training half (components and ``/trainings`` paths)."""
    pruned = dict(schema)
    components = dict(schema.get("components") or {})
    schemas = components.get("schemas")
    if isinstance(schemas, dict):
        components["schemas"] = {k: v for k, v in schemas.items() if k not in TRAINING_COMPONENTS}
        pruned["components"] = components
    paths = schema.get("paths")
    if isinstance(paths, dict):
        pruned["paths"] = {k: v for k, v in paths.items() if not k.startswith("/trainings")}
    return pruned


async def keep_weights(storage: Storage, source_key: str, key: str) -> None:
    """Put the bytes at ``source_key`` also at ``key`` (a hard link locally, a server-side copy on S3)."""
    if await storage.exists(key):
        return  # content-addressed: the same training result's weights are already there
    await storage.copy(source_key, key)


async def release_weights(session: AsyncSession, storage: Storage, version: Version) -> None:
    """Remove a deleted trained version's weights once no version uses them any more.

    For the janitor, after :func:`cogport.ops.versions.purge` of ``version`` (in the same transaction).
    """
    key = version.weights_key
    if not key or not key.startswith(f"{WEIGHTS_PREFIX}/") or await weights_in_use(session, key):
        return
    folder = key.rsplit("/", 1)[0]
    if await weights_in_use(session, folder + "/"):
        await storage.delete(key)  # the same content under another name is still used
    else:
        await storage.delete_prefix(folder)
