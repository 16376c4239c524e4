"""The public Python API: what the `dbinit` command does, callable from an application.

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
from pathlib import Path
from typing import Any

from dbinit_pipeline.configuration import LoadedConfig, load_config
from dbinit_pipeline.database.server import DatabaseServer
from dbinit_pipeline.errors import DbinitError, ErrorCode, classify
from dbinit_pipeline.infrastructure.provisioner import ServerFound, provision
from dbinit_pipeline.migrations.adoptions import adopted_revisions
from dbinit_pipeline.migrations.loading import registry_for
from dbinit_pipeline.migrations.runner import MigrationRunner, PackageStatus
from dbinit_pipeline.pipeline.responses import error_response
from dbinit_pipeline.pipeline.results import InitPlan
from dbinit_pipeline.pipeline.validate import InitParams, build_plan
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


def _failed(exc: BaseException, *, stage: str, environment: str, operation: str | None = None) -> DbinitError:
    """`exc` as the documented exception, with the error document the command prints."""
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
        raise _failed(exc, stage="validate", environment=environment) from None
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
            statuses = MigrationRunner(server, the_plan.database_name).status(
                packages, database_exists=exists
            )
            if exists:
                with server.connect(the_plan.database_name) as conn:
                    adopted = adopted_revisions(conn)
                    conn.rollback()
        else:
            statuses = [
                PackageStatus(p.name, p.version, (), tuple(m.revision for m in p.migrations))
                for p in packages
            ]
    except Exception as exc:
        raise _failed(exc, stage="status", environment=environment, operation="status") from None
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
        raise _failed(exc, stage="health", environment=environment, operation="health") from None
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


__all__ = ["ConfigSource", "DbinitError", "health", "initialize", "load", "plan", "status"]
