"""Sensors: one module per sensor."""

from __future__ import annotations

from dbinit_pipeline.orchestration.sensors.run_failure import build_run_failure_sensor

__all__ = ["build_run_failure_sensor"]
