"""The graph of the eight stages, and one job per configured environment."""

from __future__ import annotations

from dagster import JobDefinition, graph, in_process_executor

from dbinit_pipeline.configuration import LoadedConfig
from dbinit_pipeline.resources.approval_gate import ApprovalGate
from dbinit_pipeline.resources.operation_log import OperationLog
from dbinit_pipeline.resources.project import ProjectResource
from dbinit_pipeline.resources.provisioner import Provisioner
from dbinit_pipeline.resources.run_lock import RunLock
from dbinit_pipeline.stages.approve import approve
from dbinit_pipeline.stages.core_schema import core_schema
from dbinit_pipeline.stages.create import create
from dbinit_pipeline.stages.log import log
from dbinit_pipeline.stages.package_schemas import package_schemas
from dbinit_pipeline.stages.provision import provision
from dbinit_pipeline.stages.validate import validate
from dbinit_pipeline.stages.verify import verify

ENV_TAG = "dbinit/env"


@graph
def initialize() -> None:
    """validate -> approve -> provision -> create -> core_schema -> package_schemas -> verify -> log"""
    log(verify(package_schemas(core_schema(create(provision(approve(validate())))))))


def job_name(environment: str) -> str:
    return f"initialize_{environment}"


def build_job(config: LoadedConfig, environment: str) -> JobDefinition:
    """`initialize_<env>`, bound to that environment's resources, run in one process."""
    path = str(config.path)
    hosting = config.hosting(environment)
    return initialize.to_job(
        name=job_name(environment),
        description=(
            f"Initialize the {environment} database ({config.model.database.provider}, {hosting}) "
            f"of project {config.model.project}: the eight stages in order."
        ),
        tags={ENV_TAG: environment},
        executor_def=in_process_executor,
        resource_defs={
            "project": ProjectResource(config_path=path, environment=environment),
            "approval_gate": ApprovalGate(config_path=path),
            "provisioner": Provisioner(config_path=path),
            "operation_log": OperationLog(
                path=str(config.resolve(config.model.integration.operation_log)), config_path=path
            ),
            "run_lock": RunLock(config_path=path),
        },
    )


def build_jobs(config: LoadedConfig) -> list[JobDefinition]:
    return [build_job(config, env) for env in config.model.environments]
