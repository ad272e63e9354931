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
