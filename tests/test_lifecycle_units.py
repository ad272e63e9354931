"""Pure lifecycle pieces: input validation, header parsing, error cleaning, webhook signatures."""

from __future__ import annotations

import pytest

from cogport.core.jobs import clean_error
from cogport.core.status import TERMINAL, Status
from cogport.errors import BadRequest, ValidationFailed
from cogport.lifecycle import inputs
from cogport.lifecycle.runs import parse_cancel_after, parse_prefer
from cogport.lifecycle.status import ALLOWED
from cogport.webhooks import signing

SCHEMA = {
    "components": {
        "schemas": {
            "Input": {
                "type": "object",
                "required": ["prompt"],
                "properties": {
                    "prompt": {"type": "string", "x-order": 0, "maxLength": 10},
                    "n": {"type": "integer", "minimum": 1, "maximum": 10, "x-order": 1, "default": 1},
                    "temp": {"type": "number", "x-order": 2},
                    "flag": {"type": "boolean", "x-order": 3},
                    "color": {"allOf": [{"$ref": "#/components/schemas/color"}], "x-order": 4},
                    "image": {"type": "string", "format": "uri", "x-order": 5},
                    "images": {"type": "array", "items": {"type": "string", "format": "uri"}, "x-order": 6},
                    "seed": {"type": "integer", "nullable": True, "x-order": 7},
                    "code": {"type": "string", "pattern": "^[a-z]+$", "x-order": 8},
                },
            },
            "color": {"type": "string", "enum": ["red", "green"], "title": "color"},
        }
    }
}


def problems(payload: object) -> list[tuple[str, str, str]]:
    with pytest.raises(ValidationFailed) as info:
        inputs.validate(SCHEMA, payload)
    return info.value.problems


def test_valid_input_drops_nulls_and_keeps_values() -> None:
    checked = inputs.validate(SCHEMA, {"prompt": "hi", "n": 3, "seed": None, "unknown": 1, "image": "data:,x"})
    assert checked.value == {"prompt": "hi", "n": 3, "image": "data:,x"}
    assert checked.file_fields == ["image"]


def test_every_problem_is_reported_with_replicates_shape() -> None:
    found = problems({"n": 11, "temp": "hot", "flag": 1, "color": "blue", "code": "ABC"})
    kinds = {(kind, field) for kind, field, _ in found}
    assert ("required", "input") in kinds
    assert ("number_lte", "input.n") in kinds
    assert ("type", "input.temp") in kinds
    assert ("type", "input.flag") in kinds
    assert ("enum", "input.color") in kinds
    assert ("pattern", "input.code") in kinds
    error = ValidationFailed(found)
    assert error.detail.startswith("- input: prompt is required\n")
    assert len(error.detail.strip().splitlines()) == len(found)


@pytest.mark.parametrize("value", ["/etc/passwd", "file:///etc/passwd", "ftp://x/y", "~/secret"])
def test_local_paths_are_never_file_inputs(value: str) -> None:
    assert ("format", "input.image") in {(k, f) for k, f, _ in problems({"prompt": "x", "image": value})}
    assert ("format", "input.images.1") in {
        (k, f) for k, f, _ in problems({"prompt": "x", "images": ["https://a/b", value]})
    }


def test_integers_are_strict_and_bools_are_not_numbers() -> None:
    assert problems({"prompt": "x", "n": 2.5})[0][:2] == ("type", "input.n")
    assert problems({"prompt": "x", "n": True})[0][:2] == ("type", "input.n")
    assert problems({"prompt": "x", "n": "2"})[0][:2] == ("type", "input.n")
    assert inputs.validate(SCHEMA, {"prompt": "x", "temp": 1}).value["temp"] == 1


def test_input_must_be_an_object() -> None:
    assert problems([1, 2])[0][:2] == ("type", "input")


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, None), ("wait", 60), ("wait=5", 5), ("wait=600", 60), ("respond-async", None), ("wait=1, foo", 1)],
)
def test_prefer(header: str | None, expected: int | None) -> None:
    assert parse_prefer(header, 60) == expected


@pytest.mark.parametrize("header", ["wait=0", "wait=abc", "wait=-1"])
def test_bad_prefer(header: str) -> None:
    with pytest.raises(BadRequest):
        parse_prefer(header, 60)


@pytest.mark.parametrize(
    ("header", "seconds"), [("30s", 30), ("5m", 300), ("1h30m45s", 5445), ("2h", 7200), ("10", 10), ("7.5", 7.5)]
)
def test_cancel_after(header: str, seconds: float) -> None:
    assert parse_cancel_after(header) == seconds


@pytest.mark.parametrize("header", ["1s", "soon", "5x", "-10"])
def test_bad_cancel_after(header: str) -> None:
    with pytest.raises(BadRequest):
        parse_cancel_after(header)


def test_status_table() -> None:
    assert {s for s in Status if s.is_terminal} == TERMINAL
    for terminal in TERMINAL:
        assert ALLOWED[terminal] == frozenset()
    assert Status.ABORTED in ALLOWED[Status.STARTING]
    assert Status.ABORTED not in ALLOWED[Status.PROCESSING]


def test_clean_error() -> None:
    assert clean_error("Prediction failed: Prediction failed: ValueError: boom") == "ValueError: boom"
    assert clean_error("boom") == "boom"
    assert clean_error("Prediction failed:") == "Prediction failed"


def test_webhook_signature_matches_the_reference_vector() -> None:
    sig = signing.signature(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, '{"test": 2432232314}'
    )
    assert sig == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
