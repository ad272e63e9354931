"""LiteLLM's Replicate provider, pointed at cogport in each documented way: ``api_base=``, ``litellm.api_base``
and ``REPLICATE_API_BASE``. LiteLLM resolves that base (litellm/main.py ``_complete_replicate``) and then
``ReplicateConfig.get_complete_url`` replaces it with ``https://api.replicate.com/v1/models/<model>/predictions``
(or ``/deployments/...``), so every call leaves for api.replicate.com. The test gives this process an
``HTTPS_PROXY`` that records where connections go and refuses them all, so nothing reaches Replicate.

argv[1]: the base URL to try; argv[2]: a version id. Prints one JSON line: per attempt, the error and the URL
of the request that failed (from httpx's exception in the chain).
"""

import json
import os
import sys
from collections.abc import Iterator
from typing import Any

import connections
import httpx
import litellm

MESSAGES = [{"role": "user", "content": "where do you go?"}]


def chain(error: BaseException | None) -> Iterator[BaseException]:
    while error is not None:
        yield error
        error = error.__cause__ or error.__context__


def attempt(**kwargs: Any) -> dict[str, Any]:
    try:
        response = litellm.completion(messages=MESSAGES, **kwargs)
    except Exception as error:  # what it raises is what is reported
        sent = [str(e.request.url) for e in chain(error) if isinstance(e, httpx.TransportError)]
        return {"error": type(error).__name__, "urls": sent}
    return {"answer": str(response)}


def main() -> None:
    base, version = sys.argv[1], sys.argv[2]
    out: dict[str, Any] = {}
    out["argument"] = attempt(model="replicate/admin/streaming", api_base=base)
    out["argument_stream"] = attempt(model="replicate/admin/streaming", api_base=base, stream=True)
    out["pinned"] = attempt(model=f"replicate/admin/streaming:{version}", api_base=base)
    os.environ["REPLICATE_API_BASE"] = base
    out["environment"] = attempt(model="replicate/admin/streaming")
    litellm.api_base = base
    out["module"] = attempt(model="replicate/admin/streaming")
    out["ports"] = connections.ports()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
