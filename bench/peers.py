"""The peers' inputs, made from one workload so that every tool runs the same DDL.

- the floor's SQL is what `dbinit plan --sql` prints: the exact statements the schema stages run;
- dbmate gets that SQL cut into one file per revision (`-- migrate:up`);
- Alembic gets the package scripts themselves, copied with `branch_labels` (one branch per
  package) and `depends_on` (the heads of the packages each depends on, `core` for the others),
  so that Alembic's own graph orders them, as the design describes.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from dbinit_pipeline.migrations.registry import PackageRegistry

_REVISION_HEADER = re.compile(r"^-- (\S+) (\S+) \((.+)\)$")


@dataclass(frozen=True)
class RevisionSql:
    package: str
    revision: str
    sql: str


def split_plan(sql: str) -> list[RevisionSql]:
    """Cut `dbinit plan --sql` output into its revisions, in order."""
    chunks: list[RevisionSql] = []
    current: tuple[str, str] | None = None
    lines: list[str] = []

    def close() -> None:
        if current is not None:
            chunks.append(RevisionSql(current[0], current[1], "\n".join(lines).strip() + "\n"))

    for line in sql.splitlines():
        if line.startswith("-- package "):
            continue
        header = _REVISION_HEADER.match(line)
        if header:
            close()
            current = (header.group(1), header.group(2))
            lines = []
            continue
        lines.append(line)
    close()
    return chunks


def write_dbmate(chunks: list[RevisionSql], folder: Path) -> int:
    """One dbmate migration per revision; returns how many."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for i, chunk in enumerate(chunks, start=1):
        body = f"-- migrate:up\n{chunk.sql}\n-- migrate:down\n"
        (folder / f"{i:06d}_{chunk.package}_{chunk.revision}.sql").write_text(body)
    return len(chunks)


ENV_PY = '''\
"""Alembic environment for the benchmark: one connection, one transaction for everything."""

import os

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

engine = create_engine(os.environ["BENCH_ALEMBIC_URL"], poolclass=NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
'''


def _inject(source: str, extra: str) -> str:
    """Add module-level assignments right after the `down_revision = ...` line."""
    match = re.search(r"^down_revision\s*(?::[^=]*)?=.*$", source, re.MULTILINE)
    if match is None:
        raise ValueError("not an Alembic revision script")
    return source[: match.end()] + "\n" + extra + source[match.end() :]


def write_alembic(registry: PackageRegistry, folder: Path) -> Path:
    """An Alembic project over the registry's scripts, one branch per package; returns alembic.ini."""
    if folder.exists():
        shutil.rmtree(folder)
    versions = folder / "versions"
    versions.mkdir(parents=True)
    (folder / "env.py").write_text(ENV_PY)
    locations: list[str] = []
    core_head = registry.core.head
    for pkg in registry.ordered():
        target = versions / pkg.name
        target.mkdir()
        locations.append(str(target))
        deps = [registry.by_name[d].head for d in pkg.depends_on] or (
            [core_head] if pkg.name != "core" else []
        )
        for index, m in enumerate(pkg.migrations):
            source = m.path.read_text()
            if index == 0:
                extra = f"branch_labels = ({pkg.name!r},)\n"
                extra += f"depends_on = {tuple(d for d in deps if d)!r}\n"
            else:
                extra = "branch_labels = None\ndepends_on = None\n"
            (target / m.path.name).write_text(_inject(source, extra))
    ini = folder / "alembic.ini"
    ini.write_text(
        "[alembic]\n"
        f"script_location = {folder}\n"
        "path_separator = os\n"
        f"version_locations = {':'.join(locations)}\n"
        "\n[loggers]\nkeys = root\n\n[handlers]\nkeys = console\n\n[formatters]\nkeys = generic\n\n"
        "[logger_root]\nlevel = WARNING\nhandlers = console\n\n"
        "[handler_console]\nclass = StreamHandler\nargs = (sys.stderr,)\nlevel = NOTSET\n"
        "formatter = generic\n\n[formatter_generic]\nformat = %(levelname)s %(name)s %(message)s\n"
    )
    return ini
