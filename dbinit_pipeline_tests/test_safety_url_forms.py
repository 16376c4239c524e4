"""No password in any output or store, for every URL form libpq accepts (issue 13, point 4):
userinfo, a `password=` query parameter, percent-encoded `@ : / %`, and an unencoded `@` (refused
before anything connects). Each form runs through `dbinit init` and `dagster job execute` against
the embedded server, which authenticates with passwords; stdout, stderr, the operation log, the
state store and everything under DAGSTER_HOME (event logs, compute logs, pickled outputs) are read
back byte for byte."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from sqlalchemy.engine import make_url

from dbinit_pipeline_tests.conftest import TEST_URL_VAR, PgServer, Project
from dbinit_pipeline_tests.support.safety import DBINIT, subprocess_env

DAGSTER = Path(sys.prefix) / "bin" / "dagster"


@pytest.fixture
def role(embedded_pg: PgServer) -> Iterator[tuple[str, str]]:
    """A login role whose password holds every character a URL must encode: (name, password)."""
    name = f"dbinit_url_{secrets.token_hex(4)}"
    password = f"P@ss:w/rd%{secrets.token_hex(6)}"
    with embedded_pg.connect() as conn:
        conn.execute(f"CREATE ROLE {name} LOGIN CREATEDB PASSWORD '{password}'")
    yield name, password
    with embedded_pg.connect() as conn:
        for db in conn.execute(
            "SELECT datname FROM pg_database WHERE datdba = (SELECT oid FROM pg_roles WHERE rolname = %s)",
            (name,),
        ).fetchall():
            conn.execute(f'DROP DATABASE IF EXISTS "{db[0]}" WITH (FORCE)')
        conn.execute(f"DROP ROLE IF EXISTS {name}")


def spellings(secret: str) -> set[str]:
    return {secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1]}


def leaks(root: Path, secret: str) -> list[str]:
    """Every file under `root` (outside the facts and code caches) holding a spelling of `secret`."""
    needles = [s.encode() for s in spellings(secret)]
    cache = root / ".dbinit" / "cache"
    return [
        str(p)
        for p in root.rglob("*")
        if p.is_file() and cache not in p.parents and any(n in p.read_bytes() for n in needles)
    ]


def run_both(project: Project, url: str, database: str) -> list[tuple[str, subprocess.CompletedProcess[str]]]:
    """`dbinit init dev` and `dagster job execute -j initialize_dev`, each with its own DAGSTER_HOME."""
    done = []
    for tool in ("dbinit", "dagster"):
        home = project.root / f"dagster_home_{tool}"
        home.mkdir(exist_ok=True)
        project.write_config(
            environments={"dev": {"connection_string_env": TEST_URL_VAR, "database_name": database}}
        )
        argv = (
            [str(DBINIT), "init", "dev"]
            if tool == "dbinit"
            else [str(DAGSTER), "job", "execute", "-m", "dbinit_pipeline", "-j", "initialize_dev"]
        )
        env = subprocess_env(project, DAGSTER_HOME=str(home), **{TEST_URL_VAR: url})
        result = subprocess.run(argv, cwd=project.root, env=env, capture_output=True, text=True, timeout=240)
        done.append((tool, result))
    return done


@pytest.mark.parametrize("form", ["userinfo", "query"])
def test_no_password_anywhere_for_each_url_form(
    embedded_project: Project, role: tuple[str, str], form: str
) -> None:
    project = embedded_project
    user, password = role
    server = make_url(project.server.url)
    where = f"{server.host}:{server.port}/postgres"
    url = (
        f"postgresql://{user}:{quote(password, safe='')}@{where}"
        if form == "userinfo"
        else f"postgresql://{user}@{where}?password={quote(password, safe='')}"
    )
    database = f"t_url_{secrets.token_hex(4)}"
    for tool, result in run_both(project, url, database):
        assert result.returncode == 0, (tool, result.stdout[-2000:], result.stderr[-3000:])
        for secret in spellings(password):
            assert secret not in result.stdout and secret not in result.stderr, (tool, secret)
    assert project.server.database_exists(database), "the role connected with its password"
    assert leaks(project.root, password) == [], "operation log, state store or Dagster storage"
    response = json.loads(
        run_both.__name__ and (project.root / ".dbinit" / "operations.jsonl").read_text().splitlines()[-1]
    )
    assert ":***@" in response["result"]["server"] and "password" not in response["result"]["server"]


def test_an_unencoded_at_sign_is_refused_before_anything_connects(
    embedded_project: Project, role: tuple[str, str]
) -> None:
    project = embedded_project
    user, _ = role
    tail = f"Tail{secrets.token_hex(6)}"
    server = make_url(project.server.url)
    url = f"postgresql://{user}:head@{tail}@{server.host}:{server.port}/postgres"
    for tool, result in run_both(project, url, f"t_url_{secrets.token_hex(4)}"):
        assert result.returncode != 0, tool
        assert tail not in result.stdout and tail not in result.stderr, tool
        assert "percent-encode" in (result.stdout + result.stderr).lower().replace("-", "-"), (
            tool,
            result.stdout,
        )
    assert leaks(project.root, tail) == [] and leaks(project.root, f"head@{tail}") == []
