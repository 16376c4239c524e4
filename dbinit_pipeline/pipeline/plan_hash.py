"""The plan of an initialization and its hash: what an approval is bound to.

The plan is the environment, the server (without credentials), the database, the hosting, the
`if_exists` policy and the ordered pending revisions with the checksums of their files. Its
hash is the sha256 of the plan as canonical JSON. `dbinit plan`, `dbinit approve` and the
approve stage all call `compute_plan`, so they agree as long as the world does.

The approve stage runs before provision, so the plan reads only what can be read without
provisioning anything:

- hosting `local`: the server is the URL in the connection variable; the ledger of the target
  database is read when the database exists (a server that does not answer is an error: a plan
  that cannot be read cannot be approved);
- hosting `embedded`: the server is the data directory `.dbinit/<env>/`; an initialized one is
  started (as provision would) and its ledger read; one never initialized has nothing applied;
- cloud hostings: the server is named by hosting, region and identifier (the endpoint is known
  only once the instance exists); provisioning's dry run finds an existing instance without
  creating anything, and its ledger is read; before the instance exists every revision is
  pending.

`if_exists: recreate` drops the database first, so then every revision is pending too.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import make_url

from dbinit_pipeline.database.providers import provider_for
from dbinit_pipeline.database.server import DatabaseServer, ServerRef
from dbinit_pipeline.infrastructure.cloud import cloud_identity
from dbinit_pipeline.infrastructure.provisioner import embedded_server_for, provision, server_from_env
from dbinit_pipeline.migrations import ledger
from dbinit_pipeline.migrations.loading import registry_for
from dbinit_pipeline.migrations.runner import pending_of
from dbinit_pipeline.safety.pinned import pin_sources

if TYPE_CHECKING:
    from dbinit_pipeline.configuration import LoadedConfig
    from dbinit_pipeline.migrations.ledger import LedgerEntry
    from dbinit_pipeline.pipeline.results import InitPlan

PLAN_FORMAT = 2  # 2: the models files are part of the plan
SHORT = 12


@dataclass(frozen=True)
class PendingRevision:
    package: str
    revision: str
    checksum: str


@dataclass(frozen=True)
class PlanDigest:
    """A plan as approvals see it, with where its pending revisions were read from."""

    environment: str
    server: str
    database_name: str
    hosting: str
    provider: str
    if_exists: str
    pending: tuple[PendingRevision, ...]
    source: str  # ledger | new database | new server
    # (package, sha256 of its models file): verify imports it, so an approval covers it
    models: tuple[tuple[str, str], ...] = ()
    # An adoption (schema/adopt.py): the revisions it records without running them.
    adopt: tuple[PendingRevision, ...] = ()
    accept_drift: bool = False
    # core.schema: where the core's scripts put its tables (absent from the document when unset,
    # so the hash of a plan with the default placement is what it always was)
    core_schema: str | None = None
    # What names this plan on the command line besides the environment and database (an
    # adoption's --adopt, --package/--at, --accept-drift); not part of the hash.
    command_flags: tuple[str, ...] = ()

    @property
    def document(self) -> dict[str, Any]:
        """Exactly what the hash covers."""
        document = {
            "format": PLAN_FORMAT,
            "environment": self.environment,
            "server": self.server,
            "database": self.database_name,
            "hosting": self.hosting,
            "provider": self.provider,
            "if_exists": self.if_exists,
            "pending": [[p.package, p.revision, p.checksum] for p in self.pending],
            "models": [list(m) for m in self.models],
            **({"core_schema": self.core_schema} if self.core_schema else {}),
        }
        if self.adopt:
            document["operation"] = "adopt"
            document["adopt"] = [[p.package, p.revision, p.checksum] for p in self.adopt]
            document["accept_drift"] = self.accept_drift
        return document

    @property
    def hash(self) -> str:
        return plan_hash(self.document)

    @property
    def short(self) -> str:
        return self.hash[:SHORT]

    def summary(self) -> dict[str, Any]:
        """The plan as shown to people (dry-run response, `dbinit approve`)."""
        return {
            "hash": self.hash,
            "environment": self.environment,
            "server": self.server,
            "database": self.database_name,
            "hosting": self.hosting,
            "if_exists": self.if_exists,
            "pending_revisions": [f"{p.package}:{p.revision}" for p in self.pending],
            "pending_source": self.source,
            **({"adopt_revisions": [f"{p.package}:{p.revision}" for p in self.adopt]} if self.adopt else {}),
        }


def plan_hash(document: dict[str, Any]) -> str:
    """The sha256 of a plan document as canonical JSON."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def differences(approved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What changed between an approved plan document and the current one, in words."""
    changes: list[str] = []
    for key in ("environment", "server", "database", "hosting", "provider", "if_exists"):
        if approved.get(key) != current.get(key):
            changes.append(f"{key} was {approved.get(key)!r}, is {current.get(key)!r}")
    before = {tuple(p[:2]): p[2] for p in approved.get("pending", [])}
    after = {tuple(p[:2]): p[2] for p in current.get("pending", [])}
    added = [f"{k[0]}:{k[1]}" for k in after if k not in before]
    gone = [f"{k[0]}:{k[1]}" for k in before if k not in after]
    edited = [f"{k[0]}:{k[1]}" for k in after if k in before and before[k] != after[k]]
    if added:
        changes.append("new pending revision(s): " + ", ".join(added[:10]))
    if gone:
        changes.append("no longer pending: " + ", ".join(gone[:10]))
    if edited:
        changes.append("file changed since approval: " + ", ".join(edited[:10]))
    models_before = {m[0]: m[1] for m in approved.get("models", [])}
    models_after = {m[0]: m[1] for m in current.get("models", [])}
    moved = sorted(
        k for k in set(models_before) | set(models_after) if models_before.get(k) != models_after.get(k)
    )
    if moved:
        changes.append("models changed: " + ", ".join(moved))
    if not changes and approved.get("pending") != current.get("pending"):
        changes.append("the order of the pending revisions changed")
    return changes or ["the plan format changed"]


def server_identity(ref: ServerRef) -> str:
    """provider://user@host:port: the server without credentials or database."""
    url = make_url(ref.url_display)
    port = url.port or provider_for(ref.provider).default_port
    user = f"{url.username}@" if url.username else ""
    return f"{ref.provider}://{user}{(url.host or 'localhost').lower()}:{port}"


def _locate(config: LoadedConfig, plan: InitPlan) -> tuple[str, ServerRef | None, str]:
    """(server identity, a server to read the ledger from or None, why None)."""
    if plan.hosting == "local":
        ref = server_from_env(config, plan)
        return server_identity(ref), ref, ""
    if plan.hosting == "embedded":
        identity = f"embedded:{embedded_server_for(config, plan.environment).pgdata}"
    elif plan.hosting in ("gcp-sql", "azure-sql"):
        identity = cloud_identity(config, plan.environment, plan.hosting)
    else:
        aws = config.environment(plan.environment).aws
        region = aws.region if aws else "default"
        name = (aws.identifier if aws else None) or f"{config.model.project}-{plan.environment}"
        identity = f"{plan.hosting}:{region}/{name}"
    # A dry run never creates anything: it starts an initialized embedded server, or finds
    # cloud infrastructure that exists, and says "would_provision" otherwise.
    found = provision(config, replace(plan, dry_run=True))
    if found.infrastructure == "would_provision":
        return identity, None, "new server"
    return identity, found.server, ""


def _applied(ref: ServerRef, database: str) -> dict[tuple[str, str], LedgerEntry] | None:
    """The ledger of `database`, or None when the database does not exist."""
    server = DatabaseServer(ref)
    with server.connect(autocommit=True) as conn:
        if not server.provider.database_exists(conn, database):
            return None
    with server.connect(database) as conn:
        entries = ledger.read(conn) if ledger.exists(conn) else {}
        conn.rollback()
    return entries


def compute_plan(config: LoadedConfig, plan: InitPlan) -> PlanDigest:
    """The plan of `plan`'s run as approvals see it (reads the server's ledger where it can)."""
    packages = registry_for(config, plan.run_id).ordered()
    identity, ref, source = _locate(config, plan)
    applied: dict[tuple[str, str], LedgerEntry] = {}
    if plan.if_exists == "recreate":
        source = "new database"
    elif ref is not None:
        found = _applied(ref, plan.database_name)
        if found is None:
            source = "new database"
        else:
            applied, source = found, "ledger"
    pending = tuple(PendingRevision(m.package, m.revision, m.checksum) for m in pending_of(packages, applied))
    return PlanDigest(
        environment=plan.environment,
        server=identity,
        database_name=plan.database_name,
        hosting=plan.hosting,
        provider=plan.provider,
        if_exists=plan.if_exists,
        pending=pending,
        source=source,
        models=pin_sources(packages).models,
        core_schema=config.model.core.schema_ if config.model.core.enabled else None,
    )
