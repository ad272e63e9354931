"""One router per Replicate resource, plus ``admin`` for cogport's own extensions."""
