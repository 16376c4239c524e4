"""Fixtures for the operations tests: a real webhook listener, a throw-away project, and one real
dagster-webserver + dagster-daemon on a temporary DAGSTER_HOME, shared by this folder's tests.

Everything listens on 127.0.0.1. The instance is stored by the repository's own dagster.yaml
(dagster-postgres) in a fresh database on the session's embedded PostgreSQL; the project's
environments point at that server too, except `broken`, whose server is a closed port.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from dbinit_pipeline_tests.conftest import PgServer, write_migration

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LOCATION = "dbinit_pipeline"
REPOSITORY = "__repository__"
ARTIFACTS = REPO / "test-artifacts"
# A migration that sleeps only in databases named *slow*, so that a test can hold a run open.
SLOW_SECONDS = 8


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the webhook listener ---------------------------------------------------------------
class WebhookListener:
    """A real HTTP server on 127.0.0.1 that records every JSON body POSTed to it."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.received: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with listener._cond:
                    listener.received.append(json.loads(body or b"{}"))
                    listener._cond.notify_all()
                self.send_response(listener.status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks/dbinit"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        """The first message that satisfies `predicate`, waiting at most `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for message in self.received:
                    if predicate(message):
                        return message
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no matching notification within {timeout:.0f} s; received: "
                        + json.dumps(self.received, indent=1)[:3000]
                    )
                self._cond.wait(left)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def webhook() -> Iterator[WebhookListener]:
    listener = WebhookListener()
    yield listener
    listener.close()


def fields_of(message: Mapping[str, Any]) -> dict[str, str]:
    """The Slack attachment fields of a webhook message, by title."""
    return {f["title"]: f["value"] for a in message.get("attachments", []) for f in a.get("fields", [])}


def about_run(run_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda message: fields_of(message).get("Run id") == run_id


# -- the project --------------------------------------------------------------------------
def write_operations_project(root: Path) -> Path:
    """A project whose environments succeed (dev), fail (broken), run slowly (alpha, beta),
    rebuild every minute (nightly) or need approval (production)."""
    package = root / "packages" / "slow"
    (package / "migrations").mkdir(parents=True, exist_ok=True)
    (package / "package.yaml").write_text(
        yaml.safe_dump({"name": "slow", "version": "1.0.0", "depends_on": []})
    )
    write_migration(
        package / "migrations" / "0001_slow.py",
        "slow0001",
        None,
        f"""
        op.execute(
            "SELECT pg_sleep(CASE WHEN position('slow' in current_database()) > 0 THEN {SLOW_SECONDS} ELSE 0 END)"
        )
        op.create_table("slow_marker", sa.Column("id", sa.Integer, primary_key=True))
        """,
    )
    config = {
        "project": "ops",
        "database": {"provider": "postgresql", "hosting": "local"},
        "environments": {
            "dev": {"connection_string_env": "OPS_PG_URL", "database_name": "ops_dev"},
            "broken": {"connection_string_env": "OPS_BROKEN_URL"},
            "alpha": {"connection_string_env": "OPS_PG_URL", "database_name": "ops_slow_alpha"},
            "beta": {"connection_string_env": "OPS_PG_URL", "database_name": "ops_slow_beta"},
            "nightly": {
                "connection_string_env": "OPS_PG_URL",
                "database_name": "ops_nightly",
                "rebuild": {"cron": "* * * * *", "timezone": "UTC"},
            },
            "production": {"connection_string_env": "OPS_PG_URL", "database_name": "ops_production"},
        },
        "packages": {"paths": ["packages"], "entry_points": False},
        "safety": {
            "protected_environments": ["production"],
            "approvers": {"production": ["alice", "bob"]},
            "lock_timeout": 30,
        },
        "integration": {
            "operation_log": ".dbinit/operations.jsonl",
            "notifier": {"webhook_url_env": "OPS_WEBHOOK_URL"},
        },
    }
    path = root / "dbinit.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def project_env(root: Path, server: PgServer, webhook_url: str) -> dict[str, str]:
    """The environment every process of the project gets (no DAGSTER_HOME: callers add it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "DBINIT_"))}
    env.update(
        {
            "DBINIT_CONFIG": str(root / "dbinit.yaml"),
            "OPS_PG_URL": server.url,
            "OPS_BROKEN_URL": f"postgresql://postgres:closed-{uuid.uuid4().hex[:12]}@127.0.0.1:{free_port()}/postgres",
            "OPS_WEBHOOK_URL": webhook_url,
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def create_database(server: PgServer, name: str) -> str:
    """A fresh database on `server`; returns its URL (password included)."""
    with server.connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return make_url(server.url).set(database=name).render_as_string(hide_password=False)


# -- processes ----------------------------------------------------------------------------
def _group_alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_process_groups(procs: list[subprocess.Popen[bytes]], grace: float = 20.0) -> None:
    """SIGTERM the process groups this test started (their code servers and run workers
    included), wait a little, then SIGKILL whatever is left."""
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    # code servers finish their current calls for a while after SIGTERM: no need to wait for that
    settle = time.monotonic() + 2
    while time.monotonic() < settle and any(_group_alive(p.pid) for p in procs):
        time.sleep(0.1)
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


RUN_QUERY = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { runId status jobName startTime endTime tags { key value } runConfigYaml }
  }
}
"""

LAUNCH_MUTATION = """
mutation Launch($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message stack }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidOutputError { stepKey }
    ... on UnauthorizedError { message }
  }
}
"""

SENSOR_TICKS_QUERY = """
query SensorTicks($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status ticks(limit: 5) { status timestamp } } }
  }
}
"""

RUNS_QUERY = """
query Runs($filter: RunsFilter!) {
  runsOrError(filter: $filter) {
    __typename
    ... on Runs { results { runId status jobName startTime endTime runConfigYaml tags { key value } } }
  }
}
"""

FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


@dataclass
class DagsterStack:
    """A running dagster-webserver and dagster-daemon on one project and one instance."""

    root: Path
    home: Path
    port: int
    env: dict[str, str]
    webhook: WebhookListener
    logs: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.url}/graphql",
            data=json.dumps({"query": query, "variables": dict(variables or {})}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            document: dict[str, Any] = json.loads(reply.read())
        assert not document.get("errors"), document["errors"]
        data: dict[str, Any] = document["data"]
        return data

    def launch(self, job: str, run_config: Mapping[str, Any] | None = None) -> str:
        """Launch `job` through the webserver (GraphQL launchRun); returns the run id."""
        params: dict[str, Any] = {
            "selector": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "jobName": job},
            "runConfigData": dict(run_config or {}),
        }
        result = self.graphql(LAUNCH_MUTATION, {"executionParams": params})["launchRun"]
        assert result["__typename"] == "LaunchRunSuccess", result
        run_id: str = result["run"]["runId"]
        return run_id

    def run(self, run_id: str) -> dict[str, Any]:
        run: dict[str, Any] = self.graphql(RUN_QUERY, {"runId": run_id})["runOrError"]
        assert run["__typename"] == "Run", run
        return run

    def runs(self, **filters: Any) -> list[dict[str, Any]]:
        found = self.graphql(RUNS_QUERY, {"filter": filters})["runsOrError"]
        assert found["__typename"] == "Runs", found
        results: list[dict[str, Any]] = found["results"]
        return results

    def wait_finished(self, run_id: str, timeout: float = 90.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            run = self.run(run_id)
            if run["status"] in FINISHED:
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} still {run['status']} after {timeout:.0f} s")
            time.sleep(0.5)

    def cli(self, *args: str, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
        """A `dagster` command on this project and instance, from the project folder."""
        return subprocess.run(
            [str(BIN / "dagster"), *args],
            cwd=self.root,
            env={**self.env, "DAGSTER_HOME": str(self.home)},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def log_tail(self, lines: int = 60) -> str:
        out = []
        for path in sorted(self.logs.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(out)


def _wait_until(what: str, check: Callable[[], bool], timeout: float, stack: DagsterStack) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, urllib.error.URLError, AssertionError, KeyError, TypeError):
            if check():
                return
        for proc in stack.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args!r} exited while waiting for {what}:\n{stack.log_tail()}")
        time.sleep(0.5)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}:\n{stack.log_tail()}")


def _server_answers(stack: DagsterStack) -> bool:
    with urllib.request.urlopen(f"{stack.url}/server_info", timeout=5) as reply:
        return "dagster_webserver_version" in json.loads(reply.read())


def _sensor_has_ticked(stack: DagsterStack) -> bool:
    selector = {
        "repositoryLocationName": LOCATION,
        "repositoryName": REPOSITORY,
        "sensorName": "notify_on_run_failure",
    }
    sensor = stack.graphql(SENSOR_TICKS_QUERY, {"selector": selector})["sensorOrError"]
    return sensor["__typename"] == "Sensor" and bool(sensor["sensorState"]["ticks"])


@pytest.fixture(scope="package")
def dagster_stack(embedded_pg: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterStack]:
    """dagster-webserver + dagster-daemon on a throw-away project, started once for this folder.

    Ready means: the webserver answers /server_info, and the failure sensor has ticked once
    (a run-failure sensor ignores failures from before its first tick).
    """
    root = tmp_path_factory.mktemp("ops-project")
    home = root / "dagster_home"
    logs = root / "logs"
    home.mkdir()
    logs.mkdir()
    write_operations_project(root)
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
    shutil.copyfile(REPO / "workspace.yaml", root / "workspace.yaml")
    instance_db = f"dagster_ops_{uuid.uuid4().hex[:8]}"
    webhook = WebhookListener()
    port = free_port()
    env = project_env(root, embedded_pg, webhook.url)
    env.update(
        {
            "DAGSTER_PG_URL": create_database(embedded_pg, instance_db),
            "DAGSTER_WEBSERVER_URL": f"http://127.0.0.1:{port}",
        }
    )
    stack = DagsterStack(root=root, home=home, port=port, env=env, webhook=webhook, logs=logs)
    children = {
        "daemon": [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
        "webserver": [
            str(BIN / "dagster-webserver"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-w",
            "workspace.yaml",
        ],
    }
    try:
        for name, argv in children.items():
            with (logs / f"{name}.log").open("wb") as log:
                stack.procs.append(
                    subprocess.Popen(
                        argv,
                        cwd=root,
                        env={**env, "DAGSTER_HOME": str(home)},
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        _wait_until("the webserver", lambda: _server_answers(stack), 90, stack)
        _wait_until("the failure sensor's first tick", lambda: _sensor_has_ticked(stack), 90, stack)
        yield stack
    finally:
        stop_process_groups(stack.procs)
        webhook.close()
        for name in (instance_db, "ops_dev", "ops_slow_alpha", "ops_slow_beta", "ops_nightly"):
            embedded_pg.drop(name)
