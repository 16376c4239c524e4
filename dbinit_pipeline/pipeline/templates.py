"""Template databases: a verified database kept per plan, copied instead of replayed.

After a run that built a database from empty and verified it, a copy of it is kept on the same
server as a template named by the plan that produced it: the core and package revisions, in
order, with the checksums of their files. A later run that would build the same plan from empty
(the database does not exist, or `if_exists: recreate`) creates the target with
`CREATE DATABASE ... TEMPLATE` instead of replaying every statement; the stages after create then
find nothing pending and verify runs exactly as for a replayed database.

Invariants:
- A template is a copy taken after verify passed, marked `datistemplate` and refusing connections
  (`datallowconn = false`): nobody, dbinit included, can open it, so it is never written after
  its creation. Its comment records the plan hash, the project, the environment, the run that
  built it and when; a database with the prefix that lacks any of these is not a template and is
  never cloned.
- Cloning holds the template's shared lock; building, refreshing and dropping hold its exclusive
  lock (advisory locks on the maintenance database). A clone never waits on another clone; a
  template that is busy beyond `templates.clone_wait` or gone is not an error: the run replays
  and says why.
- A rebuild (`if_exists: recreate`) from a template copies first and drops after: the existing
  database is dropped only once its replacement exists under a staging name, then the copy is
  renamed into place. (Dropping first is also slower where the file system must free the old
  files before it writes the new ones; BENCHMARKS.md.)
- PostgreSQL only: MySQL and MariaDB cannot copy a database, and the response says so.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from dbinit_pipeline.database.providers.base import DatabaseTemplate
from dbinit_pipeline.database.server import DatabaseServer
from dbinit_pipeline.errors import describe
from dbinit_pipeline.migrations import ledger
from dbinit_pipeline.migrations.runner import pending_of
from dbinit_pipeline.pipeline.plan_hash import plan_hash
from dbinit_pipeline.pipeline.results import TemplateUse

if TYPE_CHECKING:
    from dbinit_pipeline.configuration import LoadedConfig
    from dbinit_pipeline.migrations.package import Package

TEMPLATE_PREFIX = "dbinit_tpl_"
STAGING_PREFIX = "dbinit_swap_"
TEMPLATE_FORMAT = 1
_POLL_S = 0.1


@dataclass(frozen=True)
class TemplatePolicy:
    """Whether an environment keeps and clones templates, and how many it keeps."""

    enabled: bool
    keep: int
    clone_wait: float
    reason: str


@dataclass(frozen=True)
class PlanTemplate:
    """The template a build from empty may copy: plan `hash_`'s, built by `project`'s `environment`."""

    hash_: str
    policy: TemplatePolicy
    project: str
    environment: str


def template_policy(config: LoadedConfig, environment: str) -> TemplatePolicy:
    """The environment's own `templates` block wins; the project's applies only to unprotected
    environments, so a protected one uses templates only when it says so itself."""
    own = config.environment(environment).templates
    project = config.model.templates
    protected = config.is_protected(environment)
    if own is not None and own.enabled is not None:
        where = f"environments.{environment}.templates.enabled"
        return TemplatePolicy(own.enabled, own.keep, own.clone_wait, f"{where} is {str(own.enabled).lower()}")
    keep = own.keep if own is not None else project.keep
    wait = own.clone_wait if own is not None else project.clone_wait
    if protected:
        return TemplatePolicy(
            False,
            keep,
            wait,
            f"{environment!r} is protected: templates only with environments.{environment}.templates.enabled",
        )
    if project.enabled:
        return TemplatePolicy(True, keep, wait, "templates.enabled is true")
    return TemplatePolicy(False, keep, wait, "templates are off (the default)")


def template_plan_hash(packages: Sequence[Package], provider: str) -> str:
    """The hash of building `packages` from empty: every revision in order, with its checksum."""
    revisions = [[m.package, m.revision, m.checksum] for m in pending_of(packages, {})]
    return plan_hash(
        {"format": TEMPLATE_FORMAT, "kind": "template", "provider": provider, "revisions": revisions}
    )


def template_name(hash_: str, project: str, environment: str) -> str:
    """The template of plan `hash_` built by `project`'s `environment` (each environment its own)."""
    scoped = hashlib.sha256(f"{project}/{environment}/{hash_}".encode()).hexdigest()
    return f"{TEMPLATE_PREFIX}{scoped[:32]}"


@dataclass(frozen=True)
class TemplateRecord:
    """A template as its comment describes it."""

    plan_hash: str
    database: str
    project: str
    environment: str
    built_by_run: str
    built_at: str
    source_database: str
    revisions: int

    def comment(self) -> str:
        return json.dumps(
            {
                "dbinit_template": TEMPLATE_FORMAT,
                "plan_hash": self.plan_hash,
                "project": self.project,
                "environment": self.environment,
                "built_by_run": self.built_by_run,
                "built_at": self.built_at,
                "source_database": self.source_database,
                "revisions": self.revisions,
            },
            sort_keys=True,
        )

    @classmethod
    def of(cls, found: DatabaseTemplate) -> TemplateRecord | None:
        """The record of a finished template; None for anything else (a half-made copy, another
        database that happens to share the prefix, one that accepts connections)."""
        if not found.is_template or found.allows_connections or not found.comment:
            return None
        try:
            data = json.loads(found.comment)
            record = cls(
                plan_hash=str(data["plan_hash"]),
                database=found.name,
                project=str(data["project"]),
                environment=str(data["environment"]),
                built_by_run=str(data["built_by_run"]),
                built_at=str(data["built_at"]),
                source_database=str(data["source_database"]),
                revisions=int(data["revisions"]),
            )
        except (ValueError, KeyError, TypeError):
            return None
        if (
            data.get("dbinit_template") != TEMPLATE_FORMAT
            or template_name(record.plan_hash, record.project, record.environment) != found.name
        ):
            return None
        return record


def list_templates(server: DatabaseServer, conn: Connection) -> list[TemplateRecord]:
    """Every finished template on the server, newest first."""
    records = [TemplateRecord.of(t) for t in server.provider.list_templates(conn, TEMPLATE_PREFIX)]
    return sorted((r for r in records if r is not None), key=lambda r: r.built_at, reverse=True)


def find_template(
    server: DatabaseServer, conn: Connection, hash_: str, project: str, environment: str
) -> TemplateRecord | None:
    """The finished template of `hash_` that `project`'s `environment` built, if any."""
    return next(
        (
            r
            for r in list_templates(server, conn)
            if r.plan_hash == hash_ and r.project == project and r.environment == environment
        ),
        None,
    )


def unavailable(provider_name: str, reason: str) -> TemplateUse:
    return TemplateUse("unavailable", None, f"templates are not available on {provider_name}: {reason}")


def _wait_for_lock(server: DatabaseServer, conn: Connection, name: str, wait: float) -> bool:
    deadline = time.monotonic() + wait
    while not server.provider.try_template_lock(conn, name, shared=True):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)
    return True


def try_clone(server: DatabaseServer, conn: Connection, name: str, wanted: PlanTemplate) -> TemplateUse:
    """Create database `name` (autocommit `conn` on the maintenance database) as a copy of the
    template `wanted` names. "cloned" when it did; "replayed" with the reason, and nothing
    created, when there is no such template or it is busy or gone.
    Only the environment's own templates are cloned: a template holds everything its source
    database held (a protected environment's mark included).

    Errors other than a busy or missing template are raised as they are (a name clash included,
    which the create stage handles as it does for an empty database)."""
    provider = server.provider
    hash_, policy = wanted.hash_, wanted.policy
    short = hash_[:12]
    record = find_template(server, conn, hash_, wanted.project, wanted.environment)
    if record is None:
        return TemplateUse(
            "replayed", hash_, f"no template of plan {short} on this server yet: built by replaying the plan"
        )
    if not _wait_for_lock(server, conn, record.database, policy.clone_wait):
        return TemplateUse(
            "replayed",
            hash_,
            f"template {record.database} of plan {short} is busy (being refreshed or dropped; waited "
            f"{policy.clone_wait:g} s, templates.clone_wait): built by replaying the plan",
        )
    try:
        provider.clone_database(conn, name, record.database)
    except DBAPIError as exc:
        failure = provider.template_failure(exc)
        if failure is None:
            raise
        why = "has another session open" if failure == "busy" else "was dropped meanwhile"
        return TemplateUse(
            "replayed",
            hash_,
            f"template {record.database} of plan {short} {why} ({describe(exc)}): built by replaying the plan",
        )
    finally:
        provider.template_unlock(conn, record.database, shared=True)
    return TemplateUse(
        "cloned",
        hash_,
        f"cloned from template {hash_} built by run {record.built_by_run}",
        template_database=record.database,
        built_by_run=record.built_by_run,
    )


def create_from_template(
    server: DatabaseServer, conn: Connection, name: str, wanted: PlanTemplate, *, collation: str | None = None
) -> TemplateUse:
    """`try_clone`, and where it cloned nothing, create `name` empty (to be replayed)."""
    use = try_clone(server, conn, name, wanted)
    if not use.cloned:
        server.provider.create_database(conn, name, collation=collation)
    return use


def staging_name(database: str) -> str:
    """Where the copy that replaces `database` is made before it takes the name. The prefix is
    dbinit's own: a database of this name is only ever a copy left by a run that died."""
    return f"{STAGING_PREFIX}{hashlib.sha256(database.encode()).hexdigest()[:32]}"


def replace_from_template(
    server: DatabaseServer, conn: Connection, name: str, wanted: PlanTemplate
) -> TemplateUse:
    """Rebuild the existing database `name` from the template `wanted` names: the copy is made under
    `staging_name(name)`, and only once it exists is `name` dropped and the copy renamed to it.
    Until then `name` is untouched, so a rebuild that cannot copy leaves it as it was; "replayed"
    (nothing dropped, nothing created) says why, and the caller drops and replays."""
    provider = server.provider
    staging = staging_name(name)
    provider.drop_database(conn, staging)
    use = try_clone(server, conn, staging, wanted)
    if not use.cloned:
        return use
    try:
        provider.drop_database(conn, name)
        provider.rename_database(conn, staging, name)
    except BaseException:
        provider.drop_database(conn, staging)
        raise
    return use


def record_clone(server: DatabaseServer, database: str, use: TemplateUse, run_id: str) -> None:
    """Write the clone into the new database, beside the ledger it inherited from the template."""
    with server.connect(database) as conn, conn.begin():
        ledger.clone_metadata.create_all(conn, checkfirst=True)
        conn.execute(
            ledger.clones.insert(),
            {
                "cloned_at": datetime.now(UTC),
                "template_hash": use.plan_hash,
                "template_database": use.template_database,
                "built_by_run": use.built_by_run,
                "cloned_by_run": run_id or "manual",
                "note": use.note,
            },
        )


def keep_template(
    server: DatabaseServer,
    *,
    source_database: str,
    hash_: str,
    policy: TemplatePolicy,
    project: str,
    environment: str,
    run_id: str,
    revisions: int,
) -> dict[str, Any]:
    """Keep a template of `source_database` (just built from empty and verified) for `hash_`, then
    drop this environment's templates beyond `policy.keep`. Never raises: what happened, or why
    nothing was kept, is returned for the response."""
    provider = server.provider
    name = template_name(hash_, project, environment)
    short = hash_[:12]
    try:
        with server.connect(autocommit=True) as conn:
            if not provider.try_template_lock(conn, name, shared=False):
                return {
                    "status": "not_kept",
                    "plan_hash": hash_,
                    "note": f"template {name} is in use by another run (cloning or building it): not refreshed",
                }
            try:
                present = {t.name: t for t in provider.list_templates(conn, name)}
                current = TemplateRecord.of(present[name]) if name in present else None
                if current is not None:
                    result: dict[str, Any] = {
                        "status": "exists",
                        "plan_hash": hash_,
                        "template_database": name,
                        "built_by_run": current.built_by_run,
                        "note": f"template of plan {short} already kept (built by run {current.built_by_run})",
                    }
                else:
                    if name in present:  # a copy left half-made by a run that died
                        provider.drop_template(conn, name)
                    record = TemplateRecord(
                        plan_hash=hash_,
                        database=name,
                        project=project,
                        environment=environment,
                        built_by_run=run_id or "manual",
                        built_at=datetime.now(UTC).isoformat(timespec="microseconds"),
                        source_database=source_database,
                        revisions=revisions,
                    )
                    try:
                        provider.copy_to_template(conn, name, source_database, record.comment())
                    except DBAPIError as exc:
                        if provider.template_failure(exc) != "busy":
                            raise
                        return {
                            "status": "not_kept",
                            "plan_hash": hash_,
                            "note": f"{source_database} had another session open, so it could not be "
                            f"copied ({describe(exc)}); the next build from empty keeps the template",
                        }
                    result = {
                        "status": "kept",
                        "plan_hash": hash_,
                        "template_database": name,
                        "built_by_run": record.built_by_run,
                        "note": f"kept as template {name} of plan {short}; runs that build this plan "
                        "from empty clone it",
                    }
            finally:
                provider.template_unlock(conn, name, shared=False)
            dropped, skipped = prune_templates(server, conn, project, environment, policy.keep, keep=name)
    except Exception as exc:  # the database is initialized and verified: a template is a bonus
        return {"status": "not_kept", "plan_hash": hash_, "note": f"template not kept: {describe(exc)}"}
    if dropped:
        result["dropped"] = dropped
    if skipped:
        result["not_dropped"] = skipped
    return result


def prune_templates(
    server: DatabaseServer, conn: Connection, project: str, environment: str, limit: int, *, keep: str
) -> tuple[list[str], list[str]]:
    """Drop the environment's templates beyond the newest `limit` (never `keep`), and copies left
    half-made by dead runs; a template in use is left for the next run. Returns (dropped, busy)."""
    provider = server.provider
    found = provider.list_templates(conn, TEMPLATE_PREFIX)
    mine = [
        r
        for r in list_templates(server, conn)
        if r.project == project and r.environment == environment and r.database != keep
    ]
    doomed = [r.database for r in mine[max(limit - 1, 0) :]]
    doomed += [t.name for t in found if TemplateRecord.of(t) is None and t.name != keep]
    dropped: list[str] = []
    busy: list[str] = []
    for name in doomed:
        if not provider.try_template_lock(conn, name, shared=False):
            busy.append(name)
            continue
        try:
            provider.drop_template(conn, name)
            dropped.append(name)
        except DBAPIError as exc:
            if provider.template_failure(exc) != "busy":
                raise
            busy.append(name)
        finally:
            provider.template_unlock(conn, name, shared=False)
    return dropped, busy
