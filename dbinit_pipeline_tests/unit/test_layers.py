"""The layers of the package, as the import-linter contract in pyproject.toml states them, and no
import cycle between modules (imports inside functions included)."""

from __future__ import annotations

import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]


def test_the_layers_contract_is_kept() -> None:
    done = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-4000:]
    assert "3 kept, 0 broken" in done.stdout


def test_no_module_imports_itself_through_others() -> None:
    graph = grimp.build_graph("dbinit_pipeline", cache_dir=None)
    edges = {
        module: {imported for imported in graph.find_modules_directly_imported_by(module)}
        for module in graph.modules
    }
    # A package's __init__ importing its own submodule is how Python packages work, not a cycle.
    for module, imported in edges.items():
        imported -= {m for m in imported if m.startswith(module + ".")}
    try:
        tuple(TopologicalSorter(edges).static_order())
    except CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None
