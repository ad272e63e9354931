"""Text that cannot be stored or sent on: NUL characters (PostgreSQL text and JSONB refuse them) and lone
surrogates (``"\\ud800"`` in JSON: valid escapes, but no UTF-8 encodes them, so a row holding one could not be
answered, sent to a model or shown again). Requests carrying either are refused with a 4xx up front."""

from __future__ import annotations

import re

_SURROGATE = re.compile("[\ud800-\udfff]")


def problem(text: str) -> str | None:
    """Why ``text`` cannot be stored, or None."""
    if "\x00" in text:
        return "must not contain NUL characters"
    if _SURROGATE.search(text):
        return "must not contain lone surrogates (invalid Unicode)"
    return None
