"""The ``cogport`` command: ``serve`` runs the server; every other command is an HTTP client."""
