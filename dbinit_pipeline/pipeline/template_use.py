"""Where the stages meet templates.py: create clones a template where it can, verify keeps one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from dbinit_pipeline.configuration import LoadedConfig, load_cached
from dbinit_pipeline.database.server import DatabaseServer
from dbinit_pipeline.migrations.loading import registry_for
from dbinit_pipeline.pipeline.results import DatabaseReady, InitPlan, TemplateUse
from dbinit_pipeline.pipeline.templates import (
    PlanTemplate,
    TemplatePolicy,
    create_from_template,
    keep_template,
    record_clone,
    replace_from_template,
    template_plan_hash,
    template_policy,
    unavailable,
)

BUILT_FROM_EMPTY = ("created", "recreated")


@dataclass
class FromTemplate:
    """The create stage's way of building a database from empty when templates are on."""

    server: DatabaseServer
    plan: InitPlan
    policy: TemplatePolicy
    hash_: str | None
    use: TemplateUse | None = None

    @classmethod
    def for_plan(cls, server: DatabaseServer, plan: InitPlan) -> FromTemplate | None:
        """None where templates are off (or in a dry run, which builds nothing)."""
        if plan.dry_run:
            return None
        config = load_cached(plan.config_path)
        policy = template_policy(config, plan.environment)
        if not policy.enabled:
            return None
        if not server.provider.templates_supported:
            return cls(server, plan, policy, None)
        packages = registry_for(config, plan.run_id).ordered()
        return cls(server, plan, policy, template_plan_hash(packages, plan.provider))

    def _wanted(self, hash_: str) -> PlanTemplate:
        return PlanTemplate(hash_, self.policy, self.plan.project, self.plan.environment)

    def make(self, conn: Connection, name: str) -> None:
        if self.hash_ is None or self.use is not None:  # no templates here, or `replace` said why not
            self.server.provider.create_database(conn, name, collation=self.plan.collation)
            return
        wanted = self._wanted(self.hash_)
        self.use = create_from_template(self.server, conn, name, wanted, collation=self.plan.collation)

    def replace(self, conn: Connection, name: str) -> bool:
        """Rebuild the existing `name` from the template (copy first, then drop and rename);
        False, with `name` untouched, where there is no template to copy."""
        if self.hash_ is None:
            return False
        self.use = replace_from_template(self.server, conn, name, self._wanted(self.hash_))
        return self.use.cloned

    def finish(self, action: str) -> TemplateUse | None:
        """How the database was built; a clone is written into its own bookkeeping first."""
        if self.hash_ is None:
            provider = self.server.provider
            return unavailable(provider.name, provider.templates_unavailable)
        if action not in BUILT_FROM_EMPTY or self.use is None:
            return None
        if self.use.cloned:
            record_clone(self.server, self.plan.database_name, self.use, self.plan.run_id)
        return self.use


def keep_after_verify(config: LoadedConfig, database: DatabaseReady) -> dict[str, Any] | None:
    """After verify passed: keep a template of a database this run replayed from empty."""
    use = database.template
    if use is None or use.status != "replayed" or use.plan_hash is None:
        return None
    if database.action not in BUILT_FROM_EMPTY:
        return None
    plan = database.plan
    packages = registry_for(config, plan.run_id).ordered()
    return keep_template(
        DatabaseServer(database.server),
        source_database=plan.database_name,
        hash_=use.plan_hash,
        policy=template_policy(config, plan.environment),
        project=plan.project,
        environment=plan.environment,
        run_id=plan.run_id,
        revisions=sum(len(p.migrations) for p in packages),
    )
