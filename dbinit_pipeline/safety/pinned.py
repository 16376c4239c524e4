"""What a run is pinned to: every revision file and models module, as validate read them.

Validate records the digest in the run's plan (stored with the run by Dagster, so a
re-execution inherits it). Every mutating stage reads the files again and refuses to go on
when they differ, naming what changed: a re-execution from failure after an edit cannot apply
what nobody validated or approved.

Nothing here imports or runs package code: models modules are located through the import
system's finders, which run no module code.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from importlib.machinery import ModuleSpec
from pathlib import Path
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from dbinit_pipeline.migrations.package import Package
    from dbinit_pipeline.migrations.registry import PackageRegistry

MISSING = "missing"


def models_source(pkg: Package) -> Path | None:
    """The file that `models:` in package.yaml names, found without importing anything."""
    if not pkg.models:
        return None
    target = pkg.models.partition(":")[0]
    if target.endswith(".py"):
        return pkg.path / target
    locations: list[str] | None = None
    spec = None
    parts = target.split(".")
    for i in range(len(parts)):
        spec = _find_spec(".".join(parts[: i + 1]), locations)
        if spec is None:
            return None
        locations = list(spec.submodule_search_locations or [])
    if spec is None or not spec.origin or not spec.has_location:
        return None
    return Path(spec.origin)


def _find_spec(name: str, path: list[str] | None) -> ModuleSpec | None:
    """Ask the import system's finders (editable installs' included) without importing anything."""
    for finder in sys.meta_path:
        find = getattr(finder, "find_spec", None)
        if find is None:
            continue
        spec = find(name, path)
        if spec is not None:
            return cast("ModuleSpec", spec)
    return None


def models_checksum(pkg: Package) -> str:
    """sha256 of the models file's bytes; `missing` when it cannot be found."""
    path = models_source(pkg)
    if path is None:
        return MISSING
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return MISSING


@dataclass(frozen=True)
class PinnedSources:
    """Every revision (package, revision, sha256) in apply order, and every models file's sha256."""

    revisions: tuple[tuple[str, str, str], ...]
    models: tuple[tuple[str, str], ...]

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for row in (*self.revisions, *self.models):
            h.update("\x1f".join(row).encode())
            h.update(b"\x1e")
        return h.hexdigest()


def pin_sources(packages: list[Package]) -> PinnedSources:
    return PinnedSources(
        revisions=tuple((m.package, m.revision, m.checksum) for p in packages for m in p.migrations),
        models=tuple((p.name, models_checksum(p)) for p in packages if p.models),
    )


def pin_registry(registry: PackageRegistry) -> PinnedSources:
    return pin_sources(registry.ordered())


def changes(pinned: PinnedSources, current: PinnedSources) -> list[str]:
    """What differs between the pinned sources and today's, in words (empty when equal)."""
    if pinned == current:
        return []
    out: list[str] = []
    before = {(p, r): c for p, r, c in pinned.revisions}
    after = {(p, r): c for p, r, c in current.revisions}
    added = [f"{p}:{r}" for (p, r) in after if (p, r) not in before]
    removed = [f"{p}:{r}" for (p, r) in before if (p, r) not in after]
    edited = [f"{p}:{r}" for (p, r), c in after.items() if (p, r) in before and before[(p, r)] != c]
    if added:
        out.append("new revision(s): " + ", ".join(added[:10]))
    if removed:
        out.append("revision(s) removed: " + ", ".join(removed[:10]))
    if edited:
        out.append("file(s) changed: " + ", ".join(edited[:10]))
    models_before, models_after = dict(pinned.models), dict(current.models)
    for name in sorted(set(models_before) | set(models_after)):
        if models_before.get(name) != models_after.get(name):
            out.append(f"models of package {name!r} changed")
    if not out:
        out.append("the order of the revisions changed")
    return out
