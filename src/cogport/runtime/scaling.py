"""How many instances a version (or a deployment) should have: one pure function, and its limits.

``target(queued, running, slots, limits)`` is the number of instances that the work needs:
``ceil((queued + running) / slots)``, held between ``limits.minimum`` and ``limits.maximum``. It is
evaluated whenever anything changes (a job is submitted, binds to a slot, finishes; an instance becomes
READY or stops), so a queue that builds adds instances at once, several at a time when several are
needed, never above the maximum. Scaling down is by idleness: an instance with no work for
``idle_timeout`` seconds stops unless that would leave fewer than ``minimum`` (see ``runtime/pool.py``);
``minimum`` instances are started without work and replaced when they crash.

Peers, for scale: Ray Serve adds replicas after ``upscale_delay_s`` (30 s) of ``target_ongoing_requests``
(2) exceeded; Knative's panic window is 6 s; RunPod adds a worker when a request waits 4 s. Here an
instance is added as soon as the work exceeds the slots: cold starts are the only delay, and queued work
is never refused while instances start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    minimum: int = 0
    """Instances kept up without work (a deployment's ``min_instances``)."""
    maximum: int = 1
    """Instances at most (a deployment's ``max_instances``; on-demand: ``max_instances_per_version``)."""


def target(queued: int, running: int, slots: int, limits: Limits) -> int:
    """The instances ``queued`` waiting and ``running`` jobs need, at ``slots`` per instance, within ``limits``."""
    needed = math.ceil(max(0, queued + running) / max(1, slots))
    return max(limits.minimum, min(limits.maximum, needed))
