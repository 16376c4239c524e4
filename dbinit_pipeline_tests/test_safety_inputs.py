"""The smaller holes of issue 13 (points 5 and 9): `dbinit plan` runs no package code and its
hash covers the models; overflowing durations, names with a trailing newline, URLs of other
kinds, reasons with control characters and over-long revision ids each get a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dbinit_pipeline_tests.conftest import TEST_URL_VAR, Project
from dbinit_pipeline_tests.support.safety import cli, with_approvers

MODELS = """\
open({marker!r}, "a").write("imported\\n")
import sqlalchemy as sa

metadata = sa.MetaData()
sa.Table("tm", metadata, sa.Column("id", sa.Integer, primary_key=True){extra})
"""


def models_package(project: Project, marker: Path, extra: str = "") -> None:
    folder = project.write_package(
        "withmodels",
        migrations=[("wm0001", None, "op.create_table('tm', sa.Column('id', sa.Integer, primary_key=True))")],
    )
    manifest = yaml.safe_load((folder / "package.yaml").read_text())
    (folder / "package.yaml").write_text(yaml.safe_dump({**manifest, "models": "models.py:metadata"}))
    (folder / "models.py").write_text(MODELS.format(marker=str(marker), extra=extra))


def test_plan_runs_no_package_code_and_its_hash_covers_the_models(project: Project) -> None:
    with_approvers(project)
    marker = project.root / "models-imported"
    models_package(project, marker)
    name = project.database()
    code, first, _ = cli(project, "plan", "production", "--database-name", name)
    assert code == 0, first
    assert not marker.exists(), "dbinit plan imported the models module"
    models_package(project, marker, extra=', sa.Column("note", sa.Text)')
    code, second, _ = cli(project, "plan", "production", "--database-name", name)
    assert code == 0, second
    assert second["result"]["plan_hash"] != first["result"]["plan_hash"], "the models are part of the plan"
    assert not marker.exists()
    # An approval of the first plan does not cover the changed models.
    models_package(project, marker)
    code, approval, _ = cli(project, "approve", "production", "--database-name", name, "--by", "alice")
    assert code == 0, approval
    models_package(project, marker, extra=', sa.Column("note", sa.Text)')
    refused = project.run("production", database_name=name)
    assert refused["code"] == "plan_changed" and "models changed: withmodels" in refused["error"], refused


def test_an_overflowing_ttl_is_an_invalid_duration(project: Project) -> None:
    with_approvers(project)
    code, response, _ = cli(
        project, "approve", "production", "--by", "alice", "--ttl", "9999999999999999999999d"
    )
    assert code == 1 and response["code"] == "invalid_duration", response
    assert "--ttl" in response["error"]


@pytest.mark.parametrize("name", ["myapp_prod\n", "myapp\nprod", "myapp_prod\r"])
def test_a_database_name_with_a_newline_is_refused(project: Project, name: str) -> None:
    response = project.run(database_name=name)
    assert response["code"] == "invalid_database_name", response


def test_an_environment_name_with_a_trailing_newline_is_refused(project: Project) -> None:
    project.config_path.write_text(
        yaml.safe_dump(
            {"project": "p", "environments": {"dev\n": {"connection_string_env": TEST_URL_VAR}}},
        )
    )
    code, response, _ = cli(project, "plan", "dev")
    assert code == 1 and response["code"] == "configuration_error", response
    assert str(project.config_path) in response["error"]


@pytest.mark.parametrize(
    "url", ["http://user:pw@127.0.0.1:5432/postgres", "mongodb://127.0.0.1:27017/x", "sqlite:///tmp/x.db"]
)
def test_a_url_of_another_kind_names_the_variable_and_the_provider(project: Project, url: str) -> None:
    project.monkeypatch.setenv(TEST_URL_VAR, url)
    response = project.run(database_name=project.database())
    assert response["code"] == "invalid_connection_url", response
    assert TEST_URL_VAR in response["error"] and "postgresql" in response["error"]
    assert url not in str(response)


@pytest.mark.parametrize("reason", ["release \x1b[31m7", "line one\r\nApproved-by: mallory", "tab\there"])
def test_a_reason_with_control_characters_is_refused(project: Project, reason: str) -> None:
    with_approvers(project)
    for verb, by in (("request", "carol"), ("approve", "alice")):
        code, response, _ = cli(project, verb, "production", "--by", by, "--reason", reason)
        assert code == 1 and response["code"] == "invalid_reason", (verb, response)
        assert "\x1b" not in str(response) and "mallory" not in str(response)


def test_a_revision_id_longer_than_the_version_table_holds_names_its_file(project: Project) -> None:
    long_id = "a" * 40
    project.write_package("longrev", migrations=[(long_id, None, "pass")])
    response = project.run(database_name=project.database(), dry_run=True)
    assert response["code"] == "package_invalid", response
    assert f"0001_{long_id}.py" in response["error"] and "32" in response["error"]
