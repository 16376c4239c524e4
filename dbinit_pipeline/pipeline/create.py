"""Stage 4, create: the target database exists, according to the `if_exists` policy."""

from collections.abc import Callable

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from dbinit_pipeline.configuration import refuse_recreate
from dbinit_pipeline.database.server import DatabaseServer
from dbinit_pipeline.errors import DatabaseExists
from dbinit_pipeline.pipeline.results import DatabaseAction, DatabaseReady, InitPlan, Provisioned
from dbinit_pipeline.pipeline.template_use import FromTemplate
from dbinit_pipeline.safety.protection import write_mark


def ensure_database(
    server: DatabaseServer,
    plan: InitPlan,
    *,
    make: Callable[[Connection, str], None] | None = None,
    replace: Callable[[Connection, str], bool] | None = None,
) -> tuple[DatabaseAction, bool]:
    """Create, reuse, refuse or recreate the database; returns (action, existed_before).

    `make` creates the database where it is built from empty (default: an empty CREATE DATABASE).
    `replace`, when given, recreates an existing database in one step (a template copied under
    another name, then swapped in) and returns False when it cannot, having touched nothing."""
    provider = server.provider
    name = provider.validate_database_name(plan.database_name)
    if make is None:

        def make(conn: Connection, name: str) -> None:
            provider.create_database(conn, name, collation=plan.collation)

    with server.connect(autocommit=True) as conn:
        exists = provider.database_exists(conn, name)
        if plan.dry_run:
            if not exists:
                return "would_create", False
            return ("would_recreate" if plan.if_exists == "recreate" else "existing"), True
        if exists:
            if plan.if_exists == "reuse":
                return "existing", True
            if plan.if_exists == "error":
                raise DatabaseExists(
                    f"Database {name!r} already exists on {server.ref.url_display} and if_exists is 'error'",
                    suggestions=[
                        "Use the existing database: --if-exists reuse (the default).",
                        "Or choose another name: --database-name NAME.",
                        "Or drop it first (never done automatically for a protected environment).",
                    ],
                )
            refuse_recreate(plan.environment, protected=plan.protected, if_exists=plan.if_exists)
            if replace is not None and replace(conn, name):
                return "recreated", True
            provider.drop_database(conn, name)
            make(conn, name)
            return "recreated", True
        try:
            make(conn, name)
        except DBAPIError as exc:
            # Another run created it between our check and our CREATE.
            if provider.is_duplicate_database(exc) and plan.if_exists == "reuse":
                return "existing", True
            raise
        return "created", False


def database_ready(provisioned: Provisioned) -> DatabaseReady:
    plan = provisioned.plan
    if provisioned.infrastructure == "would_provision":
        return DatabaseReady(provisioned, "would_create", existed_before=False)
    server = DatabaseServer(provisioned.server)
    from_template = FromTemplate.for_plan(server, plan)
    action, existed = ensure_database(
        server,
        plan,
        make=from_template.make if from_template else None,
        replace=from_template.replace if from_template else None,
    )
    template = from_template.finish(action) if from_template else None
    if plan.protected and not plan.dry_run:
        write_mark(server, plan.database_name, plan.environment, plan.run_id or "manual")
    return DatabaseReady(provisioned, action, existed_before=existed, template=template)
