"""Text that cannot be stored or sent on: NUL characters (PostgreSQL text and JSONB refuse them) and lone
surrogates (``"\\ud800"`` in JSON: valid escapes, but no UTF-8 encodes them, so a row holding one could not be
answered, sent to a model or shown again). Requests carrying either are refused with a 4xx up front."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")


def problem(text: str) -> str | None:
    """Why ``text`` cannot be stored, or None."""
    if "\x00" in text:
        return "must not contain NUL characters"
    if _SURROGATE.search(text):
        return "must not contain lone surrogates (invalid Unicode)"
    return None


def problems(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Where a decoded JSON ``value`` holds what cannot be stored (NUL, lone surrogates, in strings or object
    keys, at any depth; NaN or infinities), and why: ``(path, reason)`` pairs, the path printable."""
    if isinstance(value, str):
        if (reason := problem(value)) is not None:
            yield path, reason
    elif isinstance(value, float) and not math.isfinite(value):
        yield path, "must be a finite number (JSON has no NaN or Infinity)"
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from problems(item, f"{path}.{index}")
    elif isinstance(value, dict):
        for key, item in value.items():
            text = str(key)
            name = path + "." + text.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
            name = name.replace("\x00", "\\u0000")
            if (reason := problem(text)) is not None:
                yield name, reason
            yield from problems(item, name)
