"""The project configuration as a Dagster resource, bound to one environment."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from dagster import ConfigurableResource

from dbinit_pipeline.configuration import LoadedConfig, load_config


@lru_cache(maxsize=16)
def _load(path: str, mtime_ns: int) -> LoadedConfig:
    return load_config(Path(path))


def load_cached(path: str) -> LoadedConfig:
    """Load the configuration once per process and file version."""
    try:
        mtime = Path(path).stat().st_mtime_ns
    except OSError:
        mtime = -1
    return _load(path, mtime)


class ProjectResource(ConfigurableResource):  # type: ignore[type-arg]
    """Where the configuration is and which environment this job initializes."""

    config_path: str
    environment: str

    def load(self) -> LoadedConfig:
        return load_cached(self.config_path)
