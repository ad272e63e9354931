"""Two hot-path helpers made faster than the library calls they stand for, and still equal to them:
the request's base URL (``deps.get_base_url``, memoised by the parts of the scope it reads) and the
timestamps of the wire objects (``presenters.timestamp``, formatted without ``strftime``)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from cogport.api.deps import get_base_url
from cogport.api.presenters import timestamp
from cogport.settings import Settings

hosts = st.one_of(
    st.none(),
    st.sampled_from(["example.com", "example.com:8000", "[::1]:80", "127.0.0.1:443", "h:notaport", ":", "a b"]),
    st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=20),
)
scopes = st.fixed_dictionaries(
    {
        "scheme": st.sampled_from(["http", "https"]),
        "server": st.one_of(
            st.none(),
            st.tuples(st.sampled_from(["127.0.0.1", "::1", "example.org", "testserver"]), st.integers(1, 65535)),
        ),
        "root_path": st.sampled_from(["", "/api", "/api/", "/a b"]),
        "host": hosts,
    },
    optional={"app_root_path": st.sampled_from(["", "/app", "/app/"])},
)


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(parts=scopes)
def test_the_base_url_is_starlettes(parts: dict[str, Any], tmp_path: Path) -> None:
    host = parts.pop("host")
    headers = [(b"accept", b"*/*")] + ([(b"host", host.encode("latin-1"))] if host is not None else [])
    scope = {"type": "http", "method": "GET", "path": "/v1/predictions", "query_string": b"a=1", **parts}
    scope["headers"] = headers
    scope["app"] = SimpleNamespace(state=SimpleNamespace(settings=Settings(data_dir=tmp_path)))
    request = Request(scope)
    assert asyncio.run(get_base_url(request)) == str(Request(scope).base_url).rstrip("/")


@settings(max_examples=2000, deadline=None)
@given(
    value=st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    zone=st.sampled_from([None, UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]),
)
def test_timestamps_are_as_strftime_writes_them(value: datetime, zone: timezone | None) -> None:
    value = value.replace(tzinfo=zone)
    assert timestamp(value) == value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert timestamp(None) is None
