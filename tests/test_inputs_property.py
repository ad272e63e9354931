"""Property tests (Hypothesis) for the input validator: whatever JSON a caller sends as ``input``, validation
either accepts it (and what it keeps is storable and JSON-encodable as UTF-8) or refuses it with
:class:`ValidationFailed` (a 422); it never raises anything else."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cogport.errors import ValidationFailed
from cogport.lifecycle import inputs

SCHEMA: dict[str, Any] = {
    "components": {
        "schemas": {
            "Input": {
                "type": "object",
                "required": ["prompt"],
                "properties": {
                    "prompt": {"type": "string", "x-order": 0},
                    "steps": {"type": "integer", "minimum": 1, "maximum": 100, "x-order": 1},
                    "scale": {"type": "number", "minimum": 0, "maximum": 2, "x-order": 2},
                    "flag": {"type": "boolean", "x-order": 3},
                    "style": {"allOf": [{"$ref": "#/components/schemas/style"}], "x-order": 4},
                    "image": {"type": "string", "format": "uri", "x-order": 5},
                    "images": {"type": "array", "items": {"type": "string", "format": "uri"}, "x-order": 6},
                },
            },
            "style": {"enum": ["plain", "title"], "type": "string"},
        }
    }
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
payloads = st.one_of(
    json_values,
    st.dictionaries(
        st.sampled_from(["prompt", "steps", "scale", "flag", "style", "image", "images", "other"])
        | st.text(max_size=6),
        json_values,
        max_size=8,
    ),
)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(payload=payloads)
def test_validation_accepts_or_refuses_with_a_422_and_nothing_else(payload: Any) -> None:
    for schema in (SCHEMA, {}):  # with an Input schema, and for a version without one
        try:
            checked = inputs.validate(schema, payload)
        except ValidationFailed as exc:
            assert exc.status == 422 and exc.problems
            continue
        # Storable (PostgreSQL's JSONB has no NaN) and answerable (UTF-8 has no lone surrogates).
        json.dumps(checked.value, ensure_ascii=False, allow_nan=False).encode("utf-8")
        assert set(checked.file_fields) <= set(checked.value)
