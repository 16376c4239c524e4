"""What each stage hands to the next. Each result carries the one before it, so the order of
the ops is data flow, and no result ever carries a password."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from dbinit_pipeline.database.server import ServerRef
from dbinit_pipeline.infrastructure.cloud import Infrastructure
from dbinit_pipeline.migrations.runner import ApplyReport
from dbinit_pipeline.safety.pinned import PinnedSources
from dbinit_pipeline.verify.health import HealthStatus

# The states a stage reports, as they appear in the responses.
DatabaseAction = Literal["created", "existing", "recreated", "would_create", "would_recreate"]
TemplateStatus = Literal["cloned", "replayed", "unavailable"]


@dataclass(frozen=True)
class TemplateUse:
    """How a database that was built from empty came to be: cloned, or replayed and why."""

    status: TemplateStatus
    plan_hash: str | None
    note: str
    template_database: str | None = None
    built_by_run: str | None = None

    @property
    def cloned(self) -> bool:
        return self.status == "cloned"

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"status": self.status, "plan_hash": self.plan_hash, "note": self.note}
        if self.template_database:
            data["template_database"] = self.template_database
            data["built_by_run"] = self.built_by_run
        return data


@dataclass(frozen=True)
class InitPlan:
    """validate: what this run will do, decided before anything is touched."""

    environment: str
    project: str
    database_name: str
    provider: str
    hosting: str
    if_exists: str
    dry_run: bool
    protected: bool
    needs_approval: bool
    config_path: str
    connection_env: str | None
    package_order: tuple[str, ...]
    run_id: str = ""
    collation: str | None = None
    # Every revision and models file as validate read them: mutating stages refuse other files.
    pinned: PinnedSources | None = None
    sql: bool = False  # a dry run that renders SQL (runs the scripts in offline mode)


@dataclass(frozen=True)
class Approved:
    """approve: whether approval was needed, and who gave it."""

    plan: InitPlan
    required: bool
    approved_by: str | None = None
    approval_id: str | None = None
    plan_hash: str | None = None  # computed when approval is needed, and in every dry run
    approve_command: str | None = None
    # What the approval covers: (package, revision, sha256) of each pending revision. A stage
    # applies nothing outside it, whichever run (or re-execution) it belongs to.
    approved_pending: tuple[tuple[str, str, str], ...] = ()


@dataclass(frozen=True)
class Provisioned:
    """provision: the server that answers for this environment."""

    approved: Approved
    server: ServerRef
    infrastructure: Infrastructure
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def plan(self) -> InitPlan:
        return self.approved.plan


@dataclass(frozen=True)
class DatabaseReady:
    """create: the target database, and whether this run created it."""

    provisioned: Provisioned
    action: DatabaseAction
    existed_before: bool
    template: TemplateUse | None = None  # set where templates are on and it was built from empty

    @property
    def plan(self) -> InitPlan:
        return self.provisioned.plan

    @property
    def server(self) -> ServerRef:
        return self.provisioned.server

    @property
    def exists(self) -> bool:
        return self.action in ("created", "recreated", "existing")


@dataclass(frozen=True)
class CoreApplied:
    """core_schema: the core package's report."""

    database: DatabaseReady
    report: ApplyReport

    @property
    def plan(self) -> InitPlan:
        return self.database.plan


@dataclass(frozen=True)
class PackagesApplied:
    """package_schemas: every other package's report."""

    core: CoreApplied
    report: ApplyReport

    @property
    def database(self) -> DatabaseReady:
        return self.core.database

    @property
    def plan(self) -> InitPlan:
        return self.core.plan


@dataclass(frozen=True)
class Verified:
    """verify: the comparison with the expected schema and the health report."""

    packages: PackagesApplied
    schema: dict[str, Any]
    health: dict[str, Any]
    status: HealthStatus
    template_kept: dict[str, Any] | None = None  # a template kept after this verify (templates.py)

    @property
    def plan(self) -> InitPlan:
        return self.packages.plan
