"""Verify and health: the live database against what the schemas declare, and how it is doing.

Everything is read in bulk (a handful of catalog queries whatever the number of tables), and no
check pretends: one that cannot be made here says `unknown` and why.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

from dbinit_pipeline.configuration import HealthSettings
from dbinit_pipeline.errors import describe
from dbinit_pipeline.resources.database_server import DatabaseServer
from dbinit_pipeline.schema import ledger
from dbinit_pipeline.schema.expected import OPTIONAL_TABLES, expected_schema
from dbinit_pipeline.schema.ledger import LedgerEntry
from dbinit_pipeline.schema.package import Package
from dbinit_pipeline.schema.shape import describe_live, diff

# A check that cannot be made here is `unknown`: shown with its reason, but it neither passes nor
# degrades the overall status (a remote server's disk is not a problem, only not our knowledge).
_RANK = {"healthy": 0, "unknown": 0, "degraded": 1, "unhealthy": 2}


@dataclass(frozen=True)
class VerifyOutcome:
    schema: dict[str, Any]
    health: dict[str, Any]
    status: str


def worst(statuses: Sequence[str]) -> str:
    """The overall status: unhealthy beats degraded beats healthy."""
    level = max((_RANK.get(s, 0) for s in statuses), default=0)
    return {0: "healthy", 1: "degraded", 2: "unhealthy"}[level]


def latency_status(ms: float, thresholds: HealthSettings) -> str:
    if ms >= thresholds.latency_unhealthy_ms:
        return "unhealthy"
    if ms >= thresholds.latency_degraded_ms:
        return "degraded"
    return "healthy"


def applied_heads(packages: Sequence[Package], applied: dict[tuple[str, str], LedgerEntry]) -> dict[str, str]:
    """Per package, its last applied revision in chain order."""
    heads: dict[str, str] = {}
    for pkg in packages:
        for m in pkg.migrations:
            if m.key in applied:
                heads[pkg.name] = m.revision
    return heads


def _history_problems(packages: Sequence[Package], applied: dict[tuple[str, str], LedgerEntry]) -> list[str]:
    problems: list[str] = []
    by_key = {m.key: m for pkg in packages for m in pkg.migrations}
    names = {pkg.name for pkg in packages}
    for key, entry in applied.items():
        if key[0] not in names:
            continue
        migration = by_key.get(key)
        if migration is None:
            problems.append(
                f"checksum: {key[0]} revision {key[1]} ({entry.filename}) is applied but no longer on disk"
            )
        elif migration.checksum != entry.checksum:
            problems.append(f"checksum: {migration.path} changed since it was applied (revision {key[1]})")
    return problems


def record_snapshots(
    conn: Connection,
    packages: Sequence[Package],
    heads: dict[str, str],
    snapshots: dict[str, tuple[str, dict[str, str]]],
    live: dict[str, Any],
    run_id: str,
) -> list[str]:
    """Snapshot what each package's migrations produced where the snapshot is missing or stale."""
    taken: list[str] = []
    for pkg in packages:
        head = heads.get(pkg.name)
        if head is None or pkg.models or (pkg.name in snapshots and snapshots[pkg.name][0] == head):
            continue
        shapes = {t: json.dumps(live[t].as_json()) for t in pkg.tables if t in live}
        ledger.write_snapshot(conn, pkg.name, head, shapes, run_id)
        snapshots[pkg.name] = (head, shapes)
        taken.append(pkg.name)
    return taken


def verify_database(
    server: DatabaseServer,
    database: str,
    packages: Sequence[Package],
    thresholds: HealthSettings,
    *,
    run_id: str = "",
    snapshot: bool = False,
    extra_checks: dict[str, dict[str, Any]] | None = None,
) -> VerifyOutcome:
    """Compare the live schema with the expected one and run the health checks.

    With `snapshot`, packages whose migrations were just applied get their snapshot recorded
    first (the verify stage does this under the initialization lock); `dbinit health` only reads.
    """
    provider = server.provider
    started = time.perf_counter()
    with server.connect(database) as conn:
        conn.execute(text("SELECT 1"))
        latency = (time.perf_counter() - started) * 1000
        live = describe_live(conn)
        has_ledger = ledger.LEDGER_TABLE in live
        applied = ledger.read(conn) if has_ledger else {}
        version_heads = ledger.read_heads(conn) if ledger.VERSION_TABLE in live else set()
        snapshots = ledger.read_snapshots(conn) if ledger.SNAPSHOT_TABLE in live else {}
        heads = applied_heads(packages, applied)
        conn.rollback()
        snapshot_note = None
        if snapshot and has_ledger:
            try:
                with conn.begin():
                    ledger.ensure(conn)
                    record_snapshots(conn, packages, heads, snapshots, live, run_id or "verify")
            except Exception as exc:  # a read-only role can still be verified
                snapshot_note = f"snapshots not recorded: {describe(exc)}"
        expected = expected_schema(packages, conn.dialect, snapshots, heads)
        permissions = provider.permission_check(conn)
        if conn.in_transaction():
            conn.rollback()
        connections = _safe(provider.connection_check, conn)
        disk = _safe(provider.disk_check, conn)
    drift: list[str] = []
    for table, owner in sorted(expected.owners.items()):
        shape = expected.shapes.get(table)
        if shape is not None:
            drift.extend(diff(shape, live.get(table)))
        elif table not in live:
            drift.append(f"table {table}: missing (package {owner})")
    for source, referred in sorted(expected.foreign_keys):
        declared = source in live and source not in expected.shapes
        if declared and not any(ref == referred for _, ref, _ in live[source].foreign_keys):
            drift.append(f"foreign key {source} -> {referred}: missing")
    history = _history_problems(packages, applied)
    pending = sum(1 for pkg in packages for m in pkg.migrations if m.key not in applied)
    expected_versions = set(heads.values())
    missing_heads = sorted(expected_versions - version_heads)
    unknown_heads = sorted(version_heads - expected_versions)
    migrations_status = "healthy"
    if not has_ledger or history or missing_heads or unknown_heads:
        migrations_status = "unhealthy"
    elif pending:
        migrations_status = "degraded"
    schema = {
        "status": "drift" if drift else "ok",
        "tables_expected": len(expected.owners) + sum(1 for t in OPTIONAL_TABLES if t in live),
        "tables_found": len(live),
        "compared_with": expected.sources,
        "drift": drift,
    }
    if snapshot_note:
        schema["note"] = snapshot_note
    checks: dict[str, dict[str, Any]] = {
        "connectivity": {"status": latency_status(latency, thresholds), "latency_ms": round(latency, 2)},
        "migrations": {
            "status": migrations_status,
            "ledger_table": has_ledger,
            "applied": len(applied),
            "pending": pending,
            "version_table_heads": len(version_heads),
            "missing_heads": missing_heads,
            "unknown_heads": unknown_heads,
            "history": history,
        },
        "schema": {"status": "unhealthy" if drift else "healthy", "drift": len(drift)},
        "permissions": permissions,
        "disk": disk,
        "connections": connections,
        **(extra_checks or {}),
    }
    status = worst([c["status"] for c in checks.values()])
    unknown = sorted(name for name, c in checks.items() if c["status"] == "unknown")
    return VerifyOutcome(
        schema=schema, health={**checks, "status": status, "unknown": unknown}, status=status
    )


def _safe(check: Any, conn: Connection) -> dict[str, Any]:
    try:
        result: dict[str, Any] = check(conn)
        return result
    except Exception as exc:
        if conn.in_transaction():
            conn.rollback()
        return {"status": "unknown", "reason": describe(exc)}
