"""The process's SQLAlchemy engines, one per full URL and mode, shared by every caller.

An engine is made once per URL (password included, so a rotated password gets a new one) and
mode, and reused for the life of the process: the dialect's first-connect queries run once.
Engines here use NullPool, so an engine shares nothing but its compiled configuration and keeps
no connection open between uses (a DROP DATABASE never waits for one of ours). At most
MAX_ENGINES are kept; the least recently used is disposed of.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from sqlalchemy import Engine

MAX_ENGINES = 16
_ENGINES: OrderedDict[tuple[str, bool], Engine] = OrderedDict()
_LOCK = threading.Lock()


def shared_engine(url: str, autocommit: bool, make: Callable[[], Engine]) -> Engine:
    """The engine of (`url`, `autocommit`), made by `make` the first time."""
    key = (url, autocommit)
    with _LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            engine = _ENGINES[key] = make()
            while len(_ENGINES) > MAX_ENGINES:
                _ENGINES.popitem(last=False)[1].dispose()
        else:
            _ENGINES.move_to_end(key)
    return engine
