"""Verify and health: the live database against what the schemas declare, and how it is doing.

Everything is read in bulk (a handful of catalog queries whatever the number of tables), and no
check pretends: one that cannot be made here says `unknown` and why.

Reflecting a table's shape is the costly part of verify (SQLAlchemy's reflection of 2,000 tables:
about a second of Python). Where the provider offers table digests (`Provider.table_digests`:
PostgreSQL), one catalog query gives each table a digest of every catalog row its shape is read
from, and a snapshot records the digest of the catalog it was taken from; a table whose digest
is unchanged is still exactly as snapshotted, so reflecting it again cannot change the answer,
and only the other tables are reflected.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Connection, text

from dbinit_pipeline.configuration import HealthSettings
from dbinit_pipeline.database.catalog import TableShape, diff
from dbinit_pipeline.database.server import DatabaseServer
from dbinit_pipeline.errors import describe
from dbinit_pipeline.migrations import adoptions, ledger
from dbinit_pipeline.migrations.core_placement import describe_placed
from dbinit_pipeline.migrations.ledger import LedgerEntry
from dbinit_pipeline.migrations.package import Package
from dbinit_pipeline.verify.expected import OPTIONAL_TABLES, ExpectedSchema, expected_schema
from dbinit_pipeline.verify.scope import PRESENT_ONLY, found_by_name_only

# A check that cannot be made here is `unknown`: shown with its reason, but it neither passes nor
# degrades the overall status (a remote server's disk is not a problem, only not our knowledge).
_RANK = {"healthy": 0, "unknown": 0, "degraded": 1, "unhealthy": 2}


@dataclass(frozen=True)
class VerifyOutcome:
    schema: dict[str, Any]
    health: dict[str, Any]
    status: HealthStatus


# A check's or a database's state, worst last; `skipped` where nothing was checked (a dry run).
HealthStatus = Literal["healthy", "degraded", "unhealthy", "skipped"]


def worst(statuses: Sequence[str]) -> HealthStatus:
    """The overall status: unhealthy beats degraded beats healthy."""
    level = max((_RANK.get(s, 0) for s in statuses), default=0)
    levels: dict[int, HealthStatus] = {0: "healthy", 1: "degraded", 2: "unhealthy"}
    return levels[level]


def latency_status(ms: float, thresholds: HealthSettings) -> HealthStatus:
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


# The key under which a snapshot's shape JSON keeps the digest of the catalog it was taken from.
CATALOG_DIGEST = "catalog_md5"
# Stands in `live` for a table known equal to its snapshot (never compared: see verify_database).
_UNCHANGED = TableShape("", (), (), frozenset(), frozenset(), frozenset())
_RECORDED_DIGEST = re.compile(r'"catalog_md5":\s*"([0-9a-f]{32})"')


def unchanged_since_snapshot(
    packages: Sequence[Package],
    snapshots: dict[str, tuple[str, dict[str, str]]],
    heads: dict[str, str],
    digests: dict[str, str],
) -> set[str]:
    """Tables whose current snapshot was taken from the catalog exactly as it is now."""
    unchanged: set[str] = set()
    for pkg in packages:
        snap = snapshots.get(pkg.name)
        if pkg.models or snap is None or heads.get(pkg.name) != snap[0]:
            continue
        for table, raw in snap[1].items():
            recorded = _RECORDED_DIGEST.search(raw) if table in digests else None
            if recorded is not None and recorded.group(1) == digests[table]:
                unchanged.add(table)
    return unchanged


def needs_snapshot(
    pkg: Package, heads: dict[str, str], snapshots: dict[str, tuple[str, dict[str, str]]]
) -> bool:
    """A package without models whose applied head has no snapshot yet."""
    head = heads.get(pkg.name)
    return (
        head is not None and not pkg.models and not (pkg.name in snapshots and snapshots[pkg.name][0] == head)
    )


def without_digest(
    packages: Sequence[Package],
    heads: dict[str, str],
    snapshots: dict[str, tuple[str, dict[str, str]]],
    live: dict[str, TableShape],
) -> set[str]:
    """Packages whose current snapshot predates digests and still matches the live tables exactly:
    recording it again, digests added, changes nothing but lets the next verify skip them."""
    found: set[str] = set()
    for pkg in packages:
        snap = snapshots.get(pkg.name)
        if pkg.models or snap is None or heads.get(pkg.name) != snap[0]:
            continue
        shapes = {t: raw for t, raw in snap[1].items() if t}
        if not shapes or all(CATALOG_DIGEST in raw for raw in shapes.values()):
            continue
        if all(
            t in live and TableShape.from_json(t, json.loads(raw)) == live[t] for t, raw in shapes.items()
        ):
            found.add(pkg.name)
    return found


def record_snapshots(
    conn: Connection,
    packages: Sequence[Package],
    heads: dict[str, str],
    snapshots: dict[str, tuple[str, dict[str, str]]],
    live: dict[str, Any],
    run_id: str,
    digests: dict[str, str] | None = None,
    refresh: set[str] | frozenset[str] = frozenset(),
) -> list[str]:
    """Snapshot what each package's migrations produced where the snapshot is missing or stale.

    `digests`, where given, are recorded with the shapes (see `Provider.table_digests`); all snapshots
    are written in one delete and one multi-row insert."""
    taken: dict[str, tuple[str, dict[str, str]]] = {}
    for pkg in packages:
        head = heads.get(pkg.name)
        if head is None or not (pkg.name in refresh or needs_snapshot(pkg, heads, snapshots)):
            continue
        shapes: dict[str, str] = {}
        for t in pkg.tables:
            if t not in live:
                continue
            data = live[t].as_json()
            if digests is not None and t in digests:
                data[CATALOG_DIGEST] = digests[t]
            shapes[t] = json.dumps(data)
        taken[pkg.name] = (head, shapes)
    if taken:
        _write_snapshots(conn, taken, run_id)
        snapshots.update(taken)
    return list(taken)


def _write_snapshots(conn: Connection, taken: dict[str, tuple[str, dict[str, str]]], run_id: str) -> None:
    """Replace the snapshots of the packages in `taken` (an empty package still records its head)."""
    table = ledger.snapshots
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for package, (head, shapes) in taken.items():
        base = {"package": package, "head": head, "run_id": run_id, "taken_at": now}
        rows.extend({**base, "table_name": t, "shape": shape} for t, shape in shapes.items())
        if not shapes:
            rows.append({**base, "table_name": "", "shape": "{}"})
    conn.execute(table.delete().where(table.c.package.in_(list(taken))))
    conn.execute(table.insert(), rows)


def schema_drift(
    expected: ExpectedSchema,
    live: dict[str, TableShape],
    unchanged: Collection[str],
    accepted: Mapping[str, Collection[str]],
) -> tuple[list[str], list[str]]:
    """(drift, accepted drift): every difference between what the packages declare and the live
    tables, line by line; a line an adoption accepted with --accept-drift is shown, not counted.
    A table in `unchanged` is, by its digest, exactly its snapshot: nothing to compare."""
    drift: list[str] = []
    accepted_lines: list[str] = []
    for table, owner in sorted(expected.owners.items()):
        if table in unchanged:
            continue
        shape = expected.shapes.get(table)
        if shape is not None:
            for line in diff(shape, live.get(table)):
                (accepted_lines if line in accepted.get(table, ()) else drift).append(line)
        elif table not in live:
            drift.append(f"table {table}: missing (package {owner})")
    for source, referred in sorted(expected.foreign_keys):
        declared = source in live and source not in expected.shapes and source not in unchanged
        if declared and not any(ref == referred for _, ref, _ in live[source].foreign_keys):
            drift.append(f"foreign key {source} -> {referred}: missing")
    return drift, accepted_lines


def migrations_check(
    packages: Sequence[Package],
    applied: dict[tuple[str, str], LedgerEntry],
    heads: dict[str, str],
    versions: dict[str, set[str]],
    *,
    has_ledger: bool,
) -> dict[str, Any]:
    """The ledger, the files and the version tables agree: every package's version table holds
    exactly its applied head (as Alembic's would), nothing applied changed or vanished."""
    version_tables = {p.name: p.version_table for p in packages}
    history = _history_problems(packages, applied)
    pending = sum(1 for pkg in packages for m in pkg.migrations if m.key not in applied)
    missing_heads = sorted(h for name, h in heads.items() if h not in versions.get(version_tables[name], ()))
    unknown_heads = sorted(
        v for name, h in heads.items() for v in versions.get(version_tables[name], ()) if v != h
    )
    status: HealthStatus = "healthy"
    if not has_ledger or history or missing_heads or unknown_heads:
        status = "unhealthy"
    elif pending:
        status = "degraded"
    return {
        "status": status,
        "ledger_table": has_ledger,
        "applied": len(applied),
        "pending": pending,
        "version_table_heads": sum(len(v) for v in versions.values()),
        "missing_heads": missing_heads,
        "unknown_heads": unknown_heads,
        "history": history,
    }


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
        digests = provider.table_digests(conn)
        present: Collection[str] = digests if digests is not None else (live := provider.describe_live(conn))
        has_ledger = ledger.LEDGER_TABLE in present
        # Tables in a package's schema of its own (the core's `core.schema`), as `<schema>.<table>`.
        placed = describe_placed(conn, packages, provider)
        present = {*present, *placed}
        applied = ledger.read(conn) if has_ledger else {}
        accepted = adoptions.accepted_drift(conn) if adoptions.ADOPTIONS_TABLE in present else {}
        version_tables = {p.name: p.version_table for p in packages}
        snapshots = ledger.read_snapshots(conn) if ledger.SNAPSHOT_TABLE in present else {}
        heads = applied_heads(packages, applied)
        versions = ledger.read_versions(
            conn, sorted({version_tables[name] for name in heads if version_tables[name] in present})
        )
        recordable: dict[str, str] | None = None
        refresh: set[str] = set()
        unchanged: set[str] = set()
        if digests is not None:
            unchanged = unchanged_since_snapshot(packages, snapshots, heads, digests)
            by_name = found_by_name_only(
                packages, (t for _, shapes in snapshots.values() for t in shapes), digests
            )
            live = provider.describe_live(
                conn, [t for t in digests if t not in unchanged and t not in by_name]
            )
            live.update(dict.fromkeys(by_name, PRESENT_ONLY))
            refresh = without_digest(packages, heads, snapshots, live) if snapshot else set()
            stale = any(needs_snapshot(p, heads, snapshots) for p in packages)
            if snapshot and has_ledger and (refresh or stale):
                # Record a digest only where the catalog did not move while it was being reflected.
                after = provider.table_digests(conn) or {}
                recordable = {t: d for t, d in digests.items() if after.get(t) == d}
        live.update(placed)
        conn.rollback()
        snapshot_note = None
        if snapshot and has_ledger:
            try:
                with conn.begin():
                    ledger.ensure(conn)
                    taken = record_snapshots(
                        conn,
                        packages,
                        heads,
                        snapshots,
                        live,
                        run_id or "verify",
                        digests=recordable,
                        refresh=refresh if recordable else set(),
                    )
                # A snapshot taken now is the live shape itself: comparing the two is a tautology.
                unchanged.update(t for name in taken for t in snapshots[name][1] if t in live)
            except Exception as exc:  # a read-only role can still be verified
                snapshot_note = f"snapshots not recorded: {describe(exc)}"
        # An unchanged table is, by its digest, exactly the snapshot that is its expected shape:
        # nothing to parse, nothing to compare.
        compared = {
            name: (head, {t: "" if t in unchanged else raw for t, raw in shapes.items()})
            for name, (head, shapes) in snapshots.items()
        }
        expected = expected_schema(packages, conn.dialect, compared, heads, provider=provider)
        live.update(dict.fromkeys(unchanged, _UNCHANGED))
        permissions = provider.permission_check(conn)
        if conn.in_transaction():
            conn.rollback()
        connections = _safe(provider.connection_check, conn)
        disk = _safe(provider.disk_check, conn)
    drift, accepted_lines = schema_drift(expected, live, unchanged, accepted)
    migrations = migrations_check(packages, applied, heads, versions, has_ledger=has_ledger)
    schema = {
        "status": "drift" if drift else "ok",
        "tables_expected": len(expected.owners)
        + sum(1 for t in OPTIONAL_TABLES if t in live and t not in expected.owners),
        "tables_found": len(live),
        "compared_with": expected.sources,
        "drift": drift,
    }
    if accepted_lines:
        # Differences an adoption recorded with --accept-drift: shown, not counted.
        schema["accepted_drift"] = accepted_lines
    if snapshot_note:
        schema["note"] = snapshot_note
    checks: dict[str, dict[str, Any]] = {
        "connectivity": {"status": latency_status(latency, thresholds), "latency_ms": round(latency, 2)},
        "migrations": migrations,
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
