"""Stage 1, validate: parameters, configuration, environment, connection variable, name, packages."""

import re
from dataclasses import dataclass

from dbinit_pipeline.configuration import CLOUD_HOSTINGS, IF_EXISTS, LoadedConfig, refuse_recreate
from dbinit_pipeline.database.providers import provider_for
from dbinit_pipeline.database.server import url_from_variable
from dbinit_pipeline.errors import ConfigurationError, InputError
from dbinit_pipeline.migrations.loading import registry_for
from dbinit_pipeline.pipeline.results import InitPlan
from dbinit_pipeline.safety.pinned import pin_registry


@dataclass(frozen=True)
class InitParams:
    """Run parameters: anything left unset comes from dbinit.yaml."""

    database_name: str | None = None
    if_exists: str | None = None
    dry_run: bool = False
    sql: bool = False  # with dry_run: render each pending script's SQL (runs it in Alembic's offline mode)


def default_database_name(project: str, environment: str) -> str:
    """`<project>_<env>`, folded to the characters a database name may use."""
    base = re.sub(r"[^a-z0-9_]+", "_", f"{project}_{environment}".lower()).strip("_")
    return base if base[:1].isalpha() or base[:1] == "_" else f"db_{base}"


def build_plan(config: LoadedConfig, environment: str, params: InitParams, *, run_id: str = "") -> InitPlan:
    """Everything the run will do, decided and checked before anything is touched."""
    if params.if_exists is not None and params.if_exists not in IF_EXISTS:
        raise InputError(
            f"if_exists {params.if_exists!r} is not one of {', '.join(IF_EXISTS)}",
            suggestions=[
                "reuse (default) keeps an existing database, error refuses it, recreate drops it first."
            ],
        )
    env = config.environment(environment)
    model = config.model
    provider = provider_for(model.database.provider)
    hosting = config.hosting(environment)
    protected = config.is_protected(environment)
    if hosting not in ("embedded", *CLOUD_HOSTINGS):
        var = env.connection_string_env
        if not var:
            raise ConfigurationError(
                f"environments.{environment}.connection_string_env is required for hosting "
                f"{hosting!r} ({config.path})",
                suggestions=[
                    f"Add connection_string_env: {environment.upper()}_DATABASE_URL to environments.{environment}."
                ],
            )
        url_from_variable(var, provider.name, environment=environment)  # set, and a URL of the provider
    if params.database_name is not None:
        name = params.database_name
    else:
        name = env.database_name or default_database_name(model.project, environment)
    provider.validate_database_name(name)
    if_exists = params.if_exists or env.if_exists
    refuse_recreate(environment, protected=protected, if_exists=if_exists)
    registry = registry_for(config, run_id)
    return InitPlan(
        environment=environment,
        project=model.project,
        database_name=name,
        provider=provider.name,
        hosting=hosting,
        if_exists=if_exists,
        dry_run=params.dry_run,
        protected=protected,
        needs_approval=config.needs_approval(environment),
        config_path=str(config.path),
        connection_env=env.connection_string_env,
        package_order=tuple(p.name for p in registry.ordered()),
        run_id=run_id,
        collation=model.database.collation,
        pinned=pin_registry(registry),
        sql=params.sql,
    )
