"""A version's input schema as form fields, in ``x-order``: what the model page renders.

Pure: a schema in, fields out. The browser turns the filled form back into a prediction's ``input``
(``static/playground.js``, by each field's ``kind``), and the API validates it as it validates any
client's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["text", "integer", "number", "boolean", "select", "secret", "file", "list", "files", "json"]


@dataclass(frozen=True)
class Field:
    name: str
    kind: Kind
    description: str = ""
    required: bool = False
    default: Any = None
    """The schema's default (``None``: none)."""
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] = ()
    item_kind: Kind | None = None
    """For ``list``: how each line is read (``text``, ``integer`` or ``number``)."""
    pattern: str | None = None
    min_length: int | None = None
    max_length: int | None = None

    @property
    def default_text(self) -> str:
        """The default as the field's initial text."""
        if self.default is None:
            return ""
        if self.kind == "list":
            return "\n".join(str(item) for item in self.default) if isinstance(self.default, list) else ""
        if self.kind == "json":
            return json.dumps(self.default, indent=2)
        return str(self.default)

    @property
    def choice_type(self) -> str:
        """How a select's value is sent: ``integer``, ``number`` or ``text``."""
        if self.choices and all(isinstance(c, int) and not isinstance(c, bool) for c in self.choices):
            return "integer"
        if self.choices and all(isinstance(c, int | float) and not isinstance(c, bool) for c in self.choices):
            return "number"
        return "text"


def _resolve(prop: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """A property with its ``allOf: [{$ref}]`` (cog's enums) merged in; the property's own keys win."""
    merged: dict[str, Any] = {}
    for part in prop.get("allOf", []):
        ref = part.get("$ref", "") if isinstance(part, dict) else ""
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            target = components.get(ref.rsplit("/", 1)[-1])
            if isinstance(target, dict):
                merged.update(target)
        elif isinstance(part, dict):
            merged.update(part)
    merged.update({k: v for k, v in prop.items() if k != "allOf"})
    return merged


def _scalar_kind(prop: dict[str, Any]) -> Kind | None:
    kind = prop.get("type")
    if kind == "string":
        if prop.get("format") == "uri":
            return "file"
        if prop.get("x-cog-secret") or prop.get("format") == "password":
            return "secret"
        return "text"
    if kind == "integer":
        return "integer"
    if kind == "number":
        return "number"
    if kind == "boolean":
        return "boolean"
    return None


def _number(value: Any) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _field(name: str, prop: dict[str, Any], required: bool) -> Field:
    description = prop.get("description") if isinstance(prop.get("description"), str) else ""
    common: dict[str, Any] = {
        "name": name,
        "description": description or "",
        "required": required,
        "default": prop.get("default"),
    }
    choices = prop.get("enum")
    if isinstance(choices, list) and choices:
        return Field(kind="select", choices=tuple(choices), **common)
    if prop.get("type") == "array":
        items = prop.get("items")
        item_kind = _scalar_kind(items) if isinstance(items, dict) else None
        if item_kind == "file":
            return Field(kind="files", **common)
        if item_kind in ("text", "integer", "number", "secret"):
            return Field(kind="list", item_kind="text" if item_kind == "secret" else item_kind, **common)
        return Field(kind="json", **common)
    kind = _scalar_kind(prop)
    if kind is None:
        return Field(kind="json", **common)
    min_length = prop.get("minLength")
    max_length = prop.get("maxLength")
    return Field(
        kind=kind,
        minimum=_number(prop.get("minimum")),
        maximum=_number(prop.get("maximum")),
        pattern=prop.get("pattern") if isinstance(prop.get("pattern"), str) else None,
        min_length=min_length if isinstance(min_length, int) else None,
        max_length=max_length if isinstance(max_length, int) else None,
        **common,
    )


def _components(openapi_schema: Any) -> dict[str, Any]:
    """``components.schemas`` of a version's schema, or ``{}`` however malformed it is."""
    components = openapi_schema.get("components") if isinstance(openapi_schema, dict) else None
    schemas = components.get("schemas") if isinstance(components, dict) else None
    return schemas if isinstance(schemas, dict) else {}


def input_fields(openapi_schema: dict[str, Any] | None) -> list[Field]:
    """The fields of a version's ``Input`` schema, in ``x-order`` (then by name)."""
    components = _components(openapi_schema)
    schema = components.get("Input")
    if not isinstance(schema, dict):
        return []
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return []
    required_names = schema.get("required")
    required = {n for n in required_names if isinstance(n, str)} if isinstance(required_names, list) else set()

    def order(item: tuple[str, Any]) -> tuple[float, str]:
        position = item[1].get("x-order") if isinstance(item[1], dict) else None
        return (position if isinstance(position, int | float) else float("inf"), item[0])

    return [
        _field(name, _resolve(prop, components), name in required)
        for name, prop in sorted(properties.items(), key=order)
        if isinstance(prop, dict)
    ]


def output_schema(openapi_schema: dict[str, Any] | None) -> dict[str, Any]:
    """The version's ``Output`` schema (how the page shows an output), or ``{}``."""
    output = _components(openapi_schema).get("Output")
    return output if isinstance(output, dict) else {}
