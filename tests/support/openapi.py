"""Validate response bodies against Replicate's own OpenAPI document (``shared/replicate-openapi.json``).

The document is OpenAPI 3.1 but uses 3.0's ``nullable``; it is rewritten into JSON Schema
(``type: [T, "null"]``) before validation.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import jsonschema

SPEC_PATH = Path(__file__).resolve().parents[2] / "tests" / "data" / "replicate-openapi.json"


@functools.cache
def spec() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SPEC_PATH.read_text())
    return _nullable(copy.deepcopy(data))


def _nullable(node: Any) -> Any:
    if isinstance(node, dict):
        if node.pop("nullable", False) and "type" in node:
            node["type"] = [node["type"], "null"] if isinstance(node["type"], str) else [*node["type"], "null"]
            if "enum" in node:
                node["enum"] = [*node["enum"], None]
        for value in node.values():
            _nullable(value)
    elif isinstance(node, list):
        for value in node:
            _nullable(value)
    return node


def _response_schema(path: str, method: str, status: int) -> dict[str, Any] | None:
    operation = spec()["paths"][path][method.lower()]
    response = operation["responses"].get(str(status))
    if response is None:
        raise AssertionError(f"{method} {path} does not document status {status}")
    content = response.get("content", {})
    for media in ("application/json", "application/problem+json"):
        if media in content:
            schema: dict[str, Any] = content[media].get("schema", {})
            return schema
    return None


def validate(path: str, method: str, status: int, body: Any) -> None:
    """Assert that ``body`` matches the documented response of ``method path`` with ``status``."""
    schema = _response_schema(path, method, status)
    if schema is None:
        return
    root = {"components": spec()["components"], **schema}
    jsonschema.validate(body, root, cls=jsonschema.Draft202012Validator)


def validate_component(name: str, body: Any) -> None:
    root = {"components": spec()["components"], "$ref": f"#/components/schemas/{name}"}
    jsonschema.validate(body, root, cls=jsonschema.Draft202012Validator)
