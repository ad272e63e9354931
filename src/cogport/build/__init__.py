"""Building a pushed model directory into a version, without Docker.

``packing`` (what a push contains, its content id) → ``cogyaml`` (the typed config) → ``interpreters``
(a host Python) → ``environment`` (a shared uv venv) → ``schema`` (the OpenAPI document, made inside the
venv by ``_schema_script``) → ``builder`` (the orchestration, one :class:`~cogport.build.builder.BuildResult`).
The queue of builds lives in the database (:mod:`cogport.ops.builds`); :mod:`cogport.services.builder` runs it.
"""
