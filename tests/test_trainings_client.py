"""Trainings end to end: a real build of ``examples/trainable``, real coglet processes (a train-mode instance
for ``train()``, a predict-mode one with ``COG_WEIGHTS`` for the trained version), the official client."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, LiveServer
from tests.support.models import push
from tests.support.openapi import validate
from tests.support.pushing import (  # noqa: F401 - fixtures
    EXAMPLES,
    create_model,
    shared_build_dirs,
    shared_venvs,
    write_model,
)
from tests.support.webhooks import Receiver

pytestmark = pytest.mark.usefixtures("shared_build_dirs")
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

TOPICS = """text,label
the team won the match in the last minute,sports
a great goal from the striker,sports
the goalkeeper saved a penalty,sports
our coach trained the players hard,sports
the referee showed a red card,sports
fans cheered in the stadium,sports
the runner finished the marathon,sports
a tennis player served an ace,sports
simmer the sauce with garlic and onions,cooking
bake the bread in a hot oven,cooking
whisk the eggs with sugar and butter,cooking
season the soup with salt and pepper,cooking
fry the onions until golden,cooking
knead the dough and let it rise,cooking
roast the chicken with lemon and herbs,cooking
chop the tomatoes for the salad,cooking
"""
"""A different task from the base's (sentiment): the trained version must answer with these labels."""


def finish(training: Any, timeout: float = 120) -> Any:
    """Poll with ``reload()`` until the training ends (the 1.0.x client's Training has no ``wait()``)."""
    deadline = time.monotonic() + timeout
    while training.status not in ("succeeded", "failed", "canceled"):
        assert time.monotonic() < deadline, f"training {training.id} still {training.status}"
        time.sleep(0.05)
        training.reload()
    return training


@pytest.fixture
def trainable(live_server: LiveServer) -> str:
    version = push(live_server, EXAMPLES / "trainable", "trainable")
    create_model(live_server.url, ADMIN_TOKEN, "admin", "topics")
    return version


def write_csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "data.csv"
    path.write_text(text)
    return path


def test_train_publish_and_run_the_trained_version(
    replicate_env: Any, live_server: LiveServer, trainable: str, tmp_path: Path
) -> None:
    replicate = replicate_env
    sentence = "the striker scored a goal in the stadium"
    base_answer = replicate.run(f"admin/trainable:{trainable}", input={"text": sentence})
    assert base_answer["label"] in ("positive", "negative")

    started = time.monotonic()
    with write_csv(tmp_path, TOPICS).open("rb") as data:
        training = replicate.trainings.create(
            model="admin/trainable",
            version=trainable,
            input={"data": data, "smoothing": 0.5},
            destination="admin/topics",
        )
    assert training.status == "starting"
    assert training.urls["get"] == f"{live_server.url}/v1/trainings/{training.id}"
    assert training.model == "admin/trainable" and training.version == trainable
    finish(training)
    trained_s = time.monotonic() - started
    assert training.status == "succeeded", (training.error, training.logs, training.output)
    assert "trained on 16 examples" in training.logs
    owner_name, _, version_id = training.output["version"].partition(":")
    assert owner_name == "admin/topics" and len(version_id) == 64
    assert training.destination == "admin/topics"  # the client derives it from output.version

    weights = httpx.get(training.output["weights"], headers=AUTH)
    assert weights.status_code == 200
    assert sorted(weights.json()["labels"]) == ["cooking", "sports"]

    started = time.monotonic()
    trained_answer = replicate.run(training.output["version"], input={"text": sentence})
    first_run_s = time.monotonic() - started
    assert trained_answer["label"] == "sports" and trained_answer["confidence"] > 0.9
    assert replicate.run("admin/topics", input={"text": "stir the garlic into the soup"})["label"] == "cooking"
    # The base is unchanged: its own weights, its own instance.
    assert replicate.run(f"admin/trainable:{trainable}", input={"text": sentence}) == base_answer
    print(f"\ntraining: {trained_s:.2f}s end to end; first prediction of the trained version: {first_run_s:.2f}s")

    assert replicate.trainings.get(training.id).output == training.output
    assert [t.id for t in replicate.trainings.list().results] == [training.id]
    body = httpx.get(f"{live_server.url}/v1/trainings/{training.id}", headers=AUTH).json()
    validate("/trainings/{training_id}", "get", 200, body)
    assert body["metrics"]["predict_time"] > 0 and body["metrics"]["total_time"] >= body["metrics"]["predict_time"]
    validate("/trainings", "get", 200, httpx.get(f"{live_server.url}/v1/trainings", headers=AUTH).json())

    version = replicate.models.get("admin/topics").versions.get(version_id)
    assert "TrainingInput" not in version.openapi_schema["components"]["schemas"]
    assert "/trainings" not in version.openapi_schema["paths"]
    # A trained version predicts; it is not trained again. Its base cannot be deleted while it exists.
    again = httpx.post(
        f"{live_server.url}/v1/models/admin/topics/versions/{version_id}/trainings",
        json={"destination": "admin/topics", "input": {"data": "https://example.com/x.csv"}},
        headers=AUTH,
    )
    assert again.status_code == 422 and "cannot be trained" in again.json()["detail"]
    gone = httpx.delete(f"{live_server.url}/v1/models/admin/trainable/versions/{trainable}", headers=AUTH)
    assert gone.status_code == 409 and "base of a training" in gone.json()["detail"]


def test_failing_train_fails_the_training_and_publishes_nothing(
    replicate_env: Any, live_server: LiveServer, trainable: str, tmp_path: Path
) -> None:
    replicate = replicate_env
    with write_csv(tmp_path, "text,label\nonly one label here,a\nand again,a\n").open("rb") as data:
        training = replicate.trainings.create(
            model="admin/trainable", version=trainable, input={"data": data}, destination="admin/topics"
        )
    finish(training)
    assert training.status == "failed"
    assert "at least two labels" in training.error
    assert replicate.models.get("admin/topics").latest_version is None


def test_webhooks_with_events_filter(replicate_env: Any, live_server: LiveServer, trainable: str) -> None:
    replicate = replicate_env
    receiver = Receiver()
    receiver.start()
    try:
        csv = "data:text/csv;base64," + __import__("base64").b64encode(TOPICS.encode()).decode()
        training = replicate.trainings.create(
            model="admin/trainable",
            version=trainable,
            input={"data": csv},
            destination="admin/topics",
            webhook=receiver.url,
            webhook_events_filter=["completed"],
        )
        finish(training)
        assert training.status == "succeeded"
        deliveries = receiver.wait_terminal(1, timeout=30)
    finally:
        receiver.stop()
    assert [d.status for d in deliveries] == ["succeeded"]
    body = deliveries[0].json
    assert body["id"] == training.id and body["output"]["version"] == training.output["version"]
    assert body["urls"]["get"].endswith(f"/v1/trainings/{training.id}")
    assert body["webhook_events_filter"] == ["completed"]
    # The webhook shows the training as GET does (one presenter), output included.
    shown = httpx.get(
        f"{live_server.url}/v1/trainings/{training.id}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ).json()
    assert body == shown


STEPPER = {
    "cog.yaml": 'build:\n  python_version: "3.11"\npredict: "predict.py:Predictor"\ntrain: "train.py:train"\n',
    "predict.py": """from typing import Optional
from urllib.request import urlopen

from cog import BasePredictor, Path


class Predictor(BasePredictor):
    def setup(self, weights: Optional[Path] = None) -> None:
        # A URL, as on Replicate (cogport's gateway serves the trained file inside the sandbox).
        self.steps = int(urlopen(str(weights)).read()) if weights else 0

    def predict(self) -> int:
        return self.steps
""",
    "train.py": """import os
import signal
import tempfile
import time

from cog import Input, Path


def train(
    steps: int = Input(default=1, ge=1),
    pause: float = Input(default=0.0, ge=0),
    crash: bool = Input(default=False),
) -> Path:
    for step in range(steps):
        print(f"step {step}", flush=True)
        if crash:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(pause)
    out = Path(tempfile.mkdtemp()) / "steps.txt"
    out.write_text(str(steps))
    return out
""",
}
"""A trainer that takes its time (``pause`` per step), or kills its own worker; returns a Path (uploaded)."""


@pytest.fixture
def stepper(live_server: LiveServer, tmp_path: Path) -> str:
    version = push(live_server, write_model(tmp_path / "stepper", STEPPER), "stepper")
    create_model(live_server.url, ADMIN_TOKEN, "admin", "stepped")
    return version


def test_cancel_mid_training_then_train_again(replicate_env: Any, live_server: LiveServer, stepper: str) -> None:
    replicate = replicate_env
    training = replicate.trainings.create(
        model="admin/stepper", version=stepper, input={"steps": 600, "pause": 0.1}, destination="admin/stepped"
    )
    deadline = time.monotonic() + 60
    while "step 2" not in (training.logs or ""):
        assert time.monotonic() < deadline, training
        time.sleep(0.05)
        training.reload()
    assert training.status == "processing"
    training.cancel()
    finish(training, timeout=30)
    assert training.status == "canceled"
    assert replicate.models.get("admin/stepped").latest_version is None

    # The train-mode instance took the cancel in its stride: the next training runs and publishes.
    again = finish(
        replicate.trainings.create(
            model="admin/stepper", version=stepper, input={"steps": 3}, destination="admin/stepped"
        )
    )
    assert again.status == "succeeded", again.error
    assert again.output["weights"].endswith("/steps.txt")  # train() -> Path: coglet uploaded it
    assert replicate.run(again.output["version"]) == 3  # setup(weights) read the trained file
    assert replicate.run(f"admin/stepper:{stepper}") == 0  # the base has no weights


def test_a_crashing_train_fails_clearly_and_the_next_runs(
    replicate_env: Any, live_server: LiveServer, stepper: str
) -> None:
    replicate = replicate_env
    crashed = finish(
        replicate.trainings.create(
            model="admin/stepper", version=stepper, input={"crash": True}, destination="admin/stepped"
        )
    )
    assert crashed.status == "failed"
    assert "crash" in crashed.error.lower()
    ok = finish(
        replicate.trainings.create(
            model="admin/stepper", version=stepper, input={"steps": 2}, destination="admin/stepped"
        )
    )
    assert ok.status == "succeeded", ok.error


def test_destination_errors_through_the_client(replicate_env: Any, live_server: LiveServer, stepper: str) -> None:
    replicate = replicate_env
    for destination in ("admin/missing", "someone/else"):
        with pytest.raises(replicate.exceptions.ReplicateError) as info:
            replicate.trainings.create(model="admin/stepper", version=stepper, input={}, destination=destination)
        assert info.value.status == 404
        assert info.value.detail == "The specified training destination does not exist"
    with pytest.raises(replicate.exceptions.ReplicateError) as info:
        replicate.trainings.create(
            model="admin/stepper", version=stepper, input={"steps": 0}, destination="admin/stepped"
        )
    assert info.value.status == 422


def test_sync_wait(live_server: LiveServer, stepper: str) -> None:
    """``Prefer: wait`` works for trainings as for predictions: the answer is the finished training."""
    response = httpx.post(
        f"{live_server.url}/v1/models/admin/stepper/versions/{stepper}/trainings",
        json={"destination": "admin/stepped", "input": {"steps": 2}},
        headers={**AUTH, "Prefer": "wait=30"},
        timeout=40,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    validate("/models/{model_owner}/{model_name}/versions/{version_id}/trainings", "post", 201, body)
    assert body["status"] == "succeeded" and body["output"]["version"].startswith("admin/stepped:")
    assert response.headers["location"] == body["urls"]["get"]
    assert "step 1" in body["logs"]


def test_the_same_weights_trained_to_two_models_run_by_bare_id(
    replicate_env: Any, live_server: LiveServer, stepper: str
) -> None:
    """Issue 18: two destinations trained to identical weights get two versions, and each runs by the bare
    id every client sends for ``run("owner/name:id")`` (before, both shared one id, answered 422)."""
    replicate = replicate_env
    create_model(live_server.url, ADMIN_TOKEN, "admin", "stepped-too")
    refs = []
    for destination in ("admin/stepped", "admin/stepped-too"):
        training = finish(
            replicate.trainings.create(
                model="admin/stepper", version=stepper, input={"steps": 2}, destination=destination
            )
        )
        assert training.status == "succeeded", training.error
        refs.append(training.output["version"])
    for ref in refs:
        assert replicate.run(ref) == 2  # the official client sends the bare id
        created = httpx.post(
            f"{live_server.url}/v1/predictions",
            json={"version": ref.partition(":")[2], "input": {}},
            headers={**AUTH, "Prefer": "wait=60"},
            timeout=70,
        )
        assert created.status_code == 201, created.text
        assert (created.json()["model"], created.json()["output"]) == (ref.partition(":")[0], 2)
    assert refs[0].partition(":")[2] != refs[1].partition(":")[2]
