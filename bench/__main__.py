"""``python -m bench NAME [ARGS]``: run one benchmark; ``python -m bench`` lists them.

A benchmark is a module of this package with ``main(argv: list[str]) -> int``; add it to :data:`BENCHMARKS`.
"""

from __future__ import annotations

import importlib
import sys

BENCHMARKS: dict[str, tuple[str, str]] = {
    "push": ("bench.push", "cogport push → version ready, for the hello-world example"),
    "predictions": ("bench.predictions", "noop + realistic models: sync vs coglet direct, creates/s, a 10,000 burst"),
    "autoscale": ("bench.autoscale", "a deployment from zero (vs coglet's own boot), under a queue, and back to zero"),
    "hotpath": ("bench.hotpath", "one sync prediction's milliseconds, step by step (instrumented, in-process)"),
    "file_outputs": ("bench.file_outputs", "an output file's cost: uploaded by coglet (Path) or inline (list[Path])"),
    "cluster": ("bench.cluster", "a Ray cluster here: 50 ms model on one node vs two, Ray vs local latency, join time"),
    "crowds": ("bench.crowds", "GET and sync create p99 with thousands of quiet SSE streams open, vs idle"),
    "webhooks": ("bench.webhooks", "terminal webhooks: deliveries/s and lag, burst, paced and beside a hung receiver"),
    "start": ("bench.start", "cogport serve to its first answered request (fresh and again), import cogport.app"),
    "peers": ("bench.peers", "the no-op function: cogport vs coglet direct, BentoML, Ray Serve, bare FastAPI"),
    "cpu": ("bench.cpu", "server CPU per sync prediction, the working tree vs git refs, interleaved rounds"),
    "stream": ("bench.stream", "streamed token latency through cogport's SSE vs coglet's own, same instance"),
    "sse_reader": ("bench.sse_reader", "reading coglet's SSE: httpx-sse vs the hand-written reader, CPU per event"),
    "coglet_client": ("bench.coglet_client", "the plain POST to coglet: runtime/http1 vs httpcore, httpx; client CPU"),
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print("usage: python -m bench NAME [ARGS]\n\nbenchmarks:")
        for name, (_, about) in sorted(BENCHMARKS.items()):
            print(f"  {name:12} {about}")
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in BENCHMARKS:
        print(f"unknown benchmark {name!r}; choose one of: {', '.join(sorted(BENCHMARKS))}", file=sys.stderr)
        return 2
    module = importlib.import_module(BENCHMARKS[name][0])
    result: int = module.main(rest)
    return result


if __name__ == "__main__":
    sys.exit(main())
