"""No password in stdout, stderr, the operation log, the state store, Dagster's events and files,
or a response: `dbinit init` as a real subprocess against the password-protected embedded server."""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance
from dagster._serdes import serialize_value

from dbinit_pipeline.cli import main
from dbinit_pipeline.redaction import redact, redact_data, register_secret
from dbinit_pipeline_tests.conftest import TEST_URL_VAR, Project
from dbinit_pipeline_tests.support.safety import DBINIT, subprocess_env


def _init_subprocess(project: Project, database: str, url: str) -> tuple[dict[str, Any], str, Path]:
    """`dbinit init dev` with a persistent DAGSTER_HOME; (response, stdout + stderr, DAGSTER_HOME)."""
    home = project.root / "dagster_home"
    home.mkdir(exist_ok=True)
    env = subprocess_env(project, DAGSTER_HOME=str(home), **{TEST_URL_VAR: url})
    done = subprocess.run(
        [str(DBINIT), "init", "dev", "--database-name", database],
        cwd=project.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return json.loads(done.stdout), done.stdout + done.stderr, home


def _files_holding(root: Path, secret: str) -> list[str]:
    needle = secret.encode()
    # .dbinit/cache holds facts and compiled code of the project's own migration files: a
    # migration that quotes the password (as one test here does) carries it there as in its
    # source. What dbinit itself writes (logs, state, events) is what must never hold it.
    cache = root / "cache"
    return [
        str(p) for p in root.rglob("*") if p.is_file() and cache not in p.parents and needle in p.read_bytes()
    ]


def _dagster_records(home: Path, run_id: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with DagsterInstance.get() as instance:
        run = instance.get_run_by_id(run_id)
        assert run is not None, "the run is in the instance's storage"
        events = instance.all_logs(run_id)
        assert events, "the run's events are stored"
        return serialize_value(run) + "".join(serialize_value(e) for e in events)


def _assert_nowhere(project: Project, secret: str, output: str, response: dict[str, Any], home: Path) -> None:
    assert secret not in output, "stdout/stderr"
    assert secret not in json.dumps(response), "the response"
    state = project.root / ".dbinit"
    assert (state / "operations.jsonl").exists() and (state / "state.db").exists()
    assert _files_holding(state, secret) == [], "operation log and state store"
    assert _files_holding(home, secret) == [], "Dagster's storage, event log and compute logs"
    records = _dagster_records(
        home, response.get("run_id") or response["result"]["run_id"], project.monkeypatch
    )
    assert secret not in records, "Dagster's run and event records"


def test_a_successful_run_shows_the_server_with_its_password_hidden(
    embedded_project: Project, capfd: pytest.CaptureFixture[str]
) -> None:
    # In this process (the two failures below run as subprocesses): the same code prints the
    # response, and file descriptors 1 and 2 are captured whatever Dagster's loggers hold.
    project = embedded_project
    password = project.server.password
    assert password
    home = project.root / "dagster_home"
    home.mkdir()
    project.monkeypatch.setenv("DAGSTER_HOME", str(home))
    code = main(["--config", str(project.config_path), "init", "dev", "--database-name", project.database()])
    captured = capfd.readouterr()
    response = json.loads(captured.out)
    assert code == 0, response
    assert ":***@" in response["result"]["server"]
    _assert_nowhere(project, password, captured.out + captured.err, response, home)


def test_a_sql_error_that_quotes_the_password_is_scrubbed(embedded_project: Project) -> None:
    project = embedded_project
    password = project.server.password
    assert password
    project.write_package(
        "leaky",
        migrations=[("leak0001", None, f"op.execute(\"SELECT * FROM nowhere WHERE note = '{password}'\")")],
    )
    name = project.database()
    response, output, home = _init_subprocess(project, name, project.server.url)
    assert response["status"] == "error"
    assert response["stage"] == "package_schemas"
    assert "nowhere" in response["error"], "the driver's error is kept, only the secret goes"
    assert "note = '***'" in response["error"]
    _assert_nowhere(project, password, output, response, home)


def test_a_wrong_password_is_never_echoed(embedded_project: Project) -> None:
    project = embedded_project
    real = project.server.password
    assert real
    wrong = f"Wrong-{secrets.token_hex(8)}"
    url = project.server.url.replace(f":{real}@", f":{wrong}@")
    response, output, home = _init_subprocess(project, project.database(), url)
    assert response["status"] == "error"
    assert response["code"] == "authentication_failed"
    assert response["stage"] == "provision"
    for secret in (wrong, real):
        _assert_nowhere(project, secret, output, response, home)


@pytest.mark.parametrize(
    "text",
    [
        "postgresql://app:{pw}@db.example:5432/app",
        "mysql+pymysql://root:{pw}@127.0.0.1/mysql?charset=utf8mb4",
        "host=db password={pw} user=app",
        "password='{pw}' host=db",
        '{{"password": "{pw}"}}',
        "PGPASSWORD={pw} psql",
        "connect failed for {pw}",
    ],
)
def test_redact_hides_a_password_in_every_spelling(text: str) -> None:
    password = "s3cr-" + secrets.token_hex(6)
    register_secret(password)
    assert password not in redact(text.format(pw=password))


def test_redact_hides_special_characters_however_they_are_escaped() -> None:
    password = 'p@ss w"rd\\' + secrets.token_hex(4)
    register_secret(password)
    from urllib.parse import quote

    leaks = [
        json.dumps({"error": f"bad {password}"}),
        f"postgresql://u:{quote(password, safe='')}@h/db",
        repr(password),
    ]
    for leak in leaks:
        assert password not in redact(leak)
        assert quote(password, safe="") not in redact(leak)
        assert json.dumps(password)[1:-1] not in redact(leak)


def test_redact_hides_an_unencoded_at_sign_in_a_url_password() -> None:
    assert redact("postgresql://u:p@ss@db.example/x") == "postgresql://u:***@db.example/x"
    assert (
        redact("see postgresql://u:pw@h and mail me@example.com")
        == "see postgresql://u:***@h and mail me@example.com"
    )
    assert redact("postgresql://u@h:5432/db") == "postgresql://u@h:5432/db"


def test_redact_data_walks_nested_values() -> None:
    password = "nested-" + secrets.token_hex(6)
    register_secret(password)
    cleaned = redact_data({"a": [f"x {password}", {"b": (password,)}], "n": 3})
    assert password not in json.dumps(cleaned)
    assert cleaned["n"] == 3
