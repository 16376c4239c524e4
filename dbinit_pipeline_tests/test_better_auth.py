"""The core is Better Auth's schema, proven by Better Auth itself.

Better Auth (npm `better-auth`, its `auth` CLI, `pg`, `mysql2`), pinned by
examples/better-auth/package-lock.json and installed by `make test` with `npm ci`, runs its
server API against databases made by `dbinit init` with the organization plugin and its schema
check on; every step's rows are read back here in SQL. Without Node.js or npm those tests are
skipped, saying so. The upgrade tests need no Node: a database at the first core revision, with
rows in it, is brought to the head by `dbinit init` and keeps every row.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from dbinit_pipeline.cli import main
from dbinit_pipeline.database.server import DatabaseServer, ServerRef
from dbinit_pipeline.migrations.core import CORE_PACKAGE_DIR
from dbinit_pipeline.migrations.package import read_package
from dbinit_pipeline.migrations.runner import MigrationRunner
from dbinit_pipeline_tests.conftest import TEST_URL_VAR, Project
from dbinit_pipeline_tests.support.mysql import TARGET_VAR, MySQLProject, mysql_project, mysql_server

__all__ = ["mysql_project", "mysql_server"]  # fixtures, used by name

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "better-auth"
POLYFILL = EXAMPLE / "node20-polyfill.mjs"
CORE = read_package(CORE_PACKAGE_DIR)
FIRST_CORE = dataclasses.replace(CORE, migrations=CORE.migrations[:1])
SECRET = "dbinit-test-secret-not-for-production-0123456789"

Sql = Callable[..., list[tuple[Any, ...]]]


# -- SQL on both kinds of server ---------------------------------------------------------
def pg_sql(project: Project, database: str) -> Sql:
    def run(query: str, *params: Any) -> list[tuple[Any, ...]]:
        with project.server.connect(database) as conn:
            cur = conn.execute(query, params)
            return list(cur.fetchall()) if cur.description else []

    return run


def mysql_sql(project: MySQLProject, database: str) -> Sql:
    def run(query: str, *params: Any) -> list[tuple[Any, ...]]:
        # DATETIME holds no zone: the core's timestamps are UTC, as mysql2 writes them (timezone "Z").
        naive = tuple(
            p.astimezone(dt.UTC).replace(tzinfo=None) if isinstance(p, dt.datetime) and p.tzinfo else p
            for p in params
        )
        return project.server.query(query, naive or None, database=database)

    return run


def one(sql: Sql, query: str, *params: Any) -> Any:
    rows = sql(query, *params)
    assert len(rows) == 1, (query, rows)
    return rows[0][0] if len(rows[0]) == 1 else rows[0]


# -- upgrade from the first core revision, rows kept ---------------------------------------
NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
LATER = NOW + dt.timedelta(days=7)
U1 = "u" * 64  # the longest id the first revision allowed
U2 = "user-two"
SEED: list[tuple[str, tuple[Any, ...]]] = [
    (
        "INSERT INTO users (id, name, email, email_verified, image, created_at, updated_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (U1, "Ada", "ada@example.com", True, None, NOW, NOW),
    ),
    (
        "INSERT INTO users (id, name, email, email_verified, image, created_at, updated_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (U2, "Bob", "bob@example.com", False, "https://img.example/bob.png", NOW, NOW),
    ),
    (
        "INSERT INTO sessions (id, user_id, token, expires_at, ip_address, user_agent, created_at, updated_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        ("s1", U1, "token-1", LATER, "10.0.0.1", "curl/8", NOW, NOW),
    ),
    (
        "INSERT INTO accounts (id, user_id, account_id, provider_id, password, created_at, updated_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)",
        ("a1", U1, U1, "credential", "scrypt:hash", NOW, NOW),
    ),
    (
        "INSERT INTO accounts (id, user_id, account_id, provider_id, access_token, scope, created_at, updated_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        ("a2", U2, "42", "github", "gho_x", "read:user", NOW, NOW),
    ),
    (
        "INSERT INTO verifications (id, identifier, value, expires_at, created_at, updated_at)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        ("v1", "reset-password:ada", "secret-value", LATER, NOW, NOW),
    ),
    (
        "INSERT INTO workspaces (id, name, slug, owner_id, created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s)",
        ("w1", "Acme", "acme", U1, NOW, NOW),
    ),
    (
        "INSERT INTO workspaces (id, name, slug, owner_id, created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s)",
        ("w2", "Beta", "beta", U2, NOW, NOW),
    ),
    (
        "INSERT INTO workspace_members (id, workspace_id, user_id, role, created_at) VALUES (%s, %s, %s, %s, %s)",
        ("m1", "w1", U1, "admin", NOW),
    ),
    (
        "INSERT INTO workspace_members (id, workspace_id, user_id, role, created_at) VALUES (%s, %s, %s, %s, %s)",
        ("m2", "w1", U2, "member", NOW),
    ),
]
# What the upgrade keeps as it was, table by table (owner_id and workspaces.updated_at go; the
# owner's role becomes "owner").
KEPT = {
    "users": "id, name, email, email_verified, image, created_at, updated_at",
    "sessions": "id, user_id, token, expires_at, ip_address, user_agent, created_at, updated_at",
    "accounts": "id, user_id, account_id, provider_id, access_token, scope, password, created_at, updated_at",
    "verifications": "id, identifier, value, expires_at, created_at, updated_at",
    "workspaces": "id, name, slug, created_at",
    "workspace_members": "id, workspace_id, user_id, created_at",
    "shop_orders": "id, workspace_id, user_id",
}
# A package applied before the upgrade, its foreign keys into the core as the example packages
# declare them (varchar(64), which the core's ids were).
SHOP = (
    "shop1",
    None,
    """
    op.create_table(
        "shop_orders",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("workspace_id", sa.String(64), sa.ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
        sa.Column("user_id", sa.String(64), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=True),
    )
    """,
)
SHOP_ROWS = "INSERT INTO shop_orders (id, workspace_id, user_id) VALUES (1, 'w1', %s), (2, 'w2', %s)"


def snapshot(sql: Sql) -> dict[str, list[tuple[Any, ...]]]:
    return {table: sql(f"SELECT {cols} FROM {table} ORDER BY id") for table, cols in KEPT.items()}


def upgrade_keeps_every_row(sql: Sql, run: Callable[[], dict[str, Any]]) -> None:
    for statement, params in SEED:
        sql(statement, *params)
    sql(SHOP_ROWS, U1, U2)
    before = snapshot(sql)
    assert [len(before[t]) for t in KEPT] == [2, 1, 2, 1, 2, 2, 2]

    response = run()
    assert response["status"] == "success", response
    result = response["result"]
    assert result["database"] == "existing"
    assert result["packages_applied"] == [
        {"name": "core", "version": CORE.version, "revisions": [m.revision for m in CORE.migrations[1:]]}
    ]
    assert result["schema"]["drift"] == []

    after = snapshot(sql)
    kept_members = {row[0] for row in before["workspace_members"]}
    added = [row for row in after["workspace_members"] if row[0] not in kept_members]
    after["workspace_members"] = [row for row in after["workspace_members"] if row[0] in kept_members]
    assert after == before, "every row and value the new revision keeps is as it was"
    assert [row[1:3] for row in added] == [("w2", U2)], "the owner who was no member became one"
    members = sql("SELECT workspace_id, user_id, role FROM workspace_members ORDER BY workspace_id, user_id")
    # Ownership is now what Better Auth writes: a member row with role "owner".
    assert members == [("w1", U2, "member"), ("w1", U1, "owner"), ("w2", U2, "owner")]

    # Deleting a user who owns a workspace works: their rows go, the workspace stays.
    sql("DELETE FROM users WHERE id = %s", U1)
    assert one(sql, "SELECT COUNT(*) FROM users") == 1
    assert sql("SELECT id FROM workspaces ORDER BY id") == [("w1",), ("w2",)]
    for table in ("sessions", "accounts", "workspace_members", "shop_orders"):
        assert one(sql, f"SELECT COUNT(*) FROM {table} WHERE user_id = %s", U1) == 0, table


def test_postgresql_at_the_first_core_revision_upgrades_with_every_row_kept(project: Project) -> None:
    name = project.database()
    with project.server.connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    display = make_url(project.server.url).render_as_string(hide_password=True)
    server = DatabaseServer(ServerRef("postgresql", display, f"env:{TEST_URL_VAR}", "postgres"))
    shop = read_package(project.write_package("shop", migrations=[SHOP]))
    MigrationRunner(server, name).apply([FIRST_CORE, shop])
    upgrade_keeps_every_row(pg_sql(project, name), lambda: project.run(database_name=name))


def test_mysql_at_the_first_core_revision_upgrades_with_every_row_kept(mysql_project: MySQLProject) -> None:
    name = mysql_project.database()
    mysql_project.server.query(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    display = make_url(mysql_project.server.url).render_as_string(hide_password=True)
    server = DatabaseServer(ServerRef("mysql", display, f"env:{TARGET_VAR}", "information_schema"))
    shop = read_package(mysql_project.write_package("shop", migrations=[SHOP]))
    MigrationRunner(server, name).apply([FIRST_CORE, shop])
    upgrade_keeps_every_row(mysql_sql(mysql_project, name), lambda: mysql_project.run(database_name=name))


# -- Better Auth itself -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def node() -> str:
    """Node.js with the pinned packages installed (`npm ci`, as `make test` does, when missing)."""
    found = shutil.which("node")
    if found is None:
        pytest.skip("node is not installed: Better Auth (npm) cannot run here; install Node.js 20 or later")
    version = subprocess.run([found, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < 20:
        pytest.skip(f"node {version} is too old for Better Auth: it needs Node.js 20 or later")
    if not (EXAMPLE / "node_modules" / "better-auth").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is not installed: cannot install examples/better-auth's pinned packages")
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=EXAMPLE, check=True, capture_output=True, timeout=600
        )
    return found


class Flow:
    """One Node process running examples/better-auth/flow.mjs: Better Auth's server API, step by step."""

    def __init__(self, node: str, database_url: str, log: Path) -> None:
        env = {**os.environ, "DATABASE_URL": database_url, "BETTER_AUTH_SECRET": SECRET}
        self.log = log
        self._stderr = log.open("w")
        self.process = subprocess.Popen(
            [node, "--import", str(POLYFILL), "flow.mjs"],
            cwd=EXAMPLE,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )

    def call(self, step: str, **args: Any) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"step": step, **args}) + "\n")
        self.process.stdin.flush()
        for line in self.process.stdout:
            if line.startswith("@@answer "):
                answer: dict[str, Any] = json.loads(line.removeprefix("@@answer "))
                return answer
        raise AssertionError(f"flow.mjs ended during {step}: {self.log.read_text()[-2000:]}")

    def step(self, step: str, **args: Any) -> Any:
        answer = self.call(step, **args)
        assert answer["ok"], (step, answer)
        return answer["result"]

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        finally:
            if self.process.poll() is None:
                self.process.kill()
            self._stderr.close()


@pytest.fixture
def flows(node: str, tmp_path: Path) -> Iterator[Callable[[str], Flow]]:
    started: list[Flow] = []

    def start(database_url: str) -> Flow:
        flow = Flow(node, database_url, tmp_path / f"flow-{len(started)}.log")
        started.append(flow)
        return flow

    yield start
    for flow in started:
        flow.close()


def auth_cli(node: str, database_url: str, *args: str) -> str:
    """Better Auth's own CLI (npm `auth`) on examples/better-auth/auth.ts; its output."""
    env = {**os.environ, "DATABASE_URL": database_url, "BETTER_AUTH_SECRET": SECRET, "NO_COLOR": "1"}
    result = subprocess.run(
        [
            node,
            "--import",
            str(POLYFILL),
            "node_modules/auth/dist/index.mjs",
            *args,
            "--config",
            "auth.ts",
            "-y",
        ],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def better_auth_flow(flow: Flow, sql: Sql, *, name_length: int) -> None:
    """Sign-up to deleting a workspace owner, each step's rows read back in SQL.

    `name_length`: the longest name Better Auth's own schema takes on the dialect (text on
    PostgreSQL; varchar(255) on MySQL, where it makes every sortable string one)."""
    plan = flow.step("migrations")  # better-auth's own getMigrations, the plan `auth migrate` runs
    assert plan == {
        "toBeCreated": [],
        "toBeAdded": [],
        "toBeAddedIndexes": [],
        "schemaProblems": [],
        "unsafeChanges": [],
        "sql": ";",
    }

    long_name = "N" * name_length
    ada = {"email": "ada@example.com", "password": "correct horse battery staple"}
    bob = {"email": "bob@example.com", "password": "another long passphrase"}
    signed_up = flow.step("signUp", name=long_name, **ada)
    ada_id = signed_up["userId"]
    assert one(sql, "SELECT name, email, email_verified FROM users WHERE id = %s", ada_id) == (
        long_name,
        ada["email"],
        False,
    )
    password = one(
        sql, "SELECT password FROM accounts WHERE user_id = %s AND provider_id = 'credential'", ada_id
    )
    assert password and ada["password"] not in password
    assert one(sql, "SELECT user_id FROM sessions WHERE token = %s", signed_up["token"]) == ada_id

    signed_in = flow.step("signIn", **ada)
    assert one(sql, "SELECT user_id FROM sessions WHERE token = %s", signed_in["token"]) == ada_id
    assert one(sql, "SELECT COUNT(*) FROM sessions WHERE user_id = %s", ada_id) == 2

    session = flow.step("getSession", **{"as": ada["email"]})
    assert (session["userId"], session["token"]) == (ada_id, signed_in["token"])
    expires, active = one(
        sql, "SELECT expires_at, active_workspace_id FROM sessions WHERE id = %s", session["sessionId"]
    )
    assert expires.replace(tzinfo=expires.tzinfo or dt.UTC) > dt.datetime.now(dt.UTC) and active is None

    workspace = flow.step("createWorkspace", name="Acme", slug="acme", **{"as": ada["email"]})
    workspace_id = workspace["id"]
    assert one(sql, "SELECT name, slug, logo, metadata FROM workspaces WHERE id = %s", workspace_id) == (
        "Acme",
        "acme",
        None,
        None,
    )
    assert sql("SELECT user_id, role FROM workspace_members WHERE workspace_id = %s", workspace_id) == [
        (ada_id, "owner")
    ]
    team_id = one(
        sql, "SELECT id FROM workspace_teams WHERE workspace_id = %s", workspace_id
    )  # the default team
    assert one(sql, "SELECT user_id FROM workspace_team_members WHERE team_id = %s", team_id) == ada_id

    invitation = flow.step(
        "invite", email=bob["email"], role="member", workspaceId=workspace_id, **{"as": ada["email"]}
    )
    assert one(
        sql,
        "SELECT workspace_id, email, role, status, inviter_id FROM workspace_invitations WHERE id = %s",
        invitation["id"],
    ) == (workspace_id, bob["email"], "member", "pending", ada_id)

    bob_id = flow.step("signUp", name="Bob", **bob)["userId"]
    accepted = flow.step("accept", invitationId=invitation["id"], **{"as": bob["email"]})
    assert accepted["member"]["userId"] == bob_id
    assert one(sql, "SELECT status FROM workspace_invitations WHERE id = %s", invitation["id"]) == "accepted"
    assert (
        one(
            sql,
            "SELECT role FROM workspace_members WHERE workspace_id = %s AND user_id = %s",
            workspace_id,
            bob_id,
        )
        == "member"
    )

    bob_token = flow.step("getSession", **{"as": bob["email"]})["token"]
    flow.step("setActive", workspaceId=workspace_id, **{"as": bob["email"]})
    assert one(sql, "SELECT active_workspace_id FROM sessions WHERE token = %s", bob_token) == workspace_id
    assert flow.step("getSession", **{"as": bob["email"]})["activeOrganizationId"] == workspace_id

    listed = flow.step("listMembers", workspaceId=workspace_id, **{"as": bob["email"]})
    in_sql = sql("SELECT id, user_id, role FROM workspace_members WHERE workspace_id = %s", workspace_id)
    assert sorted((m["id"], m["userId"], m["role"]) for m in listed["members"]) == sorted(in_sql)
    assert {m["userId"] for m in listed["members"]} == {ada_id, bob_id}

    flow.step("signOut", **{"as": bob["email"]})
    assert not sql("SELECT 1 FROM sessions WHERE token = %s", bob_token)
    assert flow.step("getSession", **{"as": bob["email"]}) is None

    # Deleting a user who owns a workspace: their rows go, the workspace and its other member stay.
    flow.step("deleteUser", password=ada["password"], **{"as": ada["email"]})
    assert not sql("SELECT 1 FROM users WHERE id = %s", ada_id)
    for table in ("sessions", "accounts", "workspace_members", "workspace_team_members"):
        assert one(sql, f"SELECT COUNT(*) FROM {table} WHERE user_id = %s", ada_id) == 0, table
    assert one(sql, "SELECT COUNT(*) FROM workspace_invitations WHERE inviter_id = %s", ada_id) == 0
    assert one(sql, "SELECT name FROM workspaces WHERE id = %s", workspace_id) == "Acme"
    assert sql("SELECT user_id FROM workspace_members WHERE workspace_id = %s", workspace_id) == [(bob_id,)]
    # Ada can sign up again with the same address.
    assert flow.step("signUp", name="Ada again", **ada)["userId"] != ada_id


def assert_cli_has_nothing_to_do(node: str, database_url: str, tmp_path: Path) -> None:
    assert "No migrations needed" in auth_cli(node, database_url, "migrate")
    out = tmp_path / "generated.sql"
    assert "already up to date" in auth_cli(node, database_url, "generate", "--output", str(out))
    assert not out.exists()


def assert_healthy(config_path: Path, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    code = main(["--config", str(config_path), "health", "dev", "--database-name", name])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["status"] == "healthy", report


def test_better_auth_runs_on_a_postgresql_database_made_by_dbinit_init(
    project: Project,
    node: str,
    flows: Callable[[str], Flow],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = project.database()
    response = project.run(database_name=name)
    assert response["status"] == "success", response
    url = make_url(project.server.url).set(drivername="postgresql", database=name)
    database_url = url.render_as_string(hide_password=False)
    sql = pg_sql(project, name)

    assert_cli_has_nothing_to_do(node, database_url, tmp_path)
    better_auth_flow(flows(database_url), sql, name_length=300)
    assert_healthy(project.config_path, name, capsys)

    # The schema check is on: a column Better Auth writes goes missing, and it refuses to start.
    sql("ALTER TABLE sessions DROP COLUMN active_team_id")
    refused = flows(database_url).call(
        "signUp", email="eve@example.com", password="long enough pw 123", name="E"
    )
    assert not refused["ok"] and refused["code"] == "SCHEMA_MISMATCH", refused
    assert "active_team_id" in refused["error"]
    assert not sql("SELECT 1 FROM users WHERE email = 'eve@example.com'")


def test_better_auth_runs_on_a_mariadb_database_made_by_dbinit_init(
    mysql_project: MySQLProject,
    node: str,
    flows: Callable[[str], Flow],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = mysql_project.database()
    response = mysql_project.run(database_name=name)
    assert response["status"] == "success", response
    url = make_url(mysql_project.server.url).set(drivername="mysql", database=name)
    database_url = url.render_as_string(hide_password=False)

    assert_cli_has_nothing_to_do(node, database_url, tmp_path)
    better_auth_flow(flows(database_url), mysql_sql(mysql_project, name), name_length=255)
    assert_healthy(mysql_project.config_path, name, capsys)
