"""Every fast path off and on gives the same database, ledger and response (fastpath/__init__.py)."""

from __future__ import annotations

from typing import Any

import pytest

from dbinit_pipeline.fastpath import FAST_PATHS, OFF_VARIABLE
from dbinit_pipeline_tests.conftest import PgServer, Project


def _schema(server: PgServer, database: str) -> list[tuple[Any, ...]]:
    with server.connect(database) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable, column_default"
            " FROM information_schema.columns WHERE table_schema = current_schema()"
            " ORDER BY table_name, column_name"
        ).fetchall()
        constraints = conn.execute(
            "SELECT conrelid::regclass::text, contype, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE connamespace = current_schema()::regnamespace ORDER BY 1, 2, 3"
        ).fetchall()
        indexes = conn.execute(
            "SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = current_schema() ORDER BY 1, 2"
        ).fetchall()
    return [*columns, *constraints, *indexes]


def _ledger(server: PgServer, database: str) -> list[tuple[Any, ...]]:
    with server.connect(database) as conn:
        return conn.execute(
            "SELECT package, revision, checksum, filename FROM dbinit_migrations ORDER BY package, revision"
        ).fetchall()


def _packages(project: Project) -> None:
    project.write_package(
        "crm",
        migrations=[
            (
                "crm0001",
                None,
                "op.create_table('contacts', sa.Column('id', sa.Integer, primary_key=True),"
                " sa.Column('email', sa.String(200), nullable=False, unique=True))",
            ),
            (
                "crm0002",
                "crm0001",
                "op.add_column('contacts', sa.Column('note', sa.Text, server_default='x'))\n"
                "op.create_index('ix_contacts_note', 'contacts', ['note'])",
            ),
        ],
    )
    project.write_package(
        "billing",
        depends_on=["crm"],
        migrations=[
            (
                "bil0001",
                None,
                "op.create_table('invoices', sa.Column('id', sa.Integer, primary_key=True),"
                " sa.Column('contact_id', sa.Integer, sa.ForeignKey('contacts.id'), nullable=False))\n"
                "op.execute(\"INSERT INTO contacts (id, email) VALUES (1, 'a@example.com')\")\n"
                "op.execute('INSERT INTO invoices (id, contact_id) VALUES (1, 1)')",
            ),
        ],
    )


@pytest.mark.parametrize("off", [*FAST_PATHS, "all"])
def test_a_run_with_a_fast_path_off_builds_what_a_run_with_all_on_builds(
    project: Project, monkeypatch: pytest.MonkeyPatch, off: str
) -> None:
    _packages(project)
    monkeypatch.delenv(OFF_VARIABLE, raising=False)
    fast = project.database()
    first = project.run(database_name=fast)
    assert first["status"] == "success", first
    monkeypatch.setenv(OFF_VARIABLE, off)
    slow = project.database()
    second = project.run(database_name=slow)
    assert second["status"] == "success", second
    assert _schema(project.server, slow) == _schema(project.server, fast)
    assert _ledger(project.server, slow) == _ledger(project.server, fast)
    for key in ("migrations_applied", "database", "schema", "health_check"):
        assert first["result"][key] == second["result"][key], key
    again = project.run(database_name=slow)  # and the no-op path agrees with the switch off too
    assert again["status"] == "success" and again["result"]["migrations_applied"] == 0
