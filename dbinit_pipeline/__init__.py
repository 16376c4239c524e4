"""dbinit_pipeline: bring a database for one environment from nothing to verified, with Dagster."""

from __future__ import annotations

from dbinit_pipeline.definitions import defs

__all__ = ["defs"]
