"""replicate 1.1's resource API: run (FileOutput), predictions.create + wait with a file input, stream,
trainings with an uploaded data file then the trained version by use(), a deployment's predictions.

Run by tests/test_clients_py_replicate.py in a venv of its own, with ``REPLICATE_BASE_URL`` and
``REPLICATE_API_TOKEN`` set; argv[1] is a JSON object of the pushed version ids, argv[2] a work dir.
Prints one JSON line.
"""

import json
import sys
import time
from pathlib import Path
from typing import Any

import connections  # records the ports this process connects to, from here on
import httpx
import replicate


def predictions(versions: dict[str, str], tmp: Path, out: dict[str, Any]) -> None:
    # use_file_output wraps only https: and data: URLs in FileOutput; over plain http the URLs stay strings.
    listed = replicate.run("admin/file-list", input={"count": 2})
    out["run_files"] = [{"type": type(f).__name__, "url": f, "text": httpx.get(f).text} for f in listed]

    local = tmp / "input.bin"
    local.write_bytes(bytes(range(256)) * 8)
    with local.open("rb") as handle:  # uploaded through the Files API; the prediction is queued, not waited on
        queued = replicate.predictions.create(version=versions["file_digest"], input={"file": handle})
    out["queued_status"] = queued.status
    out["queued_urls"] = queued.urls
    queued.wait()
    out["queued"] = {"status": queued.status, "output": queued.output, "error": queued.error, "input": queued.input}

    events = list(replicate.stream("admin/streaming", input={"prompt": "streamed through a proxy"}))
    out["stream"] = {"events": [e.event.value for e in events], "text": "".join(str(e) for e in events)}


def training(versions: dict[str, str], tmp: Path, out: dict[str, Any]) -> None:
    data = tmp / "topics.csv"
    data.write_text(sys.argv[3])
    with data.open("rb") as handle:
        started = replicate.trainings.create(
            model="admin/trainable", version=versions["trainable"], input={"data": handle}, destination="admin/topics"
        )
    deadline = time.monotonic() + 150
    while started.status not in ("succeeded", "failed", "canceled"):
        assert time.monotonic() < deadline, f"training {started.id} still {started.status}"
        time.sleep(0.05)
        started.reload()
    out["training"] = {"status": started.status, "error": started.error, "output": started.output}
    if started.status == "succeeded":
        trained = replicate.use(started.output["version"])
        out["trained_answer"] = trained(text="knead the dough and bake the bread")


def deployment(versions: dict[str, str], out: dict[str, Any]) -> None:
    replicate.deployments.create(
        name="admin/greeter", model="admin/hello-world", version=versions["hello"], hardware="cpu",
        min_instances=0, max_instances=1,
    )  # fmt: skip
    queued = replicate.deployments.get("admin/greeter").predictions.create(input={"text": "deployed"})
    out["deployment_urls"] = queued.urls
    queued.wait()
    out["deployment"] = {"status": queued.status, "output": queued.output}


def listing(out: dict[str, Any]) -> None:
    names = [m.name for page in replicate.paginate(replicate.models.list) for m in page]  # follows absolute next
    out["models"] = names
    out["search"] = [m.name for m in replicate.models.search("public-07").results]  # QUERY /v1/models


def main() -> None:
    versions = json.loads(sys.argv[1])
    tmp = Path(sys.argv[2])
    out: dict[str, Any] = {}
    predictions(versions, tmp, out)
    training(versions, tmp, out)
    deployment(versions, out)
    listing(out)
    out["ports"] = connections.ports()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
