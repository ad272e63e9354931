"""Property tests (Hypothesis) for every list operation's ``cursor`` and every other query parameter they take:
whatever a caller sends (any text, any bytes in base64, any JSON object in base64, a cursor of the right shape
whose fields have the wrong types, huge numbers, NaN, nesting), the answer is never a 5xx, and the kept-alive
connection it came on still serves the next request (one httpx client against a real server).
Bounded: ``COGPORT_PROPERTY_EXAMPLES`` cases per operation (default 40)."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cogport.db.engine import Database
from tests.conftest import ADMIN_TOKEN, LiveServer
from tests.support.registry import add_prediction, add_version

EXAMPLES = int(os.environ.get("COGPORT_PROPERTY_EXAMPLES", "40"))
# A failure shrinks (to a readable cursor); nothing is kept between runs. Fixtures are per test, by design.
BOUNDED = settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
OWNED = "admin/m"  # the admin token's own model (settings.admin_username)
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
FORGED = base64.urlsafe_b64encode(b'{"v":"abc","t":"x","d":"n"}').decode()  # issue 18: right shape, wrong types

# Query-string text: anything httpx can encode (lone surrogates have no UTF-8), NUL and controls included.
texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()  # unbounded: huge numbers
    | st.floats(allow_nan=True, allow_infinity=True)
    | texts
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(texts, children, max_size=3),
    max_leaves=8,
)
aware_times = st.datetimes(
    min_value=datetime(1, 1, 1),  # hypothesis wants naive bounds
    max_value=datetime(9999, 12, 31, 23, 59, 59),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12))]),
)
# A cursor as this server writes it ({"v", "t", "d", "dt"}), each field right or of any other type.
shaped = st.fixed_dictionaries(
    {},
    optional={
        "v": json_values | aware_times.map(datetime.isoformat) | st.integers(0, 2**31 - 1),
        "t": json_values | st.integers(0, 2**31 - 1) | st.text("0123456789abcdefghjkmnpqrstvwxyz", min_size=26),
        "d": st.sampled_from(["n", "p"]) | json_values,
        "dt": st.booleans() | json_values,
    },
)

# A cursor as this server writes it, every field of the right type: it reaches the database.
written = st.fixed_dictionaries(
    {
        "v": aware_times.map(datetime.isoformat),
        "t": st.integers(0, 2**31 - 1) | st.text("0123456789abcdefghjkmnpqrstvwxyz", min_size=26, max_size=26),
        "d": st.sampled_from(["n", "p"]),
        "dt": st.just(True),
    }
)

keys = st.integers(0, 2**31 - 1) | st.text("0123456789abcdefghjkmnpqrstvwxyz", max_size=26)
# Each field decodable, but maybe of another list's type or the wrong one (a time as text, an id as a time).
retyped = st.fixed_dictionaries(
    {"v": keys | aware_times.map(datetime.isoformat), "t": keys | aware_times.map(datetime.isoformat),
     "d": st.sampled_from(["n", "p"])},
    optional={"dt": st.booleans()},
)  # fmt: skip


def _b64(data: bytes, alphabet: Callable[[bytes], bytes], pad: bool) -> str:
    encoded = alphabet(data).decode()
    return encoded if pad else encoded.rstrip("=")


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()  # NaN and Infinity too: Python's json reads them back


cursors = st.one_of(
    texts,
    st.builds(
        _b64,
        st.binary(max_size=64) | json_values.map(_json_bytes) | (shaped | retyped | written).map(_json_bytes),
        st.sampled_from([base64.urlsafe_b64encode, base64.standard_b64encode]),
        st.booleans(),
    ),
)
times = texts | aware_times.map(datetime.isoformat) | st.dates().map(str)


NO_BODY = st.just(b"")
SOURCES = st.sampled_from(["web", "api"]) | texts


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    params: st.SearchStrategy[dict[str, Any]]
    body: st.SearchStrategy[bytes] = NO_BODY
    sample: bytes = b""  # a body it answers 200 to


def _params(**others: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """``cursor`` plus ``others``, each present or absent; the values kept only where httpx can send them."""
    return st.fixed_dictionaries({}, optional={"cursor": cursors, **others})


OPERATIONS = [
    Operation("GET", "/v1/predictions", _params(created_after=times, created_before=times, source=SOURCES)),
    Operation("GET", "/v1/trainings", _params(created_after=times, created_before=times)),
    Operation(
        "GET",
        "/v1/models",
        _params(
            sort_by=st.sampled_from(["latest_version_created_at", "model_created_at"]) | texts,
            sort_direction=st.sampled_from(["asc", "desc"]) | texts,
        ),
    ),
    Operation("QUERY", "/v1/models", _params(), st.binary(max_size=40) | texts.map(str.encode), b"m"),
    Operation("GET", f"/v1/models/{OWNED}/versions", _params()),
    Operation("GET", "/v1/collections", _params()),
    Operation("GET", "/v1/deployments", _params()),
    Operation("GET", "/v1/files", _params()),
]


def _seed(server: LiveServer, client: httpx.Client) -> None:
    """Something in every list: a model with a version, a prediction and a training, a collection, a file,
    a deployment."""
    owner, name = OWNED.split("/")
    assert owner == server.settings.admin_username
    model = {"owner": owner, "name": name, "visibility": "public", "hardware": "cpu"}
    created = client.post("/v1/models", json=model)
    assert created.status_code == 201, created.text

    async def versions() -> str:
        database = Database(server.settings)
        try:
            vid = await add_version(database, OWNED)
            await add_prediction(database, OWNED, vid, server.settings.admin_username)
            return vid
        finally:
            await database.dispose()

    vid = asyncio.run(versions())
    collection = client.post("/admin/v1/collections", json={"slug": "c", "name": "C"})
    assert collection.status_code == 201, collection.text
    upload = client.post("/v1/files", files={"content": ("a.txt", b"hello", "text/plain")})
    assert upload.status_code == 201, upload.text
    deployment = {"name": "dep", "model": OWNED, "version": vid, "hardware": "cpu", "min_instances": 0,
                  "max_instances": 1}  # fmt: skip
    response = client.post("/v1/deployments", json=deployment)
    assert response.status_code == 200, response.text


def _local_port(response: httpx.Response) -> int:
    port: int = response.extensions["network_stream"].get_extra_info("client_addr")[1]
    return port


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: f"{op.method} {op.path}")
def test_list_parameters_never_answer_a_server_error_nor_drop_the_connection(
    live_server: LiveServer, operation: Operation
) -> None:
    with httpx.Client(base_url=live_server.url, headers=AUTH, timeout=30) as client:
        _seed(live_server, client)
        first = client.request(operation.method, operation.path, content=operation.sample)
        assert first.status_code == 200, first.text
        connection = _local_port(first)

        @BOUNDED
        @given(params=operation.params, body=operation.body)
        @example(params={"cursor": FORGED}, body=operation.sample)  # issue 18's: it reached the database, a 500
        def call(params: dict[str, Any], body: bytes) -> None:
            response = client.request(operation.method, operation.path, params=params, content=body)
            assert response.status_code < 500, (params, body, response.text)
            if response.status_code >= 400:
                assert response.headers["content-type"].startswith("application/problem+json")
                assert response.json()["status"] == response.status_code
            after = client.get(operation.path)
            assert after.status_code == 200, after.text
            assert _local_port(response) == _local_port(after) == connection, "the connection was not kept"

        call()


def test_a_cursor_of_the_wrong_types_is_a_400_on_every_list(live_server: LiveServer) -> None:
    """The example from issue 18: right shape, wrong types (it reached the database, a 500)."""
    wrong_tiebreak = {"v": datetime.now(UTC).isoformat(), "t": [1], "d": "n", "dt": True}
    nan = {"v": math.nan, "t": 1, "d": "n"}
    with httpx.Client(base_url=live_server.url, headers=AUTH, timeout=30) as client:
        _seed(live_server, client)
        for cursor in (FORGED, _b64(_json_bytes(wrong_tiebreak), base64.urlsafe_b64encode, False),
                       _b64(_json_bytes(nan), base64.standard_b64encode, True)):  # fmt: skip
            for operation in OPERATIONS:
                response = client.request(
                    operation.method, operation.path, params={"cursor": cursor}, content=operation.sample
                )
                assert response.status_code == 400, (operation.path, cursor, response.text)
                assert "cursor" in response.json()["detail"]
