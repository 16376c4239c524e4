"""Property-based: any database name, environment name, configuration document or package
manifest either works or ends in the structured error response, never a traceback, and never
leaves a partial change on the server (a failed run leaves no database it created)."""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st

from dbinit_pipeline.cli import main
from dbinit_pipeline_tests.conftest import TEST_URL_VAR, PgServer, write_migration

PROPERTY = settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=False,
)
ERROR_KEYS = {"status", "operation", "stage", "error", "code", "recovery"}


@pytest.fixture
def server(embedded_pg: PgServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[PgServer]:
    monkeypatch.setenv(TEST_URL_VAR, embedded_pg.url)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    yield embedded_pg


def _base_config(packages: str = "packages") -> dict[str, Any]:
    return {
        "project": "prop",
        "database": {"provider": "postgresql", "hosting": "local"},
        "environments": {
            "dev": {"connection_string_env": TEST_URL_VAR},
            "production": {"connection_string_env": TEST_URL_VAR},
        },
        "packages": {"paths": [packages], "entry_points": False},
        "safety": {"protected_environments": ["production"], "lock_timeout": 5},
    }


def _folder() -> Path:
    root = Path(tempfile.mkdtemp(prefix="dbinit-prop-"))
    (root / "packages").mkdir()
    return root


def _dbinit(config: Path, *argv: str) -> tuple[int, dict[str, Any]]:
    """The CLI in this process: it must print one JSON response and return, whatever the input."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(["--config", str(config), *argv])
    response: dict[str, Any] = json.loads(out.getvalue())
    return code, response


def _check_outcome(server: PgServer, code: int, response: dict[str, Any], database: str | None) -> None:
    """Success with the database there, or the structured error with no database left behind."""
    event(f"{response['status']}: {response.get('code', response.get('stage', ''))}")
    if response["status"] == "success":
        assert code == 0
        if database is not None:
            assert server.database_exists(database)
        return
    assert code == 1
    assert set(response) >= ERROR_KEYS, response
    assert response["error"] and isinstance(response["recovery"]["suggestions"], list)
    assert "Traceback" not in json.dumps(response)
    assert response["code"] != "internal_error", response
    if database is not None:
        assert not server.database_exists(database), f"a failed run left {database} behind: {response}"


def _fresh() -> str:
    return f"p_{uuid.uuid4().hex[:10]}"


@PROPERTY
@given(
    name=st.one_of(
        st.from_regex(r"[a-z_][a-z0-9_]{0,70}", fullmatch=True),
        st.text(max_size=70),
        st.sampled_from(["postgres", "template1", 'a"; DROP DATABASE postgres; --', "Ünïcode", "a" * 64]),
    )
)
def test_any_database_name(server: PgServer, name: str) -> None:
    existing = server.databases()
    assume(name not in existing)
    root = _folder()
    config = root / "dbinit.yaml"
    config.write_text(yaml.safe_dump(_base_config()))
    try:
        code, response = _dbinit(config, "init", "dev", "--database-name", name)
        if response["status"] == "error":
            assert response["stage"] == "validate", response
        _check_outcome(server, code, response, name if name and "\x00" not in name else None)
        assert server.databases() - {name} <= existing | {name}
    finally:
        if name in server.databases() and name not in existing:
            server.drop(name)


@PROPERTY
@given(environment=st.one_of(st.text(max_size=45), st.sampled_from(["dev", "production", "Dev", "dev "])))
def test_any_environment_name(server: PgServer, environment: str) -> None:
    root = _folder()
    config = root / "dbinit.yaml"
    config.write_text(yaml.safe_dump(_base_config()))
    database = _fresh()
    code, response = _dbinit(config, "plan", "--database-name", database, "--", environment)
    _check_outcome(server, code, response, None)
    assert not server.database_exists(database), "a dry run creates nothing"
    if environment not in ("dev", "production"):
        assert response["code"] == "unknown_environment"
        assert "dev" in response["error"] and "production" in response["error"]


_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 100), st.floats(allow_nan=False), st.text(max_size=12)
)
_env_settings = st.fixed_dictionaries(
    {"connection_string_env": st.just(TEST_URL_VAR)},
    optional={
        "if_exists": st.sampled_from(["reuse", "error", "recreate"]),
        "require_approval": st.booleans(),
        "surprise": _scalar,
    },
)
# Each mutation sets one key of a valid document: most examples stay close enough to valid to
# run the whole pipeline, and the rest probe one bad value at a time.
_MUTATIONS: list[tuple[tuple[str, ...], st.SearchStrategy[Any]]] = [
    (("project",), st.one_of(st.from_regex(r"[a-z][a-z0-9_-]{0,12}", fullmatch=True), _scalar)),
    (("database", "provider"), st.sampled_from(["postgresql", "mysql", "oracle"])),
    (("database", "hosting"), st.sampled_from(["local", "gcp-sql", "moon"])),
    (("environments", "dev", "if_exists"), st.sampled_from(["reuse", "error", "recreate", "drop"])),
    (
        ("environments", "dev", "connection_string_env"),
        st.one_of(st.just("DBINIT_PROP_UNSET"), st.just("not a variable"), _scalar),
    ),
    (("environments", "dev", "require_approval"), st.one_of(st.booleans(), _scalar)),
    (("environments", "dev", "rebuild"), st.one_of(st.just({"cron": "0 3 * * *"}), _scalar)),
    (("environments", "dev", "database_name"), st.one_of(st.just("Bad Name"), _scalar)),
    (("environments", "dev", "surprise"), _scalar),
    (("environments", "qa_1"), _env_settings),
    (("environments", "Not-An-Env"), _env_settings),
    (("environments",), st.one_of(st.just({}), _scalar)),
    (("packages", "paths"), st.sampled_from([["packages"], ["missing"], "packages", [3]])),
    (("safety", "protected_environments"), st.lists(st.sampled_from(["dev", "production", "x"]), max_size=2)),
    (("safety", "approvers"), st.one_of(st.just({"dev": ["alice"]}), _scalar)),
    (("safety", "lock_timeout"), st.one_of(st.floats(-5, 5, allow_nan=False), _scalar)),
    (("safety", "approval_ttl"), st.sampled_from(["1h", "never", "0s"])),
    (("integration", "operation_log"), st.sampled_from(["logs/ops.jsonl", "/proc/forbidden/ops.jsonl"])),
    (("unknown_top_level",), _scalar),
]


@st.composite
def _config_documents(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=60))  # not even YAML, sometimes
    document: Any = _base_config()
    for index in draw(st.lists(st.integers(0, len(_MUTATIONS) - 1), max_size=2)):
        path, values = _MUTATIONS[index]
        target = document
        for key in path[:-1]:
            if not isinstance(target.get(key), dict):
                target[key] = {}
            target = target[key]
        target[path[-1]] = draw(values)
    return yaml.safe_dump(document)


@PROPERTY
@given(document=_config_documents())
@example(
    document=yaml.safe_dump({**_base_config(), "integration": {"operation_log": "/proc/forbidden/ops.jsonl"}})
)
@example(document="project: [unbalanced")
def test_any_configuration_document(server: PgServer, document: str) -> None:
    root = _folder()
    config = root / "dbinit.yaml"
    config.write_text(document)
    database = _fresh()
    try:
        code, response = _dbinit(config, "init", "dev", "--database-name", database)
        _check_outcome(server, code, response, database)
    finally:
        server.drop(database)


_NAMES = ["alpha", "beta", "gamma"]
_VALID = "op.create_table('{table}', sa.Column('id', sa.Integer, primary_key=True))"
_BODIES = [
    *[_VALID] * 8,
    "op.create_table('{table}', sa.Column('id', sa.Integer, primary_key=True),"
    " sa.Column('user_id', sa.String(64), sa.ForeignKey('users.id')))",
    "op.execute('SELECT * FROM no_such_table_anywhere')",
    "raise RuntimeError('migration bug')",
    "op.create_table('users', sa.Column('id', sa.Integer))",
    "op.create_table('{table}'",
]


@st.composite
def _package_sets(draw: st.DrawFn) -> list[tuple[str, dict[str, Any], list[str]]]:
    """(folder, manifest, migration bodies) per package; names and dependencies mostly valid."""
    count = draw(st.integers(1, 3))
    names = _NAMES[:count]
    packages = []
    for index, name in enumerate(names):
        manifest: dict[str, Any] = {"name": name, "version": "1.0.0"}
        earlier = names[:index]
        manifest["depends_on"] = draw(
            st.sampled_from(["none", "none", "earlier", "earlier", "any"]).flatmap(
                lambda kind, earlier=earlier: (
                    st.lists(st.sampled_from(earlier), max_size=2, unique=True)
                    if kind == "earlier" and earlier
                    else st.lists(st.sampled_from([*names, "ghost"]), max_size=2, unique=True)
                    if kind == "any"
                    else st.just([])
                )
            )
        )
        if draw(st.integers(0, 4)) == 0:  # one bad field, sometimes
            key, value = draw(
                st.sampled_from(
                    [
                        ("name", draw(st.text(max_size=8))),
                        ("name", "core"),
                        ("version", draw(_scalar)),
                        ("depends_on", draw(_scalar)),
                        ("colour", "red"),
                    ]
                )
            )
            manifest[key] = value
        bodies = draw(st.lists(st.sampled_from(_BODIES), max_size=2))
        packages.append((f"pkg{index}", manifest, bodies))
    return packages


@PROPERTY
@given(packages=_package_sets())
def test_any_package_manifests(
    server: PgServer, packages: list[tuple[str, dict[str, Any], list[str]]]
) -> None:
    root = _folder()
    config = root / "dbinit.yaml"
    config.write_text(yaml.safe_dump(_base_config()))
    for index, (folder_name, manifest, bodies) in enumerate(packages):
        folder = root / "packages" / folder_name
        (folder / "migrations").mkdir(parents=True)
        (folder / "package.yaml").write_text(yaml.safe_dump(manifest))
        down: str | None = None
        for number, body in enumerate(bodies, start=1):
            revision = f"r{index}x{number}"
            text = body.format(table=f"t_{index}_{number}")
            write_migration(folder / "migrations" / f"{number:04d}_{revision}.py", revision, down, text)
            down = revision
    database = _fresh()
    try:
        code, response = _dbinit(config, "init", "dev", "--database-name", database)
        _check_outcome(server, code, response, database)
        if response["status"] == "success":
            applied = {p["name"] for p in response["result"]["packages_applied"]}
            assert "core" in applied
            assert {f"t_{i}_{n}" for i, (_, _, b) in enumerate(packages) for n in range(1, len(b) + 1)} <= (
                server.tables(database)
            )
    finally:
        server.drop(database)
