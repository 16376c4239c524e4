"""Fleets: many databases of one environment (one per tenant), initialized by one job.

Each tenant goes through the same stages as `initialize_<env>` (validate, approve, provision,
create, core schema, package schemas, verify), as plain functions, with its own run lock, ledger,
verify, cleanup and response. A tenant never raises: its failure is its response, so one failing
tenant never stops, fails or rolls back another. `fleet_summary` names every failure.

At most `fleet.concurrency` tenants of an environment are initialized at once, whatever executes
them (processes, Celery workers, Kubernetes pods): each holds one of that many slots, server-side
session locks on the maintenance database, while it works.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from typing import Any

from dbinit_pipeline.configuration import FleetSettings, LoadedConfig
from dbinit_pipeline.database.server import DatabaseServer, ServerRef
from dbinit_pipeline.errors import (
    ConfigurationError,
    DbinitError,
    ErrorCode,
    InputError,
    LockTimeout,
    classify,
)
from dbinit_pipeline.infrastructure.provisioner import ServerFound, provision
from dbinit_pipeline.migrations.loading import registry_for
from dbinit_pipeline.pipeline.cleanup import cleanup_after_failure
from dbinit_pipeline.pipeline.core_schema import apply_packages
from dbinit_pipeline.pipeline.create import database_ready
from dbinit_pipeline.pipeline.fleet_server import ProvisionOnce
from dbinit_pipeline.pipeline.guard import refuse_protected_target
from dbinit_pipeline.pipeline.responses import error_response, success_response
from dbinit_pipeline.pipeline.results import (
    CoreApplied,
    DatabaseReady,
    InitPlan,
    PackagesApplied,
    Provisioned,
)
from dbinit_pipeline.pipeline.templates import find_template, template_plan_hash, template_policy
from dbinit_pipeline.pipeline.validate import InitParams, build_plan
from dbinit_pipeline.pipeline.verify import verify_applied
from dbinit_pipeline.redaction import redact_data
from dbinit_pipeline.safety.approval import require_approval
from dbinit_pipeline.safety.run_lock import acquire_run_lock, release_run_lock

OPERATION = "initialize-fleet"
_SLOT_POLL_S = 0.2


def fleet_settings(config: LoadedConfig, environment: str) -> FleetSettings:
    fleet = config.environment(environment).fleet
    if fleet is None:
        raise ConfigurationError(
            f"environments.{environment}.fleet is not set in {config.path}",
            suggestions=[
                f"Add environments.{environment}.fleet: {{tenants: [acme, globex], concurrency: 4}}."
            ],
        )
    return fleet


def partition_set_name(environment: str) -> str:
    """The Dagster dynamic partition set whose keys are tenants of `environment`'s fleet."""
    return f"dbinit_tenants_{environment}"


def tenant_names(configured: Sequence[str], added: Sequence[str]) -> list[str]:
    """The configured tenants, then those added to the partition set, each once, in that order."""
    return list(dict.fromkeys([*configured, *added]))


def tenant_database(config: LoadedConfig, environment: str, tenant: str) -> str:
    """The tenant's database name from `fleet.database_name` (`{project}`, `{environment}`, `{tenant}`)."""
    pattern = fleet_settings(config, environment).database_name
    key = f"environments.{environment}.fleet.database_name"
    if "{tenant}" not in pattern:
        raise ConfigurationError(
            f"{key} {pattern!r} must contain {{tenant}} (every tenant needs its own database) ({config.path})",
            suggestions=["For example '{project}_{environment}_{tenant}' (the default)."],
        )
    try:
        raw = pattern.format(project=config.model.project, environment=environment, tenant=tenant)
    except (KeyError, IndexError, ValueError):
        raise ConfigurationError(
            f"{key} {pattern!r} uses an unknown placeholder ({config.path})",
            suggestions=["Use only {project}, {environment} and {tenant}, e.g. '{project}_{tenant}'."],
        ) from None
    return re.sub(r"[^a-z0-9_]+", "_", raw.lower())


def first_builds_template(config: LoadedConfig, environment: str, run_id: str) -> bool:
    """Whether the fleet should build one tenant first, alone, so that the others clone its
    template: templates are on, the server can copy databases and has no template of the plan."""
    if not template_policy(config, environment).enabled:
        return False
    server = DatabaseServer(server_of(config, environment, run_id))
    if not server.provider.templates_supported:
        return False
    hash_ = template_plan_hash(registry_for(config, run_id).ordered(), server.provider.name)
    with server.connect(autocommit=True) as conn:
        return find_template(server, conn, hash_, config.model.project, environment) is None


@contextmanager
def fleet_slot(server: DatabaseServer, environment: str, limit: int, timeout: float) -> Iterator[int]:
    """Hold one of `limit` slots of the environment's fleet on this server; waits up to `timeout`."""
    provider = server.provider
    deadline = time.monotonic() + timeout
    with ExitStack() as stack:
        conn = stack.enter_context(server.connect())
        while True:
            for slot in range(limit):
                try:
                    stack.enter_context(provider.session_lock(conn, f"fleet:{environment}:{slot}", 0))
                except LockTimeout:
                    if conn.in_transaction():
                        conn.rollback()
                    continue
                yield slot
                return
            if time.monotonic() >= deadline:
                raise LockTimeout(
                    f"All {limit} fleet slots of {environment!r} stayed busy for {timeout:.0f} s",
                    suggestions=[
                        "Another fleet run of this environment is working: wait for it, or raise "
                        f"environments.{environment}.fleet.concurrency.",
                    ],
                )
            time.sleep(_SLOT_POLL_S)


def initialize_tenant(
    config: LoadedConfig,
    environment: str,
    tenant: str,
    *,
    run_id: str,
    record: Callable[[dict[str, Any]], object] | None = None,
    provisioner: Callable[[LoadedConfig, InitPlan], ServerFound] = provision,
) -> dict[str, Any]:
    """Initialize one tenant's database and return its response (success or error); never raises.

    The ledger names the run (`run_id`); the run lock is held under `<run_id>/<tenant>`, so tenants
    that one process initializes never share a lock. `provisioner` finds the server (a step
    passes one `ProvisionOnce` to all its tenants)."""
    started = time.time()
    stage = "validate"
    plan: InitPlan | None = None
    database: DatabaseReady | None = None
    lock_owner = f"{run_id}/{tenant}"
    locked = False
    try:
        if not tenant or not tenant.replace("_", "").isalnum() or tenant != tenant.lower():
            raise InputError(
                f"Tenant name {tenant!r} must be lowercase letters, digits and underscores",
                code=ErrorCode.INVALID_TENANT,
                suggestions=["Rename the tenant, e.g. acme_corp."],
            )
        name = tenant_database(config, environment, tenant)
        plan = build_plan(config, environment, InitParams(database_name=name), run_id=run_id)
        stage = "approve"
        approved = require_approval(config, plan, run_id=run_id, scheduled=False)
        stage = "provision"
        found = provisioner(config, plan)
        provisioned = Provisioned(approved, found.server, found.infrastructure, found.details)
        stage = "create"
        fleet = fleet_settings(config, environment)
        with fleet_slot(
            DatabaseServer(found.server), environment, fleet.concurrency, _slot_timeout(config)
        ) as slot:
            acquire_run_lock(config, found.server, plan, lock_owner)
            locked = True
            refuse_protected_target(provisioned, recreating=plan.if_exists == "recreate")
            database = database_ready(provisioned)
            stage = "core_schema"
            registry = registry_for(config, run_id)
            core = CoreApplied(database, apply_packages(config, database, [registry.core]))
            stage = "package_schemas"
            packages = PackagesApplied(core, apply_packages(config, database, registry.packages()))
            stage = "verify"
            verified = verify_applied(config, packages)
            release_run_lock(lock_owner)
            locked = False
        response = success_response(verified, run_id=run_id)
        response["result"]["fleet"] = {
            "tenant": tenant,
            "slot": slot,
            "started": started,
            "finished": time.time(),
        }
    except Exception as exc:  # every failure becomes this tenant's response
        error: DbinitError = classify(exc, during=stage.replace("_", " "))
        cleanup = cleanup_after_failure(stage, database)
        if locked and release_run_lock(lock_owner):
            cleanup["lock"] = "released"
        response = error_response(
            error, stage=stage, plan=plan, environment=environment, run_id=run_id, cleanup=cleanup
        )
        response["tenant"] = tenant
        response["fleet"] = {"tenant": tenant, "started": started, "finished": time.time()}
    response = dict(redact_data(response))
    if record is not None:
        record(response)
    return response


def _slot_timeout(config: LoadedConfig) -> float:
    """A tenant waits for a slot as long as the others may take: generous, never forever."""
    return max(config.model.safety.lock_timeout, 1.0) * 60


def fleet_summary(environment: str, responses: Sequence[dict[str, Any]], *, run_id: str) -> dict[str, Any]:
    """One response for the whole fleet: every tenant's outcome, and every failure by name."""
    succeeded = [_tenant_of(r) for r in responses if r.get("status") == "success"]
    failed = [
        {
            "tenant": _tenant_of(r),
            "database": r.get("database_name"),
            "stage": r.get("stage"),
            "code": r.get("code"),
            "error": r.get("error"),
            "cleanup": r.get("cleanup"),
        }
        for r in responses
        if r.get("status") != "success"
    ]
    cloned = sum(
        1
        for r in responses
        if r.get("status") == "success"
        and r["result"].get("template", {}).get("used", {}).get("status") == "cloned"
    )
    base: dict[str, Any] = {
        "operation": OPERATION,
        "environment": environment,
        "run_id": run_id,
        "tenants": len(responses),
        "succeeded": succeeded,
        "failed": failed,
        "cloned_from_template": cloned,
    }
    if not failed:
        return {
            "status": "success",
            **base,
            "message": f"{len(succeeded)} tenant database(s) of {environment} initialized and verified"
            + (f" ({cloned} cloned from a template)" if cloned else ""),
        }
    names = "; ".join(f"{f['tenant']} ({f['stage']}: {f['error']})" for f in failed)
    return {
        "status": "error",
        **base,
        "stage": "fleet",
        "code": "fleet_tenants_failed",
        "error": f"{len(failed)} of {len(responses)} tenant(s) of {environment} failed: {names}",
        "recovery": {
            "suggestions": [
                "Each failed tenant's own response (operation log) says what to do; the others are done.",
                "Fix the cause and run the fleet again: tenants already initialized have nothing to apply.",
            ]
        },
        "details": {"failed_tenants": [f["tenant"] for f in failed]},
    }


def _tenant_of(response: dict[str, Any]) -> str:
    if "tenant" in response:
        return str(response["tenant"])
    return str(response.get("result", {}).get("fleet", {}).get("tenant", "?"))


def initialize_batch(
    config: LoadedConfig,
    environment: str,
    tenants: Sequence[str],
    *,
    run_id: str,
    record: Callable[[dict[str, Any]], object] | None = None,
) -> list[dict[str, Any]]:
    """The tenants of one step, up to `fleet.concurrency` at once on threads (the work waits on
    the server); the slots bound them together with every other step's. Responses in order."""
    workers = min(fleet_settings(config, environment).concurrency, len(tenants))
    once = ProvisionOnce()

    def one(tenant: str) -> dict[str, Any]:
        return initialize_tenant(config, environment, tenant, run_id=run_id, record=record, provisioner=once)

    if workers <= 1:
        return [one(t) for t in tenants]
    with ThreadPoolExecutor(workers, thread_name_prefix="tenant") as pool:
        return list(pool.map(one, tenants))


def as_batches(tenants: Sequence[str], size: int) -> list[list[str]]:
    return [list(tenants[i : i + size]) for i in range(0, len(tenants), size)]


def server_of(config: LoadedConfig, environment: str, run_id: str) -> ServerRef:
    """The environment's server (provisioned as the first stage would)."""
    plan = build_plan(config, environment, InitParams(), run_id=run_id)
    return provision(config, replace(plan, dry_run=False)).server
