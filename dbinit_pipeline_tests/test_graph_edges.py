"""`dbinit graph` draws a revision script's depends_on on another package's revision: the edge
the registry orders by, which package.yaml does not declare."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from dbinit_pipeline_tests.support.cli import DBINIT


def _script(path: Path, revision: str, down: str | None, depends_on: str | None, table: str) -> None:
    path.write_text(
        f'"""{revision}"""\n'
        "import sqlalchemy as sa\n"
        "from alembic import op\n\n"
        f"revision = {revision!r}\n"
        f"down_revision = {down!r}\n"
        f"depends_on = {depends_on!r}\n\n\n"
        "def upgrade():\n"
        f'    op.create_table("{table}", sa.Column("id", sa.Integer, primary_key=True))\n'
    )


def _package(root: Path, name: str, scripts: list[tuple[str, str | None, str | None, str]]) -> None:
    folder = root / "packages" / name
    (folder / "migrations").mkdir(parents=True)
    (folder / "package.yaml").write_text(yaml.safe_dump({"name": name, "version": "1.0.0"}))
    for index, (revision, down, depends_on, table) in enumerate(scripts, start=1):
        _script(folder / "migrations" / f"{index:04d}_{revision}.py", revision, down, depends_on, table)


def test_graph_draws_a_scripts_depends_on_across_packages(tmp_path: Path) -> None:
    # analytics declares no package dependency; its second script depends on a vault revision
    # (alphabetically analytics would come first).
    _package(tmp_path, "vault", [("vlt1", None, None, "entries"), ("vlt2", "vlt1", None, "balances")])
    _package(
        tmp_path, "analytics", [("rep1", None, None, "reports"), ("rep2", "rep1", "vlt2", "report_rows")]
    )
    config = {
        "project": "graphs",
        "environments": {"dev": {"connection_string_env": "DBINIT_GRAPH_UNUSED_URL"}},
        "packages": {"paths": ["packages"], "entry_points": False},
    }
    (tmp_path / "dbinit.yaml").write_text(yaml.safe_dump(config))

    def graph(*args: str) -> str:
        done = subprocess.run(
            [str(DBINIT), "--config", str(tmp_path / "dbinit.yaml"), "graph", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    mermaid = graph().splitlines()
    assert '    analytics -. "rep2 depends_on vlt2" .-> vault' in mermaid
    assert "    analytics --> core" in mermaid and "    vault --> core" in mermaid
    # Only the cross-package one: vlt2's own predecessor is no edge between packages.
    assert sum(" -. " in line for line in mermaid) == 1, mermaid
    # The order the edge stands for: vault is listed (and applied) before analytics.
    nodes = [line.split("[", 1)[0].strip() for line in mermaid if "[" in line]
    assert nodes.index("vault") < nodes.index("analytics"), nodes

    dot = graph("--dot").splitlines()
    assert '    "analytics" -> "vault" [style=dashed, label="rep2 depends_on vlt2"];' in dot
