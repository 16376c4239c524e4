"""Discover the registry of a configuration once per run."""

from __future__ import annotations

import threading
from pathlib import Path

from dbinit_pipeline.configuration import LoadedConfig
from dbinit_pipeline.migrations.registry import PackageRegistry

_cache: dict[tuple[str, str], PackageRegistry] = {}
_lock = threading.Lock()


def facts_cache_path(config: LoadedConfig) -> Path:
    """Where the facts of the project's package files are kept between runs (see `FactsCache`)."""
    return config.state_dir / "cache" / "package-facts.json"


def registry_for(config: LoadedConfig, run_id: str = "") -> PackageRegistry:
    """The validated registry for `config`; within one run the files are read only once."""
    key = (str(config.path), run_id)
    with _lock:
        cached = _cache.get(key) if run_id else None
    if cached is not None:
        return cached
    registry = PackageRegistry.discover(
        [config.resolve(p) for p in config.model.packages.paths],
        entry_points=config.model.packages.entry_points,
        core=config.model.core.enabled,
        core_schema=config.model.core.schema_,
        facts_cache=facts_cache_path(config),
    )
    if run_id:
        with _lock:
            if len(_cache) > 8:
                _cache.clear()
            _cache[key] = registry
    return registry
