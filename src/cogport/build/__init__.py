"""Building a pushed model directory into a version, without Docker.

``packing`` (what a push contains, its content id) → ``cogyaml`` (the typed config) → ``interpreters``
(a host Python) → ``environment`` (a shared uv venv) → ``schema`` (the OpenAPI document, made inside the
venv by ``_schema_script``) → ``builder`` (the orchestration, one :class:`~cogport.build.builder.BuildResult`).
The queue of builds lives in the database (:mod:`cogport.ops.builds`); :mod:`cogport.services.builder` runs it.

For other nodes: ``bundles`` (a built version's source and environment facts, stored at push time) →
``prepare`` (a node turns a bundle back into a source directory and a venv of its own).
"""
