"""Generate a package set: N packages x M migrations, with dependencies and foreign keys.

Package i depends on up to two earlier packages; each migration creates one table with a
primary key, an index, a foreign key into a dependency's table (or into core's `users` for a
package without dependencies) and, after the first, a foreign key to the package's previous
table. Deterministic for a given seed, so the tests and the benchmarks see the same workload.

    python -m bench.package_generator OUT_DIR --packages 500 --migrations 4
"""

from __future__ import annotations

import argparse
import random
import textwrap
from pathlib import Path

TEMPLATE = '''\
"""{package}: {table}

Revision ID: {revision}
Revises: {down}
"""

import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = {down_literal}


def upgrade():
    op.create_table(
        "{table}",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("name", sa.String(120), nullable=False),
        sa.Column("amount", sa.Numeric(12, 2), nullable=False, server_default="0"),
        sa.Column("ref_id", {ref_type}, sa.ForeignKey("{ref_table}.id", ondelete="CASCADE"), nullable=True),
{prev_column}        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_{table}_name", "{table}", ["name"])


def downgrade():
    op.drop_table("{table}")
'''


def package_name(index: int) -> str:
    return f"gen{index:04d}"


def table_name(index: int, migration: int) -> str:
    return f"gen{index:04d}_t{migration}"


def generate(root: Path, packages: int, migrations: int, *, seed: int = 7, max_deps: int = 2) -> list[str]:
    """Write the package set under `root`; returns the package names in creation order."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    for i in range(packages):
        name = package_name(i)
        window = list(range(max(0, i - 20), i))
        deps = sorted(rng.sample(window, min(len(window), rng.randint(0, max_deps))))
        folder = root / name
        (folder / "migrations").mkdir(parents=True, exist_ok=True)
        dep_list = ", ".join(package_name(d) for d in deps)
        (folder / "package.yaml").write_text(
            f"name: {name}\nversion: 1.0.0\ndescription: generated package {i}\ndepends_on: [{dep_list}]\n"
        )
        for j in range(1, migrations + 1):
            table = table_name(i, j)
            if deps:
                ref_table, ref_type = table_name(rng.choice(deps), 1), "sa.BigInteger()"
            else:
                ref_table, ref_type = "users", "sa.String(64)"
            prev = (
                f'        sa.Column("prev_id", sa.BigInteger(), sa.ForeignKey("{table_name(i, j - 1)}.id"), nullable=True),\n'
                if j > 1
                else ""
            )
            revision = f"g{i:04d}r{j:03d}"
            down = f"g{i:04d}r{j - 1:03d}" if j > 1 else None
            (folder / "migrations" / f"{j:04d}_{table}.py").write_text(
                TEMPLATE.format(
                    package=name,
                    table=table,
                    revision=revision,
                    down=down or "",
                    down_literal=repr(down),
                    ref_table=ref_table,
                    ref_type=ref_type,
                    prev_column=prev,
                )
            )
        names.append(name)
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=textwrap.dedent(__doc__ or ""))
    parser.add_argument("out", type=Path)
    parser.add_argument("--packages", type=int, default=50)
    parser.add_argument("--migrations", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    generate(args.out, args.packages, args.migrations, seed=args.seed)
    print(f"{args.packages} packages x {args.migrations} migrations in {args.out}")


if __name__ == "__main__":
    main()
