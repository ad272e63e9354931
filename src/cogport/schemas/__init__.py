"""Wire schemas: what clients send (``actions``) and what cogport answers (``responses``)."""
