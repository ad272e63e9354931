"""Ray clusters on this machine for tests: Ray's token authentication around them, their supervisors stopped.

Clusters run with Ray's token authentication, as docs/cluster.md asks: ``RAY_AUTH_MODE=token`` and
``RAY_AUTH_TOKEN_PATH`` (a token file of the caller's) in the environment of the head, the nodes (started
from here, they inherit it) and this process (the driver).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray  # the cluster extra is part of the test environment: missing, this fails (never skips)
from ray._private.authentication_test_utils import reset_auth_token_state


@contextlib.contextmanager
def token_auth(directory: Path) -> Iterator[Path]:
    """Ray's token authentication for what starts inside: yields the token file (in ``directory``). On the
    way out this process leaves the cluster (``ray.shutdown``) and the environment is as it was."""
    token = directory / "token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = pytest.MonkeyPatch()
    env.delenv("RAY_AUTH_TOKEN", raising=False)
    env.setenv("RAY_AUTH_MODE", "token")
    env.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    reset_auth_token_state()  # Ray read its config (the mode) at import: read it again
    try:
        yield token
    finally:
        ray.shutdown()
        env.undo()
        reset_auth_token_state()


def stop_supervisors(namespace: str) -> None:
    """Stop and kill the node supervisors of ``namespace`` (their coglet instances go with them)."""
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["namespace"] == namespace:
            handle = ray.get_actor(actor["name"], namespace=namespace)
            with contextlib.suppress(ray.exceptions.RayError):  # its node may be gone
                ray.get(handle.shutdown.remote(), timeout=30)
            ray.kill(handle)
