"""Facts read from a version's Cog OpenAPI schema."""

from __future__ import annotations

from typing import Any


def _component(schema: dict[str, Any], name: str) -> dict[str, Any]:
    found = (schema.get("components") or {}).get("schemas", {}).get(name)
    return found if isinstance(found, dict) else {}


def can_stream(schema: dict[str, Any]) -> bool:
    """Whether predictions of this version stream (iterator outputs, or Cog's ``x-cog-streaming``)."""
    post = ((schema.get("paths") or {}).get("/predictions") or {}).get("post") or {}
    if post.get("x-cog-streaming"):
        return True
    output = _component(schema, "Output")
    return output.get("type") == "array" and output.get("x-cog-array-type") == "iterator"


def output_is_file(schema: dict[str, Any]) -> bool:
    """Whether the output is a file (or a list/iterator of files)."""
    output = _component(schema, "Output")
    if output.get("format") == "uri":
        return True
    items = output.get("items")
    return isinstance(items, dict) and items.get("format") == "uri"


def has_training(schema: dict[str, Any]) -> bool:
    return bool(_component(schema, "TrainingInput"))
