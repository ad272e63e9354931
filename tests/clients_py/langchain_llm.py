"""LangChain's ``langchain_community.llms.Replicate``: invoke and stream against text models.

It builds no client of its own: it calls the ``replicate`` module's default client, which reads
``REPLICATE_API_TOKEN`` and ``REPLICATE_BASE_URL`` (the class itself also insists on ``REPLICATE_API_TOKEN``).
Run by tests/test_clients_py_langchain.py; argv[1] is a JSON object of version ids. Prints one JSON line.
"""

import json
import sys
from typing import Any

import connections  # records the ports this process connects to, from here on
from langchain_community.llms import Replicate


def main() -> None:
    versions = json.loads(sys.argv[1])
    out: dict[str, Any] = {}
    pinned = Replicate(model=f"admin/streaming:{versions['streaming']}", model_kwargs={"repeat": 2})
    out["invoke_pinned"] = pinned.invoke("pinned words")  # predictions.create(version) + wait, list joined
    by_model = Replicate(model="admin/streaming")  # no version: POST /models/admin/streaming/predictions
    out["invoke_by_model"] = by_model.invoke("by model")
    out["stream"] = list(by_model.stream("one two three four", delay=0.01))  # output_iterator: polls the growing list
    out["stop"] = by_model.invoke("one two three four", stop=[" three"])
    hello = Replicate(model=f"admin/hello-world:{versions['hello']}")
    out["hello"] = hello.invoke("langchain")  # the prompt key: the first input in x-order; a string output

    # Streaming with a stop sequence cancels the prediction once it is seen. The tokens model sends the prompt
    # (its "first" input) then waits for a gate file that never comes: only the cancel ends it.
    stopping = Replicate(
        model="admin/tokens", prompt_key="first", streaming=True, model_kwargs={"count": 5, "gate": sys.argv[2]}
    )
    out["stream_stop"] = stopping.invoke("alpha beta STOP gamma", stop=["STOP"])
    out["ports"] = connections.ports()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
