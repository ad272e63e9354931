"""Trainings through the API and the publishing step, in process (no builds, no coglet).

Versions are made through the data layer with the ``examples/trainable`` schema; a training's end is
reported to the real :class:`~cogport.lifecycle.recorder.Recorder` as a backend would report it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cogport.build import packing
from cogport.core.jobs import Job, VersionSpec
from cogport.core.outcome import Outcome
from cogport.core.status import Status
from cogport.db.engine import Database
from cogport.db.tables import Account, Model, Prediction, StoredFile, Version, utcnow
from cogport.files import urls as file_urls
from cogport.files.streams import Digest
from cogport.identifiers import new_object_id
from cogport.lifecycle import trainings
from cogport.lifecycle.dispatcher import RESTART_ERROR, Dispatcher
from cogport.ops import accounts
from cogport.ops import files as file_ops
from cogport.ops import predictions as prediction_ops
from cogport.ops import versions as version_ops
from cogport.ops.principals import Principal
from tests.support.accounts import Users
from tests.support.openapi import validate
from tests.support.registry import auth, create_model

SCHEMA: dict[str, Any] = json.loads((Path(__file__).parent / "data" / "schemas" / "trainable.json").read_text())
CREATE_PATH = "/models/{model_owner}/{model_name}/versions/{version_id}/trainings"
DATA = "https://example.com/data.csv"


async def model_named(session: AsyncSession, ref: str) -> Model:
    owner, name = ref.split("/")
    query = select(Model).join(Account, Account.id == Model.owner_id)
    return (await session.execute(query.where(Account.username == owner, Model.name == name))).scalar_one()


async def add_base(database: Database, ref: str, *, trainable: bool = True) -> str:
    """A version of ``ref`` with the trainable example's schema (and ``train_ref`` when ``trainable``)."""
    vid = hashlib.sha256(f"{ref}:{new_object_id()}".encode()).hexdigest()
    async with database.session() as session:
        await version_ops.create(
            session,
            await model_named(session, ref),
            vid,
            cog_version="0.23.1",
            openapi_schema=SCHEMA,
            python_version="3.11",
            predict_ref="predict.py:Predictor",
            train_ref="train.py:train" if trainable else None,
            concurrency=2,
            environment={"A": "1"},
            source_path="/srv/sources/base",
            venv_path="/srv/venvs/base",
        )
    return vid


def out(row: Prediction) -> dict[str, Any]:
    assert isinstance(row.output, dict), row.output
    return row.output


def read(path: str | None) -> bytes:
    assert path is not None
    return Path(path).read_bytes()


def same_file(a: str | None, b: str | None) -> bool:
    assert a is not None and b is not None
    return os.path.samefile(a, b)


def exists(path: Path) -> bool:
    return path.exists()


def post_training(client: httpx.AsyncClient, token: str, base: str, vid: str, body: dict[str, Any]) -> Any:
    return client.post(f"/v1/models/{base}/versions/{vid}/trainings", json=body, headers=auth(token))


@pytest.fixture
async def setup(client: httpx.AsyncClient, database: Database, users: Users) -> str:
    """alice/base (private, trainable) and alice/dest; returns the base version id."""
    await create_model(client, users.alice, "alice/base", visibility="private")
    await create_model(client, users.alice, "alice/dest", visibility="private")
    return await add_base(database, "alice/base")


async def stop_dispatcher(app: FastAPI) -> None:
    """Keep what is queued in the queue (nothing here could run anyway)."""
    dispatcher = app.state.services.get("dispatcher")
    assert dispatcher is not None
    await dispatcher.stop()


# --- the API ---------------------------------------------------------------------------------------


async def test_create_get_list_cancel(app: FastAPI, client: httpx.AsyncClient, users: Users, setup: str) -> None:
    await stop_dispatcher(app)
    body = {
        "destination": "alice/dest",
        "input": {"data": DATA, "smoothing": 0.5, "unknown": 1},
        "webhook": "https://example.com/hook",
        "webhook_events_filter": ["start", "completed"],
    }
    response = await post_training(client, users.alice, "alice/base", setup, body)
    assert response.status_code == 201, response.text
    training = response.json()
    validate(CREATE_PATH, "post", 201, training)
    assert training["status"] == "starting" and "output" not in training
    assert training["model"] == "alice/base" and training["version"] == setup
    assert training["input"] == {"data": DATA, "smoothing": 0.5}  # unknown inputs dropped, as Cog does
    assert training["urls"]["get"] == f"http://testserver/v1/trainings/{training['id']}"
    assert training["urls"]["cancel"] == f"http://testserver/v1/trainings/{training['id']}/cancel"
    assert response.headers["location"] == training["urls"]["get"]
    assert training["webhook"] == "https://example.com/hook"
    assert training["webhook_events_filter"] == ["start", "completed"]

    got = await client.get(f"/v1/trainings/{training['id']}", headers=auth(users.alice))
    assert got.status_code == 200 and got.headers["cache-control"] == "no-store"
    validate("/trainings/{training_id}", "get", 200, got.json())
    listing = (await client.get("/v1/trainings", headers=auth(users.alice))).json()
    validate("/trainings", "get", 200, listing)
    assert [t["id"] for t in listing["results"]] == [training["id"]]
    # A training is not a prediction, and nobody else sees it.
    assert (await client.get(f"/v1/predictions/{training['id']}", headers=auth(users.alice))).status_code == 404
    assert (await client.get("/v1/predictions", headers=auth(users.alice))).json()["results"] == []
    assert (await client.get(f"/v1/trainings/{training['id']}", headers=auth(users.bob))).status_code == 404
    assert (await client.post(f"/v1/trainings/{training['id']}/cancel", headers=auth(users.bob))).status_code == 404
    assert (await client.get("/v1/trainings", headers=auth(users.bob))).json()["results"] == []

    canceled = await client.post(f"/v1/trainings/{training['id']}/cancel", headers=auth(users.alice))
    assert canceled.status_code == 200
    validate("/trainings/{training_id}/cancel", "post", 200, canceled.json())
    assert canceled.json()["status"] == "canceled"
    again = await client.post(f"/v1/trainings/{training['id']}/cancel", headers=auth(users.alice))
    assert again.json()["status"] == "canceled"


async def test_webhook_completed_shorthand(app: FastAPI, client: httpx.AsyncClient, users: Users, setup: str) -> None:
    await stop_dispatcher(app)
    body = {"destination": "alice/dest", "input": {"data": DATA}, "webhook_completed": "https://example.com/done"}
    training = (await post_training(client, users.alice, "alice/base", setup, body)).json()
    assert training["webhook"] == "https://example.com/done"
    assert training["webhook_events_filter"] == ["completed"]
    bad = {**body, "webhook_events_filter": ["finished"]}
    assert (await post_training(client, users.alice, "alice/base", setup, bad)).status_code == 422


async def test_destination_must_exist_and_be_yours(
    app: FastAPI, client: httpx.AsyncClient, database: Database, users: Users, setup: str
) -> None:
    await stop_dispatcher(app)
    await create_model(client, users.bob, "bob/private", visibility="private")
    await create_model(client, users.bob, "bob/public", visibility="public")
    await create_model(client, users.alice, "acme/shared", visibility="private")  # alice's organization
    for destination in ("alice/missing", "bob/private", "bob/public", "nobody/x", "alice", "alice/dest/x", "/dest"):
        body = {"destination": destination, "input": {"data": DATA}}
        response = await post_training(client, users.alice, "alice/base", setup, body)
        assert response.status_code == 404, (destination, response.text)
        assert response.json()["detail"] == "The specified training destination does not exist"
    ok = await post_training(
        client, users.alice, "alice/base", setup, {"destination": "acme/shared", "input": {"data": DATA}}
    )
    assert ok.status_code == 201, ok.text
    # Anyone may train a public base into their own model; a private base of someone else is a 404.
    await create_model(client, users.bob, "bob/mine", visibility="private")
    response = await post_training(
        client, users.bob, "alice/base", setup, {"destination": "bob/mine", "input": {"data": DATA}}
    )
    assert response.status_code == 404
    public_vid = await add_base(database, "bob/public")
    response = await post_training(
        client, users.alice, "bob/public", public_vid, {"destination": "alice/dest", "input": {"data": DATA}}
    )
    assert response.status_code == 201, response.text


async def test_refusals(client: httpx.AsyncClient, database: Database, users: Users, setup: str) -> None:
    headers = auth(users.alice)
    await create_model(client, users.alice, "alice/predict-only", visibility="private")
    plain = await add_base(database, "alice/predict-only", trainable=False)
    body = {"destination": "alice/dest", "input": {"data": DATA}}
    response = await post_training(client, users.alice, "alice/predict-only", plain, body)
    assert response.status_code == 422
    assert "cannot be trained" in response.json()["detail"] and "train" in response.json()["detail"]
    missing = "0" * 64
    assert (await post_training(client, users.alice, "alice/base", missing, body)).status_code == 404
    assert (await post_training(client, users.alice, "alice/nope", setup, body)).status_code == 404

    cases: list[tuple[dict[str, Any], str]] = [
        ({}, "input: data is required"),
        ({"data": DATA, "smoothing": 100}, "input.smoothing: Must be less than or equal to 10"),
        ({"data": "/etc/passwd"}, "input.data: data must be an http(s) or data URL"),
        ({"data": "https://example.com/\u0000"}, "input.data: must not contain NUL characters"),
    ]
    for training_input, message in cases:
        response = await post_training(
            client, users.alice, "alice/base", setup, {"destination": "alice/dest", "input": training_input}
        )
        assert response.status_code == 422, response.text
        assert message in response.json()["detail"], response.json()
        assert response.json()["invalid_fields"]
    for bad_body in ({"input": {"data": DATA}}, {"destination": "alice/dest"}, {**body, "extra": 1}):
        response = await client.post(
            f"/v1/models/alice/base/versions/{setup}/trainings", json=bad_body, headers=headers
        )
        assert response.status_code == 422, bad_body
    assert (await client.get("/v1/trainings", headers=headers)).json()["results"] == []
    unauthenticated = await client.post(
        f"/v1/models/alice/base/versions/{setup}/trainings", json=body, headers={"Authorization": ""}
    )
    assert unauthenticated.status_code == 401


# --- publishing ------------------------------------------------------------------------------------


class Trainings:
    """Trainings of ``alice/base`` reported finished through the app's recorder."""

    def __init__(self, app: FastAPI, base: str) -> None:
        self.app = app
        self.database: Database = app.state.database
        self.storage = app.state.storage
        self.base = base

    def local_path(self, key: str | None) -> str:
        """Where the (local directory) storage keeps ``key``."""
        assert key is not None
        return str(self.app.state.settings.data_dir / "files" / key)

    async def start(self, destination: str = "alice/dest", username: str = "alice") -> str:
        """A training of the base, running elsewhere (the dispatcher leaves it alone)."""
        async with self.database.session() as session:
            account = await accounts.require(session, username)
            principal = Principal(account=account, acting_ids=frozenset({account.id}))
            base_model = (await session.execute(select(Model).where(Model.name == "base"))).scalar_one()
            version = await version_ops.get(session, base_model, self.base)
            target = await model_named(session, destination)
            training = prediction_ops.new(
                principal,
                model=base_model,
                model_ref="alice/base",
                version=version,
                input={"data": DATA},
                kind="training",
                destination_model_id=target.id,
                claimed_by="elsewhere",
                lease=3600,
            )
        writer = self.app.state.writer
        await writer.run(lambda tx: prediction_ops.insert_row(tx, training))
        await writer.run(lambda tx: self.app.state.transitions.transition(tx, training.id, Status.PROCESSING))
        return training.id

    async def output_file(self, data: bytes, name: str = "weights.json") -> str:
        """A file as coglet's upload leaves it (unlinked); returns its output URL."""
        file_id = new_object_id()
        key = file_ops.storage_key(file_ops.OUTPUT, file_id, name)
        await self.storage.put(key, data)
        digest = Digest()
        digest.update(data)
        async with self.database.session() as session:
            row = await file_ops.add(
                session,
                file_id=file_id,
                kind=file_ops.OUTPUT,
                account_id=await file_ops.orphan_owner(session),
                name=name,
                content_type="application/json",
                digest=digest,
                storage_key=key,
            )
        return file_urls.output_url(file_urls.public_base_url(self.app.state.settings), row.id, row.access_token, name)

    async def finish(
        self, training_id: str, output: Any, status: Literal["succeeded", "failed", "canceled"] = "succeeded"
    ) -> Prediction:
        async with self.database.session() as session:
            row = await session.get(Prediction, training_id)
            assert row is not None
            spec = VersionSpec(
                version_pk=row.version_pk,
                version_id=row.version_ref,
                mode="train",
                source_path="",
                venv_path="",
                ref="",
            )
        job = Job(prediction_id=training_id, spec=spec, input={})
        recorder = self.app.state.recorder
        recorder.hold(row)
        await recorder.finished(job, Outcome(status, output=output, logs="trained\n"))
        async with self.database.session() as session:
            row = await session.get(Prediction, training_id)
            assert row is not None
            return row

    async def versions(self, model_name: str = "dest") -> list[Version]:
        async with self.database.session() as session:
            result = await session.execute(
                select(Version).join(Model, Model.id == Version.model_id).where(Model.name == model_name)
            )
            return list(result.scalars())


@pytest.fixture
def runs(app: FastAPI, setup: str) -> Trainings:
    return Trainings(app, setup)


async def test_success_publishes_a_version_with_the_weights(
    client: httpx.AsyncClient, users: Users, runs: Trainings, setup: str
) -> None:
    weights = b'{"labels": {"a": {}, "b": {}}}'
    training_id = await runs.start()
    url = await runs.output_file(weights)
    row = await runs.finish(training_id, {"weights": url, "loss": 0.25})
    assert row.status == "succeeded", row.error
    [version] = await runs.versions()
    async with runs.database.session() as session:
        dest = await model_named(session, "alice/dest")
    content = hashlib.sha256(f"{setup}\n{hashlib.sha256(weights).hexdigest()}".encode()).hexdigest()
    expected_id = packing.version_id(content, dest.id, "alice/dest")  # the model is in the id, as for a push
    assert version.id == expected_id
    assert row.output == {"version": f"alice/dest:{expected_id}", "weights": url, "loss": 0.25}
    assert row.output_version_pk == version.pk
    # The base's code, environment and prediction schema; not trainable again.
    assert (version.source_path, version.venv_path) == ("/srv/sources/base", "/srv/venvs/base")
    assert (version.predict_ref, version.train_ref) == ("predict.py:Predictor", None)
    assert (version.concurrency, version.environment, version.python_version) == (2, {"A": "1"}, "3.11")
    assert set(version.openapi_schema["components"]["schemas"]) == {
        "Input", "Output", "PredictionRequest", "PredictionResponse", "Status", "HTTPValidationError", "ValidationError"
    }  # fmt: skip
    assert not [p for p in version.openapi_schema["paths"] if p.startswith("/trainings")]
    # The weights are the version's own: a link (same bytes) beside the training's output file.
    assert version.weights_key == f"weights/{content}/weights.json"  # the content: shared by every destination
    local = runs.local_path(version.weights_key)
    assert read(local) == weights
    ref = file_urls.own_output(url)
    assert ref is not None
    async with runs.database.session() as session:
        output_row = await session.get(StoredFile, ref[0])
        assert output_row is not None
        assert output_row.prediction_id == training_id and output_row.expires_at is None  # the training's file
        assert same_file(runs.local_path(output_row.storage_key), local)
        # Removing the training's files (data retention) leaves the version's weights alone.
        assert await file_ops.delete_prediction_files(session, runs.storage, [training_id]) == 1
    assert read(local) == weights

    # The API shows it as Replicate does; the destination's latest version is the trained one.
    body = (await client.get(f"/v1/trainings/{training_id}", headers=auth(users.alice))).json()
    validate("/trainings/{training_id}", "get", 200, body)
    assert body["output"]["version"] == f"alice/dest:{expected_id}"
    assert body["output"]["weights"].startswith("http://testserver/v1/files/outputs/")
    model = (await client.get("/v1/models/alice/dest", headers=auth(users.alice))).json()
    assert model["latest_version"]["id"] == expected_id
    # The base of a training cannot be deleted.
    gone = await client.delete(f"/v1/models/alice/base/versions/{setup}", headers=auth(users.alice))
    assert gone.status_code == 409 and "base of a training" in gone.json()["detail"]
    retrain = await post_training(
        client, users.alice, "alice/dest", expected_id, {"destination": "alice/dest", "input": {"data": DATA}}
    )
    assert retrain.status_code == 422 and "result of a training" in retrain.json()["detail"]


async def test_same_result_is_the_same_version(runs: Trainings) -> None:
    first, second = await runs.start(), await runs.start()
    one = await runs.finish(first, {"weights": await runs.output_file(b"w1")})
    two = await runs.finish(second, {"weights": await runs.output_file(b"w1")})
    assert out(one)["version"] == out(two)["version"]
    assert len(await runs.versions()) == 1
    three = await runs.finish(await runs.start(), await runs.output_file(b"w2"))  # train() -> Path
    assert three.status == "succeeded" and out(three)["version"] != out(one)["version"]
    assert len(await runs.versions()) == 2


async def test_same_weights_to_two_destinations_are_two_versions(
    app: FastAPI, client: httpx.AsyncClient, users: Users, runs: Trainings
) -> None:
    """Issue 18: the id includes the destination, so every client's bare id (``run("o/m:id")`` sends only
    the id) names one version rather than answering 422 for an id two models share."""
    await stop_dispatcher(app)
    await create_model(client, users.alice, "alice/other", visibility="private")
    one = await runs.finish(await runs.start("alice/dest"), {"weights": await runs.output_file(b"same")})
    two = await runs.finish(await runs.start("alice/other"), {"weights": await runs.output_file(b"same")})
    refs = [out(one)["version"], out(two)["version"]]
    assert [ref.partition(":")[0] for ref in refs] == ["alice/dest", "alice/other"]
    for ref in refs:
        model, _, vid = ref.partition(":")
        body = {"version": vid, "input": {"text": "hi"}}
        created = await client.post("/v1/predictions", json=body, headers=auth(users.alice))
        assert created.status_code == 201, created.text
        assert (created.json()["model"], created.json()["version"]) == (model, vid)
    assert refs[0].partition(":")[2] != refs[1].partition(":")[2]


async def test_inline_weights_are_stored(runs: Trainings) -> None:
    """coglet sends Path fields of an object output as data: URLs: they are kept as output files."""
    training_id = await runs.start()
    row = await runs.finish(training_id, {"weights": "data:application/json;base64,eyJhIjogMX0="})
    assert row.status == "succeeded", row.error
    [version] = await runs.versions()
    assert version.weights_key is not None and version.weights_key.endswith("/weights.json")
    assert read(runs.local_path(version.weights_key)) == b'{"a": 1}'
    ref = file_urls.own_output(out(row)["weights"])
    assert ref is not None
    async with runs.database.session() as session:
        stored = await session.get(StoredFile, ref[0])
        assert stored is not None and stored.prediction_id == training_id and stored.name == "weights.json"
    percent = await runs.finish(await runs.start(), {"weights": "data:,plain%20text"})
    assert percent.status == "succeeded", percent.error


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ({"weights": "weights after 2 steps"}, "train() returned no weights file"),
        ("https://elsewhere.example/w.bin", "train() returned no weights file"),
        (None, "train() returned no weights file"),
        ({"weights": "data:application/json;base64,@@@"}, "not a valid data URL"),
    ],
)
async def test_without_weights_the_training_fails(runs: Trainings, output: Any, message: str) -> None:
    row = await runs.finish(await runs.start(), output)
    assert row.status == "failed" and row.error is not None and message in row.error
    assert row.output == output and row.output_version_pk is None
    assert await runs.versions() == []


async def test_several_files_need_a_weights_field(runs: Trainings) -> None:
    files = [await runs.output_file(b"a", "a.bin"), await runs.output_file(b"b", "b.bin")]
    row = await runs.finish(await runs.start(), {"parts": files})
    assert row.status == "failed" and "2 files" in (row.error or "")
    row = await runs.finish(await runs.start(), {"parts": files, "weights": await runs.output_file(b"c", "c.bin")})
    assert row.status == "succeeded", row.error


async def test_unusable_weights_urls_fail(runs: Trainings) -> None:
    url = await runs.output_file(b"w")
    forged = url.replace(url.split("/")[-2], "x" * 22)
    row = await runs.finish(await runs.start(), {"weights": forged})
    assert row.status == "failed" and "missing from storage" in (row.error or "")
    used = await runs.start()
    await runs.finish(used, {"weights": url})
    row = await runs.finish(await runs.start(), {"weights": url})  # another training's file
    assert row.status == "failed" and "missing from storage" in (row.error or "")


async def test_destination_or_base_gone_fails(client: httpx.AsyncClient, users: Users, runs: Trainings) -> None:
    training_id = await runs.start()
    async with runs.database.session() as session:
        destination = (await session.execute(select(Model).where(Model.name == "dest"))).scalar_one()
        await session.delete(destination)
    row = await runs.finish(training_id, {"weights": await runs.output_file(b"w")})
    assert row.status == "failed" and "destination no longer exists" in (row.error or "")

    await create_model(client, users.alice, "alice/dest", visibility="private")
    training_id = await runs.start()
    async with runs.database.session() as session:
        base_model = (await session.execute(select(Model).where(Model.name == "base"))).scalar_one()
        base = await version_ops.get(session, base_model, runs.base)
        base.deleting = True
    row = await runs.finish(training_id, {"weights": await runs.output_file(b"w")})
    assert row.status == "failed" and "base version was deleted" in (row.error or "")
    assert await runs.versions() == []


async def test_a_training_that_already_ended_publishes_nothing(runs: Trainings) -> None:
    training_id = await runs.start()
    transitions = runs.app.state.transitions
    await runs.app.state.writer.run(lambda tx: transitions.transition(tx, training_id, Status.CANCELED))
    row = await runs.finish(training_id, {"weights": await runs.output_file(b"w")})
    assert row.status == "canceled" and row.output is None
    assert await runs.versions() == []


async def test_canceled_and_failed_trainings_publish_nothing(runs: Trainings) -> None:
    url = await runs.output_file(b"w")
    row = await runs.finish(await runs.start(), {"weights": url}, status="canceled")
    assert row.status == "canceled"
    row = await runs.finish(await runs.start(), None, status="failed")
    assert row.status == "failed"
    assert await runs.versions() == []


async def test_release_weights_keeps_shared_bytes(client: httpx.AsyncClient, users: Users, runs: Trainings) -> None:
    """The same result published to two models shares its weights until both versions are gone."""
    await create_model(client, users.alice, "alice/other", visibility="private")
    first = await runs.finish(await runs.start(), {"weights": await runs.output_file(b"shared")})
    second = await runs.finish(await runs.start("alice/other"), {"weights": await runs.output_file(b"shared")})
    assert out(first)["version"].split(":")[1] != out(second)["version"].split(":")[1]
    [one], [two] = await runs.versions("dest"), await runs.versions("other")
    assert one.weights_key == two.weights_key and one.pk != two.pk
    path = Path(runs.local_path(one.weights_key))
    async with runs.database.session() as session:
        for version in (one, two):
            row = await session.get(Version, version.pk)
            assert row is not None
            await session.execute(
                Prediction.__table__.delete().where(Prediction.output_version_pk == row.pk)  # type: ignore[attr-defined]
            )
            await version_ops.purge(session, row)
            await trainings.release_weights(session, runs.storage, row)
            assert exists(path) == (version is one)
    assert not exists(path.parent)


def test_prediction_schema_drops_the_training_half() -> None:
    pruned = trainings.prediction_schema(SCHEMA)
    assert "TrainingInput" in SCHEMA["components"]["schemas"]  # the base's schema is not changed
    assert not {"TrainingInput", "TrainingOutput", "TrainingRequest", "TrainingResponse"} & set(
        pruned["components"]["schemas"]
    )
    assert "/predictions" in pruned["paths"] and "/trainings" not in pruned["paths"]
    assert trainings.prediction_schema({}) == {}


async def test_a_training_whose_server_died_fails_clearly(app: FastAPI, runs: Trainings) -> None:
    """Crash safety is the predictions': a lease that runs out fails the training (nothing is published)."""
    training_id = await runs.start()
    async with runs.database.session() as session:
        await session.execute(
            update(Prediction).where(Prediction.id == training_id).values(lease_expires_at=utcnow() - timedelta(1))
        )
    dispatcher = app.state.services.get("dispatcher")
    assert isinstance(dispatcher, Dispatcher)
    await dispatcher.housekeeping()
    async with runs.database.session() as session:
        row = await session.get(Prediction, training_id)
        assert row is not None
    assert row.status == "failed" and row.error == RESTART_ERROR
    assert await runs.versions() == []


async def test_deleting_the_trained_version_keeps_the_base_source(
    client: httpx.AsyncClient, users: Users, runs: Trainings, tmp_path: Path
) -> None:
    """The trained version shares its base's source: the janitor removes it only with the last user."""
    source = tmp_path / "source"
    source.mkdir()
    async with runs.database.session() as session:
        await session.execute(update(Version).where(Version.id == runs.base).values(source_path=str(source)))
    trained = out(await runs.finish(await runs.start(), {"weights": await runs.output_file(b"w")}))["version"]
    trained_id = trained.split(":")[1]
    response = await client.delete(f"/v1/models/alice/dest/versions/{trained_id}", headers=auth(users.alice))
    assert response.status_code == 202, response.text
    await until(lambda: runs.versions("dest"), [])
    assert exists(source)
    # With the trained version gone its base may go too, and the source with it.
    response = await client.delete(f"/v1/models/alice/base/versions/{runs.base}", headers=auth(users.alice))
    assert response.status_code == 202, response.text
    await until(lambda: runs.versions("base"), [])
    assert not exists(source)


async def until(probe: Callable[[], Awaitable[Any]], expected: Any) -> None:
    """Wait (up to 20 s) until ``await probe()`` gives ``expected`` (the janitor is woken by the DELETE)."""
    for _ in range(1000):
        value = await probe()
        if value == expected:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"still {value!r}")
