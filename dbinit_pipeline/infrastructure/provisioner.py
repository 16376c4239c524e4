"""Provisioning: make sure a server answers for the environment, and say how it was found."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

from dbinit_pipeline.configuration import LoadedConfig
from dbinit_pipeline.database.embedded import EmbeddedPostgres
from dbinit_pipeline.database.providers import provider_for
from dbinit_pipeline.database.server import (
    DatabaseServer,
    ServerRef,
    display_url,
    url_from_variable,
)
from dbinit_pipeline.errors import ConfigurationError, UnsupportedError
from dbinit_pipeline.infrastructure import cloud
from dbinit_pipeline.infrastructure.cloud import Infrastructure
from dbinit_pipeline.pipeline.results import InitPlan


@dataclass(frozen=True)
class ServerFound:
    server: ServerRef
    infrastructure: Infrastructure
    details: dict[str, Any]


def embedded_server_for(config: LoadedConfig, environment: str) -> EmbeddedPostgres:
    """The embedded server of one environment: `.dbinit/<env>/` beside the configuration."""
    return EmbeddedPostgres(config.state_dir / environment)


def server_from_env(config: LoadedConfig, plan: InitPlan) -> ServerRef:
    """The server named by the environment's connection variable (validated to be set)."""
    var = plan.connection_env
    if not var:
        raise ConfigurationError(
            f"environments.{plan.environment}.connection_string_env is not set in {config.path}",
            suggestions=[
                f"Set environments.{plan.environment}.connection_string_env to the NAME of a variable."
            ],
        )
    url = url_from_variable(var, plan.provider, environment=plan.environment)
    return ServerRef(
        provider=plan.provider,
        url_display=display_url(url),
        secret_source=f"env:{var}",
        maintenance_database=url.database or maintenance_database(plan.provider),
    )


def maintenance_database(provider: str) -> str:
    return provider_for(provider).maintenance_database


def check_answers(server: ServerRef) -> float:
    """Connect to the maintenance database and run SELECT 1; returns the latency in ms."""
    import time

    started = time.perf_counter()
    with DatabaseServer(server).connect() as conn:
        conn.execute(text("SELECT 1"))
    return (time.perf_counter() - started) * 1000


def provision_embedded(config: LoadedConfig, plan: InitPlan) -> ServerFound:
    """Start (initializing on first use) the environment's embedded PostgreSQL server."""
    if plan.provider != "postgresql":
        raise UnsupportedError(
            "hosting 'embedded' runs PostgreSQL only",
            suggestions=["Use hosting: local with a MySQL server, or provider: postgresql."],
        )
    embedded = embedded_server_for(config, plan.environment)
    if plan.dry_run and not embedded.initialized:
        ref = ServerRef("postgresql", "postgresql://postgres@127.0.0.1/postgres", "none", "postgres")
        return ServerFound(ref, "would_provision", {"data_dir": str(embedded.pgdata)})
    status = embedded.ensure_running()
    url = f"postgresql://{status.user}@{status.host}:{status.port}/postgres"
    ref = ServerRef("postgresql", url, f"file:{status.password_file}", "postgres")
    check_answers(ref)
    return ServerFound(
        ref,
        "embedded",
        {
            "data_dir": str(embedded.pgdata),
            "started": status.started,
            "initialized": status.initialized,
        },
    )


def provision_local(config: LoadedConfig, plan: InitPlan) -> ServerFound:
    """Check that the server named by the connection variable answers."""
    ref = server_from_env(config, plan)
    latency = check_answers(ref)
    return ServerFound(ref, "existing", {"latency_ms": round(latency, 1)})


def provision_aws(config: LoadedConfig, plan: InitPlan) -> ServerFound:
    """Find or create the RDS instance or Aurora cluster, then reach it."""
    # boto3 costs a noticeable part of a second at import; only the AWS hostings need it.
    from dbinit_pipeline.infrastructure import aws

    infra = aws.ensure_aws_infrastructure(config, plan.environment, dry_run=plan.dry_run)
    return _reach_cloud(config, plan, infra, "endpoint and master secret", aws.endpoint_error)


def provision_cloud(config: LoadedConfig, plan: InitPlan) -> ServerFound:
    """Find or create the Cloud SQL instance or Azure flexible server, then reach it."""
    found = cloud.ensure_cloud_infrastructure(config, plan.environment, plan.hosting, dry_run=plan.dry_run)
    return _reach_cloud(config, plan, found, "address and kept password", cloud.endpoint_error)


PROVISION: dict[str, Callable[[LoadedConfig, InitPlan], ServerFound]] = {
    "embedded": provision_embedded,
    "local": provision_local,
    "aws-rds": provision_aws,
    "aws-aurora": provision_aws,
    "gcp-sql": provision_cloud,
    "azure-sql": provision_cloud,
}


def provision(config: LoadedConfig, plan: InitPlan) -> ServerFound:
    """Find or start the server for `plan` according to its hosting."""
    try:
        how = PROVISION[plan.hosting]
    except KeyError:
        raise UnsupportedError(
            f"hosting {plan.hosting!r} is not supported yet",
            suggestions=[
                "Use hosting: embedded (a PostgreSQL server managed in .dbinit/) or hosting: local "
                "(a server you run, named by the connection variable).",
            ],
        ) from None
    return how(config, plan)


def _reach_cloud(
    config: LoadedConfig,
    plan: InitPlan,
    infra: Any,
    way_in: str,
    endpoint_error: Callable[..., Exception],
) -> ServerFound:
    """Connect to cloud infrastructure that was found or created (AWS, Google Cloud, Azure alike).

    The connection variable wins when set (a proxy, a tunnel, a less privileged user); the
    infrastructure's own address and kept password are the way in when it is not.
    """
    details = infra.details()
    if infra.infrastructure == "would_provision":
        return ServerFound(infra.placeholder_ref(plan.provider), infra.infrastructure, details)
    var = plan.connection_env
    if var and os.environ.get(var):
        ref = server_from_env(config, plan)
        details["connection"] = f"environment variable {var}"
    else:
        ref = infra.server_ref(plan.provider, var)
        details["connection"] = way_in
    try:
        details["latency_ms"] = round(check_answers(ref), 1)
    except Exception as exc:  # any driver error: named for the endpoint and how it was reached
        raise endpoint_error(exc, infra, via=details["connection"]) from None
    return ServerFound(ref, infra.infrastructure, details)
