"""Input validation against a version's ``Input`` (or ``TrainingInput``) schema, before queueing.

coglet validates too, but only after a prediction has been queued and dispatched; checking here gives
the caller Replicate's 422 at once (``invalid_fields`` plus one ``- `` line per problem) and keeps bad
work out of the queue. Nulls for optional inputs are dropped (coglet rejects explicit nulls), and file
inputs must be URLs (``http``, ``https``, ``data``): local paths are never accepted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cogport import storable
from cogport.errors import ValidationFailed

FILE_SCHEMES = ("http://", "https://", "data:")


@dataclass
class CheckedInput:
    value: dict[str, Any]
    file_fields: list[str] = field(default_factory=list)
    """Top-level inputs holding file URLs (for resolving this server's own file URLs)."""


def component(schema: dict[str, Any], name: str) -> dict[str, Any] | None:
    found = schema.get("components", {}).get("schemas", {}).get(name)
    return found if isinstance(found, dict) else None


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Inline ``$ref`` and single-element ``allOf`` (Cog's enum layout) into one flat schema."""
    merged = {k: v for k, v in node.items() if k not in ("$ref", "allOf")}
    refs = [node] if "$ref" in node else []
    refs += [part for part in node.get("allOf", []) if isinstance(part, dict)]
    for part in refs:
        ref = part.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            target = component(schema, ref.rsplit("/", 1)[1]) or {}
            for key, value in _resolve(schema, target).items():
                merged.setdefault(key, value)
        elif "$ref" not in part:
            for key, value in part.items():
                merged.setdefault(key, value)
    return merged


class _Checker:
    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self.problems: list[tuple[str, str, str]] = []

    def fail(self, kind: str, name: str | None, description: str) -> None:
        """Record a problem with input ``name`` (``None``: with the input object as a whole)."""
        self.problems.append((kind, "input" if name is None else f"input.{name}", description))

    def check(self, name: str, spec: dict[str, Any], value: Any) -> None:
        spec = _resolve(self.schema, spec)
        kind = spec.get("type")
        checker = _TYPE_CHECKS.get(str(kind)) if kind else None
        if checker is not None and not checker(value):
            self.fail("type", name, f"Invalid type. Expected: {kind}, given: {_json_type(value)}")
            return
        if "enum" in spec and value not in spec["enum"]:
            allowed = ", ".join(_show(v) for v in spec["enum"])
            self.fail("enum", name, f"{name} must be one of the following: {allowed}")
        self._bounds(name, spec, value)
        if spec.get("format") == "uri" and isinstance(value, str) and not value.startswith(FILE_SCHEMES):
            self.fail("format", name, f"{name} must be an http(s) or data URL, not {_short(value)!r}")
        if kind == "array" and isinstance(value, list) and isinstance(spec.get("items"), dict):
            for index, item in enumerate(value):
                self.check(f"{name}.{index}", spec["items"], item)

    def _bounds(self, name: str, spec: dict[str, Any], value: Any) -> None:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if "minimum" in spec and value < spec["minimum"]:
                self.fail("number_gte", name, f"Must be greater than or equal to {_show(spec['minimum'])}")
            if "maximum" in spec and value > spec["maximum"]:
                self.fail("number_lte", name, f"Must be less than or equal to {_show(spec['maximum'])}")
        if isinstance(value, str):
            if "minLength" in spec and len(value) < spec["minLength"]:
                self.fail("string_gte", name, f"String length must be greater than or equal to {spec['minLength']}")
            if "maxLength" in spec and len(value) > spec["maxLength"]:
                self.fail("string_lte", name, f"String length must be less than or equal to {spec['maxLength']}")
            pattern = spec.get("pattern")
            if isinstance(pattern, str) and re.search(pattern, value) is None:
                self.fail("pattern", name, f"Does not match pattern '{pattern}'")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


_TYPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": _is_int,
    "number": _is_number,
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _show(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _short(value: str) -> str:
    return value if len(value) <= 60 else value[:57] + "..."


def validate(schema: dict[str, Any], payload: Any, *, component_name: str = "Input") -> CheckedInput:
    """Check ``payload`` against ``component_name``; return the input to send to the model."""
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise ValidationFailed([("type", "input", "Invalid type. Expected: object, given: " + _json_type(payload))])
    nul = [("format", field, reason) for field, reason in storable.problems(payload, "input")]
    if nul:
        raise ValidationFailed(nul)  # PostgreSQL cannot store them (text or JSONB): a 422, not a 500
    spec = component(schema, component_name)
    if spec is None:
        # A version without a schema: nothing to check against (coglet validates nothing either).
        return CheckedInput(value={k: v for k, v in payload.items() if v is not None})
    properties: dict[str, Any] = spec.get("properties", {}) or {}
    required = set(spec.get("required", []) or [])
    checker = _Checker(schema)
    cleaned: dict[str, Any] = {}
    files: list[str] = []
    for name in sorted(required - payload.keys(), key=lambda n: properties.get(n, {}).get("x-order", 0)):
        checker.fail("required", None, f"{name} is required")
    for name, value in payload.items():
        prop = properties.get(name)
        if prop is None:
            continue  # Cog drops unknown inputs (with a warning); so does Replicate.
        if value is None:
            if name in required and not _resolve(schema, prop).get("nullable"):
                checker.fail("required", None, f"{name} is required")
            continue
        checker.check(name, prop, value)
        if _holds_files(schema, prop):
            files.append(name)
        cleaned[name] = value
    if checker.problems:
        raise ValidationFailed(checker.problems)
    return CheckedInput(value=cleaned, file_fields=files)


def _holds_files(schema: dict[str, Any], prop: dict[str, Any]) -> bool:
    spec = _resolve(schema, prop)
    if spec.get("format") == "uri":
        return True
    items = spec.get("items")
    return isinstance(items, dict) and _resolve(schema, items).get("format") == "uri"


def stored(schema: dict[str, Any], value: dict[str, Any], *, component_name: str = "Input") -> CheckedInput:
    """An input validated when its run was created (as stored in the row), without checking it again:
    only which of its fields hold files (to resolve them when the run starts)."""
    spec = component(schema, component_name)
    if spec is None:
        return CheckedInput(value=value)
    properties: dict[str, Any] = spec.get("properties", {}) or {}
    files = [name for name in value if name in properties and _holds_files(schema, properties[name])]
    return CheckedInput(value=value, file_fields=files)
