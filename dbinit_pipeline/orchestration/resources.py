"""The Dagster resources of a job: thin typed wrappers over the domain, bound when the job is built.

`ProjectResource` says where the configuration is and which environment the job initializes;
every other resource nests it and does its work through plain functions below this layer. The
provisioner is one class per hosting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dagster import ConfigurableResource, InitResourceContext

from dbinit_pipeline.configuration import LoadedConfig, load_cached
from dbinit_pipeline.errors import UnsupportedError
from dbinit_pipeline.infrastructure.provisioner import (
    ServerFound,
    provision_aws,
    provision_cloud,
    provision_embedded,
    provision_local,
)
from dbinit_pipeline.operation_log import append_operation
from dbinit_pipeline.pipeline.results import Approved, InitPlan, Provisioned
from dbinit_pipeline.safety.approval import require_approval
from dbinit_pipeline.safety.run_lock import release_run_lock, take_run_lock
from dbinit_pipeline.safety.state_store import LockHolder


class ProjectResource(ConfigurableResource):  # type: ignore[type-arg]
    """Where the configuration is and which environment this job initializes."""

    config_path: str
    environment: str

    def load(self) -> LoadedConfig:
        return load_cached(self.config_path)


class OperationLog(ConfigurableResource):  # type: ignore[type-arg]
    """Appends operation records to a JSON-lines file and to the state store of `config_path`."""

    project: ProjectResource
    path: str

    def append(self, record: dict[str, Any]) -> list[str]:
        """Write `record` to both places; returns what could not be written."""
        return append_operation(Path(self.path), record, config_path=self.project.config_path)


class ApprovalGate(ConfigurableResource):  # type: ignore[type-arg]
    """Decides whether a plan may proceed."""

    project: ProjectResource

    def require(self, plan: InitPlan, *, run_id: str = "", scheduled: bool = False) -> Approved:
        """Pass, use an approval of this exact plan, or refuse with the command that approves it."""
        return require_approval(self.project.load(), plan, run_id=run_id, scheduled=scheduled)


class RunLock(ConfigurableResource):  # type: ignore[type-arg]
    """The run lock as the stages see it; released at the end of the run whatever happened."""

    project: ProjectResource

    def acquire(self, provisioned: Provisioned, *, run_id: str) -> LockHolder | None:
        """Take the lock for a real run (a dry run changes nothing and takes none)."""
        return take_run_lock(self.project.load(), provisioned, run_id=run_id)

    def release(self, *, run_id: str) -> bool:
        return release_run_lock(run_id)

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if context.run_id:
            release_run_lock(context.run_id)


class Provisioner(ConfigurableResource):  # type: ignore[type-arg]
    """Finds, starts or creates the server of one environment; one subclass per hosting."""

    project: ProjectResource

    def provision(self, plan: InitPlan) -> ServerFound:
        raise NotImplementedError


class EmbeddedProvisioner(Provisioner):
    """hosting: embedded: a PostgreSQL server managed in .dbinit/<env>/."""

    def provision(self, plan: InitPlan) -> ServerFound:
        return provision_embedded(self.project.load(), plan)


class LocalProvisioner(Provisioner):
    """hosting: local: the server named by the environment's connection variable."""

    def provision(self, plan: InitPlan) -> ServerFound:
        return provision_local(self.project.load(), plan)


class AwsProvisioner(Provisioner):
    """hosting: aws-rds / aws-aurora: RDS instances and Aurora clusters."""

    def provision(self, plan: InitPlan) -> ServerFound:
        return provision_aws(self.project.load(), plan)


class CloudProvisioner(Provisioner):
    """hosting: gcp-sql / azure-sql: Cloud SQL and Azure Database flexible servers."""

    def provision(self, plan: InitPlan) -> ServerFound:
        return provision_cloud(self.project.load(), plan)


PROVISIONERS: dict[str, type[Provisioner]] = {
    "embedded": EmbeddedProvisioner,
    "local": LocalProvisioner,
    "aws-rds": AwsProvisioner,
    "aws-aurora": AwsProvisioner,
    "gcp-sql": CloudProvisioner,
    "azure-sql": CloudProvisioner,
}


def provisioner_for(hosting: str, project: ProjectResource) -> Provisioner:
    """The provisioner class of `hosting`, bound to the project."""
    try:
        return PROVISIONERS[hosting](project=project)
    except KeyError:
        raise UnsupportedError(f"hosting {hosting!r} is not supported") from None
