"""Keep the long-lived heap out of the cyclic garbage collector's way.

A run holds a large heap of objects that live as long as the process: Dagster, SQLAlchemy and
Alembic as imported, the definitions, and the package registry (thousands of packages and
revisions). Python's collector scans the older generations of all of it again and again, and
the churn of imports and of an apply (SQLAlchemy tables built and dropped per migration)
triggers a collection every 700 allocations (BENCHMARKS.md has what that costs a run).

- `gc.freeze()` moves what is alive now into a permanent generation that collections skip;
  everything created afterwards is collected as before.
- The youngest generation is collected every 10,000 allocations instead of 700 (a few MB more
  of short-lived objects between collections), in a dbinit process only: the `dbinit` command,
  and the run process once its first stage starts.

Frozen objects are still freed by reference counting; only cyclic garbage that happens to be
alive when `settle()` runs (at most a young generation's worth) is kept until the process ends.
A process that runs many jobs in turn (a test session) keeps that much per run.
"""

from __future__ import annotations

import gc

from dbinit_pipeline.fastpath import enabled

YOUNG_THRESHOLD = 10_000


def collect_less() -> None:
    """Collect the youngest generation every YOUNG_THRESHOLD allocations (never more often);
    nothing with the fast path `collector` off."""
    if not enabled("collector"):
        return
    young, middle, old = gc.get_threshold()
    if 0 < young < YOUNG_THRESHOLD:
        gc.set_threshold(YOUNG_THRESHOLD, middle, old)


def settle() -> None:
    """Exempt every object alive now from future collections (they are kept anyway); nothing with
    the fast path `collector` off."""
    if not enabled("collector"):
        return
    collect_less()
    gc.freeze()
