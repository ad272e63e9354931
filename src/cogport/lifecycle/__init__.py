"""The prediction lifecycle: the one module that changes a prediction's status (:mod:`.status`)."""
