"""The request guard's NUL check, as the query is decoded (tests/test_inputs_nul.py drives it through the app)."""

from __future__ import annotations

from cogport.api.body_limits import nul_refusal
from cogport.errors import BadRequest, NotFound


def test_nul_is_refused_where_it_decodes_to_one() -> None:
    assert isinstance(nul_refusal({"path": "/v1/predictions/a\x00b", "query_string": b""}), NotFound)
    assert isinstance(nul_refusal({"path": "/v1/predictions", "query_string": b"cursor=%00"}), BadRequest)
    assert isinstance(nul_refusal({"path": "/v1/predictions", "query_string": b"a%00=1"}), BadRequest)


def test_text_that_only_looks_like_nul_passes() -> None:
    assert nul_refusal({"path": "/v1/predictions", "query_string": b"cursor=%2500"}) is None  # the text "%00"
    assert nul_refusal({"path": "/v1/predictions", "query_string": b"cursor=abc"}) is None
    assert nul_refusal({"path": "/v1/predictions/%00"}) is None  # the path is already decoded: no NUL here
