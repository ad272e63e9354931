"""The run's vocabulary, at the bottom of the layers: what runtime, backends, build, lifecycle and ops share.

* :mod:`.status`: a prediction's :class:`~.status.Status` (and which are terminal);
* :mod:`.kinds`: whether a run is a prediction or a training (:class:`~.kinds.RunKind`);
* :mod:`.jobs`: the spec of a version's instances, a job, the events a backend reports, capacity;
* :mod:`.outcome`: how a run ended (:class:`~.outcome.Outcome`);
* :mod:`.pools`: whose instances these are (on demand, or a deployment's ``deployment:<owner>/<name>``);
* :mod:`.backoff`: the doubling delays every retry loop waits by.

Nothing here imports from cogport except :mod:`cogport.errors` and :mod:`cogport.identifiers`
(``tests/test_layers.py`` checks).
"""
