"""Bad input and broken servers: each ends in the structured error, quickly, with nothing changed."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest

from dbinit_pipeline_tests.conftest import TEST_URL_VAR, PgServer, Project
from dbinit_pipeline_tests.support.cli import DBINIT

REPO = Path(__file__).resolve().parents[1]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _dbinit(project: Project, *args: str) -> tuple[int, dict[str, object], str]:
    result = subprocess.run(
        [str(DBINIT), "--config", str(project.config_path), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.returncode, json.loads(result.stdout), result.stderr


def test_unknown_environment_names_the_known_ones(project: Project) -> None:
    code, response, _ = _dbinit(project, "init", "qa")
    assert code == 1
    assert response["status"] == "error"
    assert response["code"] == "unknown_environment"
    assert "'qa'" in str(response["error"]) and "dev" in str(response["error"])


def test_missing_connection_variable_says_which(project: Project) -> None:
    project.monkeypatch.delenv(TEST_URL_VAR)
    response = project.run(database_name=project.database())
    assert response["status"] == "error"
    assert response["stage"] == "validate"
    assert response["code"] == "missing_connection_variable"
    assert TEST_URL_VAR in response["error"]
    assert any(TEST_URL_VAR in s for s in response["recovery"]["suggestions"])


@pytest.mark.parametrize(
    "name",
    [
        'x"; DROP DATABASE postgres; --',
        "robert'); DROP TABLE users;--",
        "UPPER_case",
        "1starts_with_digit",
        "has space",
        "a" * 64,
        "postgres",
        "template1",
        "",
    ],
)
def test_invalid_database_names_are_refused_and_change_nothing(project: Project, name: str) -> None:
    # Other tests create databases on the same server meanwhile: only dbinit's own doings count.
    ours = ("x", "robert", "upper_case", "1starts", "has", "a" * 10, "postgres", "template1")
    before = {d for d in project.server.databases() if d.lower().startswith(ours)}
    response = project.run(database_name=name)
    assert response["status"] == "error"
    assert response["stage"] == "validate"
    assert response["code"] in {"invalid_database_name", "invalid_input"}
    assert response["recovery"]["suggestions"]
    assert {d for d in project.server.databases() if d.lower().startswith(ours)} == before


def test_unknown_key_in_configuration_names_key_and_file(project: Project) -> None:
    project.write_config(environments={"dev": {"connection_string_env": TEST_URL_VAR, "hostting": "local"}})
    code, response, _ = _dbinit(project, "init", "dev")
    assert code == 1
    assert response["status"] == "error"
    assert "environments.dev.hostting: unknown key" in str(response["error"])
    assert str(project.config_path) in str(response["error"])


def test_unreachable_server_fails_clearly_within_bounded_time(project: Project) -> None:
    port = _closed_port()
    project.monkeypatch.setenv(TEST_URL_VAR, f"postgresql://postgres:pw@127.0.0.1:{port}/postgres")
    started = time.monotonic()
    response = project.run(database_name=project.database())
    elapsed = time.monotonic() - started
    assert response["status"] == "error"
    assert response["stage"] == "provision"
    assert response["code"] == "connection_failed"
    assert str(port) in response["error"]
    assert elapsed < 30, f"gave up after {elapsed:.1f} s"


def test_wrong_password_fails_at_once_without_retries(project: Project, embedded_pg: PgServer) -> None:
    # Only the embedded server checks passwords (the machine's server trusts everyone).
    from sqlalchemy.engine import make_url

    url = make_url(embedded_pg.url).set(password="not-the-password")
    project.monkeypatch.setenv(TEST_URL_VAR, url.render_as_string(hide_password=False))
    started = time.monotonic()
    response = project.run(database_name=project.database())
    assert response["status"] == "error"
    assert response["stage"] == "provision"
    assert response["code"] == "authentication_failed"
    assert response["transient"] is False
    assert time.monotonic() - started < 10, "an authentication failure must not be retried"
    assert "not-the-password" not in json.dumps(response)


def test_password_never_printed_by_dbinit(project: Project, embedded_pg: PgServer, tmp_path: Path) -> None:
    secret = embedded_pg.password
    assert secret
    env = {**dict(__import__("os").environ), TEST_URL_VAR: embedded_pg.url}
    name = project.database()
    runs = [
        [str(DBINIT), "--config", str(project.config_path), "init", "dev", "--database-name", name],
        [
            str(DBINIT),
            "--config",
            str(project.config_path),
            "init",
            "dev",
            "--database-name",
            name,
            "--verbose",
        ],
        [str(DBINIT), "--config", str(project.config_path), "status", "dev", "--database-name", name],
    ]
    for argv in runs:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert secret not in result.stdout
        assert secret not in result.stderr
    wrong = env | {TEST_URL_VAR: embedded_pg.url.replace(secret, secret[::-1])}
    result = subprocess.run(runs[0], capture_output=True, text=True, timeout=120, env=wrong)
    assert result.returncode == 1
    assert secret[::-1] not in result.stdout + result.stderr
    log_text = (project.root / ".dbinit" / "operations.jsonl").read_text()
    assert secret not in log_text and secret[::-1] not in log_text


def test_definitions_load_one_job_per_environment(project: Project) -> None:
    from dbinit_pipeline.orchestration.jobs import build_jobs

    jobs = {job.name: job for job in build_jobs(project.config())}
    assert set(jobs) == {"initialize_dev", "initialize_production"}
    dev = jobs["initialize_dev"]
    assert dev.tags["dbinit/env"] == "dev"
    assert [n.name for n in dev.graph.nodes_in_topological_order] == [
        "validate",
        "approve",
        "provision",
        "create",
        "core_schema",
        "package_schemas",
        "verify",
        "log",
    ]


def test_repository_definitions_load() -> None:
    result = subprocess.run(
        [
            str(REPO / ".venv" / "bin" / "python"),
            "-c",
            "import dbinit_pipeline as m; print(len(m.defs.jobs))",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) == 3
