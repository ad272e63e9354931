"""LlamaIndex's ``llama_index.llms.replicate.Replicate``: complete, stream_complete and chat.

Every call goes through ``replicate.stream`` (the default client: ``REPLICATE_API_TOKEN``,
``REPLICATE_BASE_URL``), so the prediction's ``urls.stream`` must lead back through the proxy. It always adds
``temperature`` and ``max_length`` to the input, whether the model has them or not.
Run by tests/test_clients_py_llamaindex.py; argv[1] is a JSON object of version ids. Prints one JSON line.
"""

import json
import sys
from typing import Any

import connections  # records the ports this process connects to, from here on
from llama_index.core.llms import ChatMessage
from llama_index.llms.replicate import Replicate


def main() -> None:
    versions = json.loads(sys.argv[1])
    out: dict[str, Any] = {}
    llm = Replicate(model=f"admin/streaming:{versions['streaming']}", additional_kwargs={"repeat": 2})
    out["complete"] = llm.complete("twice over").text
    by_model = Replicate(model="admin/streaming", temperature=0.2)
    out["deltas"] = [r.delta for r in by_model.stream_complete("one two three")]
    answer = by_model.chat([ChatMessage(role="user", content="chat words")])
    out["chat"] = {"role": str(answer.message.role.value), "content": answer.message.content}
    out["ports"] = connections.ports()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
