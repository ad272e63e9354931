"""The local runtime: coglet processes supervised on this machine (issue 4).

* :mod:`~cogport.runtime.process` launches one ``python -m cog.server.http`` in its own process group.
* :mod:`~cogport.runtime.instance` drives it over HTTP: health, SSE predictions, cancel, stop.
* :mod:`~cogport.runtime.pool` keeps instances per version: slots, starts, restarts, idle stops, capacity.

:class:`cogport.backends.local.LocalBackend` puts the pool behind the ``Backend`` Protocol.
Internal code imports from the concrete modules, not from this package.
"""

from cogport.runtime.instance import Instance, InstanceOptions
from cogport.runtime.pool import InstanceInfo, Pool
from cogport.runtime.state import InstanceState

__all__ = ["Instance", "InstanceInfo", "InstanceOptions", "InstanceState", "Pool"]
