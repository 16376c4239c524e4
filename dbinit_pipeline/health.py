"""Verify and health: the live database against what the schemas declare, and how it is doing."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text

from dbinit_pipeline.configuration import HealthSettings
from dbinit_pipeline.resources.database_server import DatabaseServer
from dbinit_pipeline.schema import ledger
from dbinit_pipeline.schema.expected import expected_schema
from dbinit_pipeline.schema.package import Package

_RANK = {"healthy": 0, "degraded": 1, "unknown": 1, "unhealthy": 2}


@dataclass(frozen=True)
class VerifyOutcome:
    schema: dict[str, Any]
    health: dict[str, Any]
    status: str


def worst(statuses: Sequence[str]) -> str:
    """The overall status: unhealthy beats degraded beats healthy; unknown counts as degraded."""
    level = max((_RANK.get(s, 0) for s in statuses), default=0)
    return {0: "healthy", 1: "degraded", 2: "unhealthy"}[level]


def latency_status(ms: float, thresholds: HealthSettings) -> str:
    if ms >= thresholds.latency_unhealthy_ms:
        return "unhealthy"
    if ms >= thresholds.latency_degraded_ms:
        return "degraded"
    return "healthy"


def verify_database(
    server: DatabaseServer, database: str, packages: Sequence[Package], thresholds: HealthSettings
) -> VerifyOutcome:
    """Compare the live schema with the expected one and run the health checks, in bulk queries."""
    expected = expected_schema(packages)
    started = time.perf_counter()
    with server.connect(database) as conn:
        conn.execute(text("SELECT 1"))
        latency = (time.perf_counter() - started) * 1000
        catalog = server.provider.catalog(conn)
        has_ledger = ledger.LEDGER_TABLE in catalog.tables
        applied = conn.execute(select(func.count()).select_from(ledger.ledger)).scalar() if has_ledger else 0
        heads = ledger.read_heads(conn) if ledger.VERSION_TABLE in catalog.tables else set()
        conn.rollback()
    missing_tables = sorted(t for t in expected.tables if t not in catalog.tables)
    missing_fks = sorted(
        f"{t} -> {r}"
        for t, r in expected.foreign_keys
        if (t, r) not in catalog.foreign_keys and t not in missing_tables
    )
    drift = [f"missing table {t} (package {expected.tables[t]})" for t in missing_tables] + [
        f"missing foreign key {fk}" for fk in missing_fks
    ]
    expected_heads = {p.head for p in packages if p.head}
    schema = {
        "status": "drift" if drift else "ok",
        "tables_expected": len(expected.tables),
        "tables_found": len(catalog.tables),
        "foreign_keys_expected": len(expected.foreign_keys),
        "drift": drift,
    }
    connectivity = {"status": latency_status(latency, thresholds), "latency_ms": round(latency, 2)}
    migrations = {
        "status": "healthy" if has_ledger and heads >= expected_heads else "unhealthy",
        "ledger_table": has_ledger,
        "applied": int(applied or 0),
        "version_table_heads": len(heads),
        "missing_heads": sorted(expected_heads - heads),
    }
    schema_check = {"status": "unhealthy" if drift else "healthy", "drift": len(drift)}
    checks: dict[str, dict[str, Any]] = {
        "connectivity": connectivity,
        "migrations": migrations,
        "schema": schema_check,
    }
    status = worst([c["status"] for c in checks.values()])
    return VerifyOutcome(schema=schema, health={**checks, "status": status}, status=status)
