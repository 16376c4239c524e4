"""The server of a fleet step, found once for all its tenants.

Every tenant of an environment lives on the environment's one server: what the provision stage
finds (a local server answering, an embedded one started, a cloud instance described) does not
depend on the tenant. A step provisions it for its first tenant and hands the result to the
others, instead of one connection, or one cloud API round trip, per tenant. A failure is not kept:
the next tenant tries again and reports its own failure.
"""

from __future__ import annotations

import threading

from dbinit_pipeline.configuration import LoadedConfig
from dbinit_pipeline.infrastructure.provisioner import ServerFound, provision
from dbinit_pipeline.pipeline.results import InitPlan


class ProvisionOnce:
    """`provision` for the tenants of one step (threads included): the first success is reused
    for every plan of the same environment, hosting and mode."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._found: dict[tuple[str, str, bool], ServerFound] = {}

    def __call__(self, config: LoadedConfig, plan: InitPlan) -> ServerFound:
        key = (plan.environment, plan.hosting, plan.dry_run)
        with self._lock:
            found = self._found.get(key)
            if found is None:
                found = self._found[key] = provision(config, plan)
        return found
