"""Approvals bound to the plan: request, approve, use once; every refusal says why and how to fix it."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from dagster import DagsterInstance

from dbinit_pipeline.cli import main
from dbinit_pipeline.migrations.core.models import CORE_TABLES
from dbinit_pipeline.migrations.loading import registry_for
from dbinit_pipeline.orchestration.jobs import build_job
from dbinit_pipeline.safety.approval import parse_duration
from dbinit_pipeline.safety.state_store import STATE_URL_VAR, ApprovalRecord, utcnow
from dbinit_pipeline_tests.conftest import PgServer, Project
from dbinit_pipeline_tests.support.safety import (
    DBINIT,
    cli,
    store,
    subprocess_env,
    with_approvers,
)


@pytest.fixture(scope="module")
def pg(embedded_pg: PgServer) -> PgServer:
    """Approvals do not depend on the server: the embedded one is enough (the run lock, cleanup
    and kill tests run on every server under test)."""
    return embedded_pg


def _suggestions(response: dict[str, object]) -> str:
    recovery = response["recovery"]
    assert isinstance(recovery, dict)
    return "\n".join(recovery["suggestions"])


def test_plan_hash_of_dbinit_plan_is_what_approve_binds_and_the_run_uses(project: Project) -> None:
    with_approvers(project)
    name = project.database()
    code, planned, _ = cli(project, "plan", "production", "--database-name", name)
    assert code == 0, planned
    plan_hash = planned["result"]["plan"]["hash"]
    assert len(plan_hash) == 64
    assert planned["result"]["plan_hash"] == plan_hash
    assert planned["result"]["plan"]["approval_required"] is True
    assert "dbinit approve production" in planned["next_steps"][0]
    assert not project.server.database_exists(name), "a dry run creates nothing"
    sql = io.StringIO()
    with contextlib.redirect_stdout(sql), contextlib.redirect_stderr(io.StringIO()):
        assert (
            main(
                ["--config", str(project.config_path), "plan", "production", "--database-name", name, "--sql"]
            )
            == 0
        )
    assert sql.getvalue().startswith(f"-- plan {plan_hash}\n")

    code, approved, _ = cli(project, "approve", "production", "--database-name", name, "--by", "alice")
    assert code == 0, approved
    assert approved["result"]["plan"]["hash"] == plan_hash
    core = registry_for(project.config()).core
    assert approved["result"]["plan"]["pending_revisions"] == [f"core:{m.revision}" for m in core.migrations]
    assert approved["result"]["plan"]["pending_source"] == "new database"

    response = project.run("production", database_name=name)
    assert response["status"] == "success", response
    assert response["result"]["plan_hash"] == plan_hash
    assert response["result"]["approval"] == {
        "required": True,
        "approved_by": "alice",
        "approval_id": approved["result"]["approval_id"],
    }
    assert set(CORE_TABLES) <= project.server.tables(name)
    [record] = store(project).approvals_for("production", name)
    assert record.used_by_run == response["result"]["run_id"]
    assert record.used_at is not None


def test_missing_approval_fails_at_once_and_the_exact_command_fixes_it(project: Project) -> None:
    with_approvers(project)
    name = project.database()
    started = time.monotonic()
    response = project.run("production", database_name=name)
    assert time.monotonic() - started < 30, "the approve stage must never wait for an approval"
    assert response["status"] == "error"
    assert response["stage"] == "approve"
    assert response["code"] == "approval_missing"
    assert "no approval exists" in response["error"]
    assert response["cleanup"]["database"] == "untouched"
    assert not project.server.database_exists(name)
    command = response["details"]["command"]
    assert f"dbinit approve production --database-name {name} --by NAME" in command
    assert command in _suggestions(response)
    assert "alice, bob" in _suggestions(response)

    # The command from the error, as an approver types it in a shell, is all it takes.
    env = subprocess_env(project, PATH=f"{DBINIT.parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("DBINIT_CONFIG")
    done = subprocess.run(
        ["sh", "-c", command.replace("--by NAME", "--by bob")],
        env=env,
        cwd=project.root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    second = project.run("production", database_name=name)
    assert second["status"] == "success", second
    assert second["result"]["approval"]["approved_by"] == "bob"


def test_expired_approval_is_refused_and_says_so(project: Project) -> None:
    with_approvers(project)
    name = project.database()
    code, approved, _ = cli(
        project, "approve", "production", "--database-name", name, "--by", "alice", "--ttl", "1s"
    )
    assert code == 0, approved
    time.sleep(1.2)
    response = project.run("production", database_name=name)
    assert response["code"] == "approval_expired", response
    assert "expired" in response["error"]
    assert "alice" in response["error"]
    assert not project.server.database_exists(name)
    [record] = store(project).approvals_for("production", name)
    assert record.used_at is None, "an expired approval is never used"


def test_one_approval_serves_one_run(project: Project) -> None:
    with_approvers(project, production_if_exists="reuse")
    name = project.database()
    # The database is already initialized (through dev), so both production runs have the same
    # plan: nothing pending. Only the use of the approval differs.
    assert project.run("dev", database_name=name)["status"] == "success"
    assert cli(project, "approve", "production", "--database-name", name, "--by", "bob")[0] == 0
    first = project.run("production", database_name=name)
    assert first["status"] == "success", first
    second = project.run("production", database_name=name)
    assert second["status"] == "error"
    assert second["code"] == "approval_used"
    assert first["result"]["run_id"] in second["error"]
    assert "one approval serves one run" in second["error"]


def test_an_approval_is_used_atomically(project: Project) -> None:
    with_approvers(project)
    name = project.database()
    code, approved, _ = cli(project, "approve", "production", "--database-name", name, "--by", "alice")
    assert code == 0
    state = store(project)
    approval_id = approved["result"]["approval_id"]
    assert state.use_approval(approval_id, "run-one", utcnow()) is True
    assert state.use_approval(approval_id, "run-two", utcnow()) is False
    [record] = state.approvals_for("production", name)
    assert record.used_by_run == "run-one"


def test_unknown_approver_is_refused(project: Project) -> None:
    with_approvers(project)
    name = project.database()
    code, response, _ = cli(project, "approve", "production", "--database-name", name, "--by", "mallory")
    assert code == 1
    assert response["status"] == "error"
    assert response["code"] == "approver_unknown"
    assert "'mallory' is not an approver" in response["error"]
    assert "alice, bob" in response["error"]
    assert store(project).approvals_for("production", name) == []
    assert project.run("production", database_name=name)["code"] == "approval_missing"


def test_the_requester_cannot_approve_their_own_request(project: Project) -> None:
    with_approvers(project)
    name = project.database()
    code, requested, stderr = cli(
        project, "request", "production", "--database-name", name, "--by", "alice", "--reason", "release 7"
    )
    assert code == 0, requested
    assert requested["result"]["notified_through"] == "stderr"
    assert "dbinit approve production" in stderr, "without a notifier the request goes to stderr"
    assert "release 7" in stderr
    [request] = store(project).requests_for("production", name)
    assert request.requested_by == "alice"
    assert request.plan_hash == requested["result"]["plan"]["hash"]

    code, refused, _ = cli(project, "approve", "production", "--database-name", name, "--by", "Alice")
    assert code == 1
    assert refused["code"] == "self_approval"
    assert "bob" in _suggestions(refused)
    code, approved, _ = cli(project, "approve", "production", "--database-name", name, "--by", "bob")
    assert code == 0, approved
    assert approved["result"]["requested_by"] == "alice"
    assert project.run("production", database_name=name)["status"] == "success"


def test_plan_changed_after_approval_is_refused_with_what_changed(project: Project) -> None:
    with_approvers(project)
    name = project.database()
    assert cli(project, "approve", "production", "--database-name", name, "--by", "alice")[0] == 0
    project.write_package(
        "billing", migrations=[("bill0001", None, "op.create_table('invoices', sa.Column('id', sa.Integer))")]
    )
    response = project.run("production", database_name=name)
    assert response["code"] == "plan_changed", response
    assert "new pending revision(s): billing:bill0001" in response["error"]
    assert not project.server.database_exists(name)

    # Approve the new plan, then edit a pending file: the checksum is part of the plan.
    assert cli(project, "approve", "production", "--database-name", name, "--by", "bob")[0] == 0
    migration = next((project.root / "packages" / "billing" / "migrations").glob("*.py"))
    migration.write_text(migration.read_text().replace("'invoices'", "'invoices_v2'"))
    response = project.run("production", database_name=name)
    assert response["code"] == "plan_changed", response
    assert "file changed since approval: billing:bill0001" in response["error"]


def test_approve_refuses_a_plan_hash_the_approver_did_not_review(project: Project) -> None:
    with_approvers(project)
    name = project.database()
    code, planned, _ = cli(project, "plan", "production", "--database-name", name)
    reviewed = planned["result"]["plan"]["hash"]
    project.write_package("extra", migrations=[("ext0001", None, "op.create_table('extra_t')")])
    code, refused, _ = cli(
        project,
        "approve",
        "production",
        "--database-name",
        name,
        "--by",
        "alice",
        "--plan-hash",
        reviewed[:12],
    )
    assert code == 1
    assert refused["code"] == "plan_changed"
    assert store(project).approvals_for("production", name) == []


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["--by", " "], "invalid_name", "--by"),
        (["--by", "alice", "--ttl", "forever"], "invalid_duration", "--ttl"),
        (["--by", "alice", "--ttl", "90d"], "invalid_duration", "at most 30d"),
    ],
)
def test_bad_approve_input_is_named(project: Project, args: list[str], code: str, fragment: str) -> None:
    with_approvers(project)
    rc, response, _ = cli(project, "approve", "production", "--database-name", project.database(), *args)
    assert rc == 1
    assert response["code"] == code
    assert fragment in response["error"]


def test_unprotected_environment_needs_no_approval_and_one_without_approvers_says_so(
    project: Project,
) -> None:
    project.write_config(
        environments={
            "dev": {"connection_string_env": "DBINIT_TEST_TARGET_URL"},
            "staging": {"connection_string_env": "DBINIT_TEST_TARGET_URL", "require_approval": True},
        }
    )
    rc, response, _ = cli(project, "approve", "dev", "--by", "alice")
    assert rc == 1
    assert response["code"] == "approval_not_required"
    name = project.database()
    refused = project.run("staging", database_name=name)
    assert refused["code"] == "approval_missing"
    assert "No approvers are configured: add safety.approvers.staging" in _suggestions(refused)
    rc, response, _ = cli(project, "approve", "staging", "--database-name", name, "--by", "alice")
    assert response["code"] == "no_approvers"


def test_scheduled_runs_are_refused_for_a_protected_environment(project: Project) -> None:
    with_approvers(project)
    name = project.database()
    assert cli(project, "approve", "production", "--database-name", name, "--by", "alice")[0] == 0
    job = build_job(project.config(), "production")
    with DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(
            run_config={"ops": {"validate": {"config": {"database_name": name}}}},
            instance=instance,
            tags={"dagster/schedule_name": "nightly"},
            raise_on_error=False,
        )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert failure.step_key == "approve"
    response = failure.step_failure_data.user_failure_data.metadata["response"].value
    assert response["code"] == "schedule_refused"
    assert not project.server.database_exists(name)
    [record] = store(project).approvals_for("production", name)
    assert record.used_at is None, "a refused scheduled run does not use the approval"


def test_durations() -> None:
    assert parse_duration("90s", source="x") == timedelta(seconds=90)
    assert parse_duration("1h30m", source="x") == timedelta(minutes=90)
    assert parse_duration(" 7d ", source="x") == timedelta(days=7)
    with pytest.raises(Exception, match="not a duration"):
        parse_duration("", source="x")


def test_state_store_on_postgresql_through_dbinit_state_url(project: Project) -> None:
    state_db = project.database()
    with project.server.connect() as conn:
        conn.execute(f'CREATE DATABASE "{state_db}"')
    url = project.server.url.rsplit("/", 1)[0] + f"/{state_db}"
    project.monkeypatch.setenv(STATE_URL_VAR, url)
    with_approvers(project)
    name = project.database()
    assert cli(project, "approve", "production", "--database-name", name, "--by", "alice")[0] == 0
    response = project.run("production", database_name=name)
    assert response["status"] == "success", response
    assert not (project.root / ".dbinit" / "state.db").exists(), "DBINIT_STATE_URL replaces the SQLite file"
    with project.server.connect(state_db) as conn:
        used = conn.execute("SELECT used_by_run, approved_by FROM dbinit_approvals").fetchall()
        holders = conn.execute("SELECT count(*) FROM dbinit_lock_holders").fetchone()
        ops = conn.execute("SELECT run_id, status FROM dbinit_operations").fetchall()
    assert used == [(response["result"]["run_id"], "alice")]
    assert holders == (0,), "the run released its lock"
    assert (response["result"]["run_id"], "success") in ops


def test_state_store_that_does_not_answer_is_a_named_error(project: Project) -> None:
    project.monkeypatch.setenv(STATE_URL_VAR, "postgresql://nobody:pw@127.0.0.1:1/none")
    with_approvers(project)
    rc, response, _ = cli(
        project, "approve", "production", "--database-name", project.database(), "--by", "alice"
    )
    assert rc == 1
    assert response["code"] == "state_store_failed"
    assert "postgresql+psycopg://nobody:***@127.0.0.1:1/none" in response["error"]


def test_approval_record_round_trips_through_the_store(project: Project) -> None:
    state = store(project)
    now = utcnow()
    record = ApprovalRecord(
        id=uuid.uuid4().hex,
        environment="production",
        database_name="x_db",
        plan_hash="a" * 64,
        plan={"format": 1},
        approved_by="alice",
        requested_by=None,
        reason="because",
        approved_at=now,
        expires_at=now + timedelta(hours=1),
    )
    state.add_approval(record)
    [read] = state.approvals_for("production", "x_db")
    assert read.expires_at - read.approved_at == timedelta(hours=1)
    assert read.approved_at.tzinfo is not None
    assert not read.expired(now)
    assert read.expired(now + timedelta(hours=2))


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """A real HTTP server on loopback that records the JSON posted to it."""
    received: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("DBINIT_TEST_HOOK", f"http://127.0.0.1:{server.server_address[1]}/hook")
    yield received
    server.shutdown()


def test_requests_and_refusals_reach_the_approvers_through_the_notifier(
    project: Project, webhook: list[dict[str, Any]]
) -> None:
    with_approvers(
        project,
        integration={
            "operation_log": ".dbinit/operations.jsonl",
            "notifier": {"webhook_url_env": "DBINIT_TEST_HOOK"},
        },
    )
    name = project.database()
    code, requested, stderr = cli(project, "request", "production", "--database-name", name, "--by", "carol")
    assert code == 0, requested
    assert requested["result"]["notified_through"] == "notifier"
    assert "dbinit approve production" not in stderr, "with a notifier the request is not printed"
    [message] = webhook
    body = json.dumps(message)
    assert requested["result"]["plan"]["hash"] in body
    assert f"dbinit approve production --database-name {name} --by NAME" in body

    refused = project.run("production", database_name=name)
    assert refused["code"] == "approval_missing"
    assert refused["details"]["approvers_notified"] is True
    assert len(webhook) == 2
    assert "Approval needed" in json.dumps(webhook[1])
