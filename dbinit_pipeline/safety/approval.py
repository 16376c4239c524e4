"""The approval gate: protected environments need a recorded approval of the run's exact plan.

An approval is a row in the state store: who approved, who asked, when, the environment, the
database, the plan's hash and an expiry. `dbinit request` asks for one, `dbinit approve` records
one (only an approver configured for the environment, never the one who asked), and the
approve stage uses one: it finds an unexpired, unused approval of the current plan hash, marks
it used by the run (one approval serves one run) and goes on. Otherwise it fails at once; it
never waits inside a run. Default deny.
"""

from __future__ import annotations

import re
import shlex
import sys
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TextIO

from dbinit_pipeline.clock import stamp
from dbinit_pipeline.configuration import LoadedConfig, find_config_path
from dbinit_pipeline.errors import ApprovalError, ErrorCode, InputError
from dbinit_pipeline.notification import Notification, notifier_from_config
from dbinit_pipeline.pipeline.plan_hash import PlanDigest, compute_plan, differences
from dbinit_pipeline.pipeline.results import Approved, InitPlan
from dbinit_pipeline.pipeline.validate import default_database_name
from dbinit_pipeline.safety.state_store import (
    ApprovalRecord,
    ApprovalRequest,
    StateStore,
    utcnow,
)

_DURATION = re.compile(r"^(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$")
MAX_TTL = timedelta(days=30)
NAME_MAX = 128


def parse_duration(text: str, *, source: str) -> timedelta:
    """'90s', '15m', '24h', '7d' or combinations ('1h30m'); `source` names the setting in errors."""
    compact = re.sub(r"\s+", "", str(text)).lower()
    match = _DURATION.match(compact)
    if not compact or match is None or not any(match.groupdict().values()):
        raise InputError(
            f"{source}: {text!r} is not a duration",
            code=ErrorCode.INVALID_DURATION,
            suggestions=["Write a number and a unit: 90s, 15m, 24h, 7d, or combined: 1h30m."],
        )
    parts = {k: int(v) for k, v in match.groupdict().items() if v}
    try:
        duration = timedelta(
            days=parts.get("d", 0),
            hours=parts.get("h", 0),
            minutes=parts.get("m", 0),
            seconds=parts.get("s", 0),
        )
    except OverflowError:
        duration = MAX_TTL + timedelta(seconds=1)  # beyond any limit: refused below
    if duration <= timedelta(0) or duration > MAX_TTL:
        raise InputError(
            f"{source}: {text!r} must be more than 0s and at most 30d",
            code=ErrorCode.INVALID_DURATION,
            suggestions=["An approval is for one run soon after it is given: 24h is the default."],
        )
    return duration


def _person(name: str, *, flag: str = "--by") -> str:
    cleaned = " ".join(str(name).split())
    if not cleaned or len(cleaned) > NAME_MAX or not cleaned.isprintable():
        raise InputError(
            f"{flag}: {name[:40]!r} is not a name (give your own name, 1 to {NAME_MAX} printable characters)",
            code=ErrorCode.INVALID_NAME,
            suggestions=[f"For example {flag} alice."],
        )
    return cleaned


REASON_MAX = 500


def _reason(text: str | None) -> str | None:
    """A reason as approvers and webhooks will see it: printable text on one line, or refused."""
    if text is None:
        return None
    if len(text) > REASON_MAX or any(not ch.isprintable() for ch in text):
        raise InputError(
            f"--reason must be printable text on one line, at most {REASON_MAX} characters "
            "(no control characters, terminal escapes, CR or LF)",
            code=ErrorCode.INVALID_REASON,
            suggestions=['For example --reason "release 7: adds invoices"'],
        )
    return text.strip() or None


def approvers_of(config: LoadedConfig, environment: str) -> list[str]:
    return list(config.model.safety.approvers.get(environment, []))


def command_for(
    config: LoadedConfig, plan: InitPlan, verb: str, *, by: str = "NAME", digest: PlanDigest | None = None
) -> str:
    """The exact `dbinit approve|request|adopt` command for this plan (same database and policy,
    and what `digest` adds: an adoption's flags)."""
    env = config.environment(plan.environment)
    configured = env.database_name or default_database_name(config.model.project, plan.environment)
    parts = ["dbinit", verb, plan.environment]
    if plan.database_name != configured:
        parts += ["--database-name", plan.database_name]
    if plan.if_exists != env.if_exists and verb != "adopt":
        parts += ["--if-exists", plan.if_exists]
    if digest is not None:
        parts += [f for f in digest.command_flags if verb != "adopt" or f != "--adopt"]
    command = shlex.join([*parts, "--by", by] if verb in ("approve", "request") else parts)
    if config.path != find_config_path():
        # Kept in front, so that the command still reads "dbinit approve <env> ...".
        command = f"DBINIT_CONFIG={shlex.quote(str(config.path))} {command}"
    return command


def _needs_approval(config: LoadedConfig, plan: InitPlan) -> None:
    if not plan.needs_approval:
        raise ApprovalError(
            f"Environment {plan.environment!r} needs no approval: it is not in "
            f"safety.protected_environments and has no require_approval ({config.path})",
            code=ErrorCode.APPROVAL_NOT_REQUIRED,
            suggestions=[f"Run it directly: dbinit init {plan.environment}"],
        )


def _require_approvers(config: LoadedConfig, environment: str) -> list[str]:
    names = approvers_of(config, environment)
    if not names:
        raise ApprovalError(
            f"No approvers are configured for environment {environment!r}: safety.approvers."
            f"{environment} is empty in {config.path}",
            code=ErrorCode.NO_APPROVERS,
            suggestions=[f"Add safety.approvers.{environment}: [name, ...] to {config.path}."],
        )
    return names


@dataclass(frozen=True)
class RequestOutcome:
    request: ApprovalRequest
    digest: PlanDigest
    channel: str  # notifier | stderr
    delivery_errors: list[str]


def _notify(
    config: LoadedConfig, notification: Notification, fallback: TextIO | None
) -> tuple[str, list[str]]:
    """Through the notifier when one is configured, else as plain text on `fallback`."""
    notifier = notifier_from_config(config)
    if notifier.configured:
        return "notifier", notifier.send(notification)
    if fallback is None:
        return "none", []
    fallback.write(notification.plain() + "\n")
    fallback.flush()
    return "stderr", []


def _fields(digest: PlanDigest, command: str) -> dict[str, str]:
    return {
        "Environment": digest.environment,
        "Database": digest.database_name,
        "Server": digest.server,
        "Plan hash": digest.hash,
        "Pending revisions": str(len(digest.pending)),
        "Approve with": command,
    }


def request_approval(
    config: LoadedConfig,
    plan: InitPlan,
    *,
    by: str,
    reason: str | None = None,
    fallback: TextIO | None = sys.stderr,
    now: datetime | None = None,
    digest: PlanDigest | None = None,
) -> RequestOutcome:
    """Record a request to approve the current plan and tell the approvers."""
    requester = _person(by)
    reason = _reason(reason)
    _needs_approval(config, plan)
    approvers = _require_approvers(config, plan.environment)
    digest = digest or compute_plan(config, plan)
    request = ApprovalRequest(
        id=uuid.uuid4().hex,
        environment=plan.environment,
        database_name=plan.database_name,
        plan_hash=digest.hash,
        plan=digest.document,
        requested_by=requester,
        reason=reason,
        requested_at=now or utcnow(),
    )
    StateStore.for_config(config).add_request(request)
    others = [a for a in approvers if a.casefold() != requester.casefold()] or approvers
    notification = Notification(
        title=f"Approval requested: initialize {plan.database_name} ({plan.environment})",
        text=(
            f"{requester} asks to initialize database {plan.database_name} of the protected environment "
            f"{plan.environment}: {len(digest.pending)} pending revision(s). "
            + (f"Reason: {reason}. " if reason else "")
            + f"Approvers: {', '.join(others)}."
        ),
        fields=_fields(digest, command_for(config, plan, "approve", digest=digest)),
    )
    channel, errors = _notify(config, notification, fallback)
    return RequestOutcome(request, digest, channel, errors)


def approve_plan(
    config: LoadedConfig,
    plan: InitPlan,
    *,
    by: str,
    reason: str | None = None,
    ttl: str | None = None,
    expected_hash: str | None = None,
    now: datetime | None = None,
    digest: PlanDigest | None = None,
) -> tuple[ApprovalRecord, PlanDigest]:
    """Record `by`'s approval of the current plan; only a configured approver, never the requester."""
    approver = _person(by)
    reason = _reason(reason)
    _needs_approval(config, plan)
    names = _require_approvers(config, plan.environment)
    if approver.casefold() not in {n.casefold() for n in names}:
        raise ApprovalError(
            f"{approver!r} is not an approver of environment {plan.environment!r} "
            f"(safety.approvers.{plan.environment}: {', '.join(names)})",
            code=ErrorCode.APPROVER_UNKNOWN,
            suggestions=[
                f"Ask one of {', '.join(names)} to approve.",
                f"Or add {approver!r} to safety.approvers.{plan.environment} in {config.path}.",
            ],
        )
    lifetime = (
        parse_duration(ttl, source="--ttl")
        if ttl is not None
        else parse_duration(config.model.safety.approval_ttl, source="safety.approval_ttl")
    )
    digest = digest or compute_plan(config, plan)
    if expected_hash is not None:
        wanted = expected_hash.strip().lower()
        if len(wanted) < 8 or not digest.hash.startswith(wanted):
            raise ApprovalError(
                f"The plan you reviewed ({expected_hash[:64]}) is not the current plan of "
                f"{plan.database_name} ({digest.hash}); nothing was approved",
                code=ErrorCode.PLAN_CHANGED,
                suggestions=[
                    f"Review the current plan: dbinit plan {plan.environment}, then approve its hash.",
                    "Give at least the first 8 characters of the hash to --plan-hash.",
                ],
            )
    store = StateStore.for_config(config)
    asked = [
        r for r in store.requests_for(plan.environment, plan.database_name) if r.plan_hash == digest.hash
    ]
    if any(r.requested_by.casefold() == approver.casefold() for r in asked):
        others = [n for n in names if n.casefold() != approver.casefold()]
        raise ApprovalError(
            f"{approver!r} requested this plan of {plan.database_name} and cannot approve it too",
            code=ErrorCode.SELF_APPROVAL,
            suggestions=[
                f"Ask another approver of {plan.environment!r}: {', '.join(others) or '(none configured)'}."
            ],
        )
    moment = now or utcnow()
    record = ApprovalRecord(
        id=uuid.uuid4().hex,
        environment=plan.environment,
        database_name=plan.database_name,
        plan_hash=digest.hash,
        plan=digest.document,
        approved_by=approver,
        requested_by=asked[0].requested_by if asked else None,
        reason=reason,
        approved_at=moment,
        expires_at=moment + lifetime,
    )
    store.add_approval(record)
    return record, digest


def _refusal(
    config: LoadedConfig, plan: InitPlan, digest: PlanDigest, records: list[ApprovalRecord], now: datetime
) -> ApprovalError:
    """Why no approval serves this run, with the command that fixes it."""
    command = command_for(config, plan, "approve", digest=digest)
    names = approvers_of(config, plan.environment)
    who = f" (approvers of {plan.environment}: {', '.join(names)})" if names else ""
    same = [r for r in records if r.plan_hash == digest.hash]
    expired = [r for r in same if r.used_at is None and r.expired(now)]
    changed = [r for r in records if r.plan_hash != digest.hash and r.used_at is None]
    used = [r for r in same if r.used_at is not None]
    target = f"database {plan.database_name!r} of the protected environment {plan.environment!r}"
    if expired:
        r = expired[0]
        code = ErrorCode.APPROVAL_EXPIRED
        reason = (
            f"the approval of this plan by {r.approved_by} expired at {stamp(r.expires_at)} "
            f"(given {stamp(r.approved_at)})"
        )
    elif changed:
        r = changed[0]
        code = ErrorCode.PLAN_CHANGED
        reason = (
            f"the plan changed since {r.approved_by} approved it at {stamp(r.approved_at)}: approved plan "
            f"{r.plan_hash[:12]}, current plan {digest.short}; "
            + "; ".join(differences(r.plan, digest.document))
        )
    elif used:
        r = used[0]
        code = ErrorCode.APPROVAL_USED
        reason = (
            f"the approval of this plan by {r.approved_by} was already used by run {r.used_by_run} "
            f"at {stamp(r.used_at or now)}; one approval serves one run"
        )
    else:
        code = ErrorCode.APPROVAL_MISSING
        reason = "no approval exists for this plan"
    doing = "Adopting" if digest.adopt else "Initializing"
    message = f"{doing} {target} needs an approval of plan {digest.short}: {reason}"
    then = (
        f"Then run the adoption again: {command_for(config, plan, 'adopt', digest=digest)}"
        if digest.adopt
        else "Then re-execute this run from failure in the Dagster UI, or launch it again "
        f"(dbinit init {plan.environment}; in CI: approve, then dagster job execute)."
    )
    suggestions = [
        f"An approver runs: {command}{who}",
        then,
        f"To ask for it: {command_for(config, plan, 'request', digest=digest)}",
        f"Review the plan first: dbinit plan {plan.environment}",
    ]
    if not names:
        suggestions.insert(0, f"No approvers are configured: add safety.approvers.{plan.environment}.")
    return ApprovalError(
        message,
        code=code,
        suggestions=suggestions,
        details={"plan_hash": digest.hash, "reason": code, "command": command},
    )


def _approved(plan: InitPlan, record: ApprovalRecord, digest: PlanDigest, command: str) -> Approved:
    return Approved(
        plan=plan,
        required=True,
        approved_by=record.approved_by,
        approval_id=record.id,
        plan_hash=digest.hash,
        approve_command=command,
        approved_pending=tuple((p.package, p.revision, p.checksum) for p in digest.pending),
    )


def require_approval(
    config: LoadedConfig,
    plan: InitPlan,
    *,
    run_id: str = "",
    scheduled: bool = False,
    now: datetime | None = None,
    digest: PlanDigest | None = None,
) -> Approved:
    """Pass a plan that needs no approval; use a recorded approval of a protected one, or refuse."""
    if scheduled and plan.protected:
        raise InputError(
            f"Scheduled runs are refused for the protected environment {plan.environment!r}",
            code=ErrorCode.SCHEDULE_REFUSED,
            suggestions=["Rebuild schedules are for throw-away environments; launch this run by hand."],
        )
    if not plan.needs_approval:
        digest = (digest or compute_plan(config, plan)) if plan.dry_run else None
        return Approved(plan=plan, required=False, plan_hash=digest.hash if digest else None)
    digest = digest or compute_plan(config, plan)
    command = command_for(config, plan, "approve", digest=digest)
    if plan.dry_run:
        return Approved(plan=plan, required=True, plan_hash=digest.hash, approve_command=command)
    run = run_id or plan.run_id
    moment = now or utcnow()
    store = StateStore.for_config(config)
    records = store.approvals_for(plan.environment, plan.database_name)
    for r in records:
        if run and r.used_by_run == run and r.plan_hash == digest.hash:
            return _approved(plan, r, digest, command)
    usable = [
        r for r in records if r.plan_hash == digest.hash and r.used_at is None and not r.expired(moment)
    ]
    for r in sorted(usable, key=lambda r: r.expires_at):  # the one that would lapse first
        if store.use_approval(r.id, run or "manual", moment):
            return _approved(plan, r, digest, command)
    refusal = _refusal(config, plan, digest, records, moment)
    notifier = notifier_from_config(config)
    if notifier.configured:
        errors = notifier.send(
            Notification(
                title=f"Approval needed: initialize {plan.database_name} ({plan.environment})",
                text=refusal.message,
                fields=_fields(digest, command),
            )
        )
        refusal.details["approvers_notified"] = not errors
        if errors:
            refusal.details["notification_errors"] = errors
    raise refusal
