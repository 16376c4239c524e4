"""The public Python API: what the `dbinit` command does, callable from an application (the CLI
only parses arguments, calls these and prints what they return).

Each function returns the response document the command prints (a dict that serializes to the
same JSON). Anything that stops it (bad configuration, a refused approval, a failed stage, an
unreachable server) raises `DbinitError`, whose `response` is the error document the command
prints and whose `code` is an `ErrorCode`. Nothing here prints or exits.

    from dbinit_pipeline import initialize

    response = initialize("dev")            # validate ... log, as `dbinit init dev`
    response["result"]["migrations_applied"]
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from dbinit_pipeline.clock import stamp
from dbinit_pipeline.configuration import LoadedConfig, load_config
from dbinit_pipeline.database.server import DatabaseServer
from dbinit_pipeline.errors import DbinitError, ErrorCode, classify
from dbinit_pipeline.infrastructure.provisioner import ServerFound, provision
from dbinit_pipeline.migrations.adoptions import adopted_revisions
from dbinit_pipeline.migrations.ledger import LedgerEntry
from dbinit_pipeline.migrations.loading import registry_for
from dbinit_pipeline.migrations.runner import MigrationRunner, PackageStatus, package_statuses
from dbinit_pipeline.pipeline.adopt import adopt as record_adoption
from dbinit_pipeline.pipeline.adopt import adoption_key, find_positions
from dbinit_pipeline.pipeline.plan_hash import PendingRevision, PlanDigest, compute_plan
from dbinit_pipeline.pipeline.responses import error_response
from dbinit_pipeline.pipeline.results import InitPlan
from dbinit_pipeline.pipeline.validate import InitParams, build_plan
from dbinit_pipeline.safety.approval import approve_plan, command_for, request_approval, require_approval
from dbinit_pipeline.safety.protection import read_mark, refuse_if_protected, write_mark
from dbinit_pipeline.verify.health import verify_database

ConfigSource = str | Path | LoadedConfig | None


def load(config: ConfigSource = None) -> LoadedConfig:
    """The project configuration: a loaded one, a path to dbinit.yaml, or (None) the one found from
    DBINIT_CONFIG, DBINIT_CWD or the current directory."""
    if isinstance(config, LoadedConfig):
        return config
    return load_config(Path(config).resolve() if config is not None else None)


def _raise(response: dict[str, Any]) -> dict[str, Any]:
    """`response` when it is a success; the documented exception carrying it otherwise."""
    if response.get("status") == "success":
        return response
    code = str(response.get("code"))
    raise DbinitError(
        str(response.get("error") or "the run failed"),
        code=ErrorCode(code) if code in ErrorCode.__members__.values() else ErrorCode.INTERNAL_ERROR,
        transient=bool(response.get("transient", False)),
        suggestions=list(response.get("recovery", {}).get("suggestions", [])),
        details=dict(response.get("details") or {}),
        response=response,
    )


def failure(
    exc: BaseException, *, stage: str, environment: str | None, operation: str | None = None
) -> DbinitError:
    """`exc` as the documented exception, with the error document the command prints (a
    `DbinitError` that already carries one is returned as it is)."""
    if isinstance(exc, DbinitError) and exc.response is not None:
        return exc
    err = classify(exc)
    response = error_response(err, stage=stage, environment=environment)
    if operation:
        response["operation"] = operation
    err.response = response
    return err


def initialize(
    environment: str,
    *,
    config: ConfigSource = None,
    database_name: str | None = None,
    if_exists: str | None = None,
    dry_run: bool = False,
    sql: bool = False,
    verbose: bool = False,
) -> dict[str, Any]:
    """Run the environment's job (`initialize_<env>`) in this process: validate, approve, provision,
    create, core_schema, package_schemas, verify, log. Returns the success response; raises
    `DbinitError` (with the error response) when any stage fails.

    The run is recorded in the Dagster instance of DAGSTER_HOME when it is set (an ephemeral one
    otherwise), like `dbinit init`. A database this call created is dropped again if a later stage
    fails (never on a protected environment)."""
    try:
        loaded = load(config)
        loaded.environment(environment)
    except Exception as exc:
        raise failure(exc, stage="validate", environment=environment) from None
    return _raise(
        _run_job(
            loaded,
            environment,
            database_name=database_name,
            if_exists=if_exists,
            dry_run=dry_run or sql,
            sql=sql,
            verbose=verbose,
        )
    )


def plan(
    environment: str,
    *,
    config: ConfigSource = None,
    database_name: str | None = None,
    if_exists: str | None = None,
    sql: bool = False,
) -> dict[str, Any]:
    """What `initialize` would do, changing nothing (`dbinit plan`): the same response with
    `dry_run: true`; with `sql`, each pending script's SQL as Alembic's offline mode renders it."""
    return initialize(
        environment, config=config, database_name=database_name, if_exists=if_exists, dry_run=True, sql=sql
    )


def _run_job(
    config: LoadedConfig,
    environment: str,
    *,
    database_name: str | None,
    if_exists: str | None,
    dry_run: bool,
    sql: bool,
    verbose: bool,
) -> dict[str, Any]:
    """The job's response, success or error (never raises for a failed stage)."""
    # Dagster costs a second or more at import; status and health never need it.
    from dbinit_pipeline.orchestration.jobs import run_in_process

    return run_in_process(
        config,
        environment,
        database_name=database_name,
        if_exists=if_exists,
        dry_run=dry_run,
        sql=sql,
        verbose=verbose,
        dagster_home=os.environ.get("DAGSTER_HOME"),
    )


def server_for(
    config: LoadedConfig, environment: str, database_name: str | None
) -> tuple[InitPlan, ServerFound]:
    """The plan of a dry run and the server it names (started if embedded, never created in a cloud)."""
    found_plan = build_plan(config, environment, InitParams(database_name=database_name, dry_run=True))
    return found_plan, provision(config, found_plan)


def status(
    environment: str, *, config: ConfigSource = None, database_name: str | None = None
) -> dict[str, Any]:
    """Applied, adopted and pending revisions per package (`dbinit status`); reads, never writes."""
    try:
        loaded = load(config)
        the_plan, found = server_for(loaded, environment, database_name)
        exists = False
        adopted: dict[tuple[str, str], str] = {}
        packages = registry_for(loaded).ordered()
        statuses: list[PackageStatus]
        if found.infrastructure != "would_provision":
            server = DatabaseServer(found.server)
            with server.connect(autocommit=True) as conn:
                exists = server.provider.database_exists(conn, the_plan.database_name)
            applied: dict[tuple[str, str], LedgerEntry] = {}
            if exists:  # the ledger and the adoptions, through one connection
                with server.connect(the_plan.database_name) as conn:
                    applied = MigrationRunner(server, the_plan.database_name).applied(conn)
                    adopted = adopted_revisions(conn)
                    conn.rollback()
            statuses = package_statuses(packages, applied)
        else:
            statuses = [
                PackageStatus(p.name, p.version, (), tuple(m.revision for m in p.migrations))
                for p in packages
            ]
    except Exception as exc:
        raise failure(exc, stage="status", environment=environment, operation="status") from None
    return {
        "status": "success",
        "operation": "status",
        "result": {
            "environment": the_plan.environment,
            "database_name": the_plan.database_name,
            "server": found.server.url_display,
            "database_exists": exists,
            "applied": sum(len(s.applied) for s in statuses),
            "adopted": len(adopted),
            "pending": sum(len(s.pending) for s in statuses),
            "packages": [_package_status(s, adopted) for s in statuses],
        },
    }


def _package_status(status: PackageStatus, adopted: dict[tuple[str, str], str]) -> dict[str, Any]:
    """One package's line of `status`: `applied` holds every revision in the ledger, `adopted` those
    of them that were recorded by `dbinit adopt` (the application had run them), with the
    adoptions' run ids."""
    mine = [r for r in status.applied if (status.name, r) in adopted]
    return {
        "name": status.name,
        "version": status.version,
        "applied": list(status.applied),
        "adopted": mine,
        "adoption_runs": sorted({adopted[(status.name, r)] for r in mine}),
        "pending": list(status.pending),
    }


def health(
    environment: str, *, config: ConfigSource = None, database_name: str | None = None
) -> dict[str, Any]:
    """Schema drift and health checks of the environment's database (`dbinit health`). The
    document's `status` is healthy, degraded or unhealthy; only a failure to check raises."""
    try:
        loaded = load(config)
        the_plan, found = server_for(loaded, environment, database_name)
        if found.infrastructure == "would_provision":
            raise DbinitError(
                f"The embedded server of {environment!r} was never initialized",
                code=ErrorCode.NOT_INITIALIZED,
                suggestions=[f"Run dbinit init {environment} first."],
            )
        outcome = verify_database(
            DatabaseServer(found.server),
            the_plan.database_name,
            registry_for(loaded).ordered(),
            loaded.model.health,
        )
    except Exception as exc:
        raise failure(exc, stage="health", environment=environment, operation="health") from None
    return {
        "status": outcome.status,
        "operation": "health",
        "result": {
            "environment": the_plan.environment,
            "database_name": the_plan.database_name,
            "checks": outcome.health,
            "schema": outcome.schema,
        },
    }


# -- approvals, adoption, repair -----------------------------------------------------------------


@dataclass(frozen=True)
class Adoption:
    """What an adoption records: every package at its version table's head, or one `package` at
    revision `at`; `accept_drift` records differences instead of stopping at them."""

    package: str | None = None
    at: str | None = None
    accept_drift: bool = False

    @property
    def flags(self) -> tuple[str, ...]:
        """The command-line flags that name this adoption in `dbinit request|approve`."""
        where = ("--package", self.package, "--at", self.at) if self.package and self.at else ()
        return ("--adopt", *where, *(("--accept-drift",) if self.accept_drift else ()))


def _approval_plan(
    config: LoadedConfig, environment: str, database_name: str | None, if_exists: str | None
) -> InitPlan:
    return build_plan(
        config, environment, InitParams(database_name=database_name, if_exists=if_exists, dry_run=True)
    )


def adoption_digest(
    config: LoadedConfig, the_plan: InitPlan, server: DatabaseServer, adoption: Adoption
) -> PlanDigest:
    """The plan of an adoption as approvals see it: the run's plan plus the revisions it records."""
    packages = registry_for(config).ordered()
    with server.connect(the_plan.database_name) as conn:
        positions = find_positions(conn, packages, package=adoption.package, at=adoption.at)
        conn.rollback()
    keys = adoption_key(positions, packages)
    digest = compute_plan(config, the_plan)
    adopted = {(p, r) for p, r, _ in keys}
    return replace(
        digest,
        adopt=tuple(PendingRevision(*k) for k in keys),
        accept_drift=adoption.accept_drift,
        pending=tuple(p for p in digest.pending if (p.package, p.revision) not in adopted),
        command_flags=adoption.flags,
    )


def _run_command(config: LoadedConfig, the_plan: InitPlan, digest: PlanDigest) -> str:
    """The command that runs an approved plan: the adoption it names, or `dbinit init`."""
    if digest.adopt:
        return command_for(config, the_plan, "adopt", digest=digest)
    return f"dbinit init {the_plan.environment}"


def _digest_for(config: LoadedConfig, the_plan: InitPlan, adoption: Adoption | None) -> PlanDigest | None:
    """The adoption's plan when approving an adoption, else None (the init plan)."""
    if adoption is None:
        return None
    found = provision(config, the_plan)
    return adoption_digest(config, the_plan, DatabaseServer(found.server), adoption)


def request(
    environment: str,
    *,
    by: str,
    reason: str | None = None,
    config: ConfigSource = None,
    database_name: str | None = None,
    if_exists: str | None = None,
    adoption: Adoption | None = None,
    fallback: TextIO | None = None,
) -> dict[str, Any]:
    """Ask the approvers of a protected environment to approve the current plan (`dbinit
    request`); `fallback` receives the notification when no notifier is configured."""
    try:
        loaded = load(config)
        the_plan = _approval_plan(loaded, environment, database_name, None if adoption else if_exists)
        outcome = request_approval(
            loaded,
            the_plan,
            by=by,
            reason=reason,
            fallback=fallback,
            digest=_digest_for(loaded, the_plan, adoption),
        )
        command = command_for(loaded, the_plan, "approve", digest=outcome.digest)
    except Exception as exc:
        raise failure(exc, stage="request", environment=environment, operation="request-approval") from None
    digest, asked = outcome.digest, outcome.request
    result: dict[str, Any] = {
        "request_id": asked.id,
        "environment": the_plan.environment,
        "database_name": the_plan.database_name,
        "plan": digest.summary(),
        "requested_by": asked.requested_by,
        "reason": asked.reason,
        "notified_through": outcome.channel,
    }
    if outcome.delivery_errors:
        result["notification_errors"] = outcome.delivery_errors
    return {
        "status": "success",
        "operation": "request-approval",
        "result": result,
        "message": f"Approval of plan {digest.short} for {the_plan.database_name} ({the_plan.environment}) requested",
        "next_steps": [
            f"An approver (not {asked.requested_by}) runs: {command}",
            f"Then: {_run_command(loaded, the_plan, digest)}",
        ],
    }


def approve(
    environment: str,
    *,
    by: str,
    reason: str | None = None,
    ttl: str | None = None,
    plan_hash: str | None = None,
    config: ConfigSource = None,
    database_name: str | None = None,
    if_exists: str | None = None,
    adoption: Adoption | None = None,
) -> dict[str, Any]:
    """Record `by`'s approval of the current plan (`dbinit approve`); with `plan_hash`, only if the
    current plan is that one. One run may use it until it expires."""
    try:
        loaded = load(config)
        the_plan = _approval_plan(loaded, environment, database_name, None if adoption else if_exists)
        record, digest = approve_plan(
            loaded,
            the_plan,
            by=by,
            reason=reason,
            ttl=ttl,
            expected_hash=plan_hash,
            digest=_digest_for(loaded, the_plan, adoption),
        )
    except Exception as exc:
        raise failure(exc, stage="approve", environment=environment, operation="approve") from None
    expires = stamp(record.expires_at)
    return {
        "status": "success",
        "operation": "approve",
        "result": {
            "approval_id": record.id,
            "environment": the_plan.environment,
            "database_name": the_plan.database_name,
            "plan": digest.summary(),
            "approved_by": record.approved_by,
            "requested_by": record.requested_by,
            "reason": record.reason,
            "expires_at": expires,
        },
        "message": (
            f"{record.approved_by} approved plan {digest.short} for {the_plan.database_name} "
            f"({the_plan.environment}): one run may use it until {expires}"
        ),
        "next_steps": [f"Run it: {_run_command(loaded, the_plan, digest)}"]
        if digest.adopt
        else [
            f"Run it: dbinit init {the_plan.environment}",
            "Or re-execute the failed run from failure in the Dagster UI.",
            f"In CI: dagster job execute -m dbinit_pipeline -j initialize_{the_plan.environment}",
        ],
    }


def adopt(
    environment: str,
    *,
    config: ConfigSource = None,
    database_name: str | None = None,
    adoption: Adoption | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Record what an existing database already has (`dbinit adopt`): each package up to its
    version table's head, verified against what those revisions declare first. Protected
    environments need an approval of the adoption's plan (`approve(..., adoption=...)`)."""
    adoption = adoption or Adoption()
    try:
        loaded = load(config)
        return _adopt(loaded, environment, database_name, adoption, dry_run=dry_run)
    except Exception as exc:
        raise failure(exc, stage="adopt", environment=environment, operation="adopt") from None


def _adopt(
    config: LoadedConfig, environment: str, database_name: str | None, adoption: Adoption, *, dry_run: bool
) -> dict[str, Any]:
    the_plan, found = server_for(config, environment, database_name)
    if found.infrastructure == "would_provision":
        raise DbinitError(
            f"The server of {environment!r} does not exist yet: there is nothing to adopt",
            code=ErrorCode.NOT_INITIALIZED,
        )
    server = DatabaseServer(found.server)
    run_id = f"adopt-{uuid.uuid4().hex[:12]}"
    approval: dict[str, Any] = {"required": False}
    approve: Callable[[], frozenset[tuple[str, str, str]] | None] | None = None
    if the_plan.needs_approval and not dry_run:
        digest = adoption_digest(config, the_plan, server, adoption)

        def approve() -> frozenset[tuple[str, str, str]]:
            """Use up the approval: called by the adoption once nothing but writing is left."""
            grant = require_approval(config, replace(the_plan, dry_run=False), run_id=run_id, digest=digest)
            approval.update(required=True, approved_by=grant.approved_by, plan_hash=digest.hash)
            return frozenset((p.package, p.revision, p.checksum) for p in digest.adopt)

    if not dry_run:
        refuse_if_protected(
            read_mark(server, the_plan.database_name),
            database=the_plan.database_name,
            environment=the_plan.environment,
            recreate=False,
            approved=approve is not None,
        )
    report = record_adoption(
        server,
        the_plan.database_name,
        registry_for(config).ordered(),
        package=adoption.package,
        at=adoption.at,
        dry_run=dry_run,
        accept_drift=adoption.accept_drift,
        run_id=run_id,
        lock_timeout=config.model.safety.lock_timeout,
        collation=config.model.database.collation,
        approve=approve,
    )
    if the_plan.protected and not dry_run:
        write_mark(server, the_plan.database_name, the_plan.environment, run_id)
    result = {"environment": the_plan.environment, **report.as_dict(), "approval": approval}
    count = result["revisions_to_adopt"]
    if dry_run:
        message = f"Dry run: {count} revision(s) of {the_plan.database_name} would be recorded as adopted"
        steps = [f"Adopt: dbinit adopt {the_plan.environment}" + (" --accept-drift" if report.drift else "")]
    else:
        message = f"{count} revision(s) of {the_plan.database_name} recorded as adopted (run {run_id})"
        steps = [f"Apply what is later: dbinit init {the_plan.environment}"]
    if report.drift:
        message += f"; drift in {len(report.drift)} table(s)" + (" accepted" if adoption.accept_drift else "")
    return {
        "status": "success",
        "operation": "adopt",
        "result": result,
        "message": message,
        "next_steps": steps,
    }


def resolve(
    environment: str,
    package: str,
    revision: str,
    *,
    applied: bool,
    config: ConfigSource = None,
    database_name: str | None = None,
) -> dict[str, Any]:
    """MySQL/MariaDB: settle a migration whose process died mid-way (`dbinit resolve`), as applied
    (its DDL is all there) or undone (none of it is)."""
    try:
        loaded = load(config)
        the_plan, found = server_for(loaded, environment, database_name)
        if found.infrastructure == "would_provision":
            raise DbinitError(
                f"The server of {environment!r} does not exist yet", code=ErrorCode.NOT_INITIALIZED
            )
        runner = MigrationRunner(
            DatabaseServer(found.server), the_plan.database_name, run_id=uuid.uuid4().hex[:12]
        )
        outcome = runner.resolve(registry_for(loaded).ordered(), package, revision, applied=applied)
    except Exception as exc:
        raise failure(exc, stage="resolve", environment=environment, operation="resolve") from None
    return {
        "status": "success",
        "operation": "resolve",
        "result": {
            "environment": the_plan.environment,
            "database_name": the_plan.database_name,
            "package": package,
            "revision": revision,
            "resolved_as": outcome,
        },
        "message": f"{package}:{revision} resolved as {outcome} in {the_plan.database_name}",
        "next_steps": [f"Continue: dbinit init {the_plan.environment}"],
    }


__all__ = [
    "Adoption",
    "ConfigSource",
    "DbinitError",
    "adopt",
    "approve",
    "failure",
    "health",
    "initialize",
    "load",
    "plan",
    "request",
    "resolve",
    "status",
]
