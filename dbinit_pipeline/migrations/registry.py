"""The package registry: discover package schemas, validate them as a set, order them.

Every rule is checked before anything touches a database, and each problem names the package
and the file at fault.
"""

from __future__ import annotations

import heapq
import importlib.metadata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from functools import partial
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from types import ModuleType

from dbinit_pipeline.errors import ErrorCode, PackageError
from dbinit_pipeline.fastpath.facts_cache import FactsCache
from dbinit_pipeline.migrations.core import CORE_PACKAGE_DIR
from dbinit_pipeline.migrations.core_placement import qualified
from dbinit_pipeline.migrations.graph_edges import dot_revision_edges, mermaid_revision_edges
from dbinit_pipeline.migrations.package import Package, facts_derivation, read_package

ENTRY_POINT_GROUP = "dbinit_pipeline.packages"
CORE = "core"


def _package_folders(root: Path) -> list[Path]:
    if (root / "package.yaml").is_file():
        return [root]
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / "package.yaml").is_file())


def entry_point_folders() -> list[tuple[str, Path]]:
    """Folders contributed by installed distributions through the entry-point group."""
    found: list[tuple[str, Path]] = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            target = ep.load()
        except Exception as exc:
            raise PackageError(
                f"Entry point {ep.name!r} ({ep.value}) in group {ENTRY_POINT_GROUP} cannot be loaded: {exc}",
                suggestions=[f"Reinstall the distribution that provides {ep.value}, or uninstall it."],
            ) from None
        if isinstance(target, ModuleType) and target.__file__:
            path = Path(target.__file__).parent
        elif callable(target):
            path = Path(target())
        else:
            path = Path(str(target))
        found.append((f"entry point {ep.name} ({ep.value})", path))
    return found


def find_cycle(graph: Mapping[str, Sequence[str]]) -> list[str] | None:
    """One dependency cycle as a path (first name repeated at the end), or None; names that are
    not nodes of `graph` are left out (they are reported as unregistered)."""
    sorter = TopologicalSorter({node: [d for d in deps if d in graph] for node, deps in graph.items()})
    try:
        sorter.prepare()
    except CycleError as exc:
        # graphlib names the cycle from a node back to itself, each followed by one it needs
        return list(reversed(exc.args[1]))
    return None


class PackageRegistry:
    """A validated set of package schemas, core included, in dependency order."""

    def __init__(self, packages: Iterable[Package]) -> None:
        self._packages = list(packages)
        self.by_name: dict[str, Package] = {}
        # Packages a package must follow because its scripts' depends_on name their revisions.
        self._implied: dict[str, set[str]] = {}
        # (package, revision, depends_on entry, package owning it) for each cross-package depends_on.
        self.revision_edges: list[tuple[str, str, str, str]] = []
        problems = self._validate()
        if problems:
            raise PackageError(
                "Invalid package schemas: " + "; ".join(problems),
                code=ErrorCode.PACKAGE_INVALID,
                details={"problems": problems},
                suggestions=["Fix the packages named above; nothing was applied."],
            )
        self._order = self._topological()

    # -- discovery ---------------------------------------------------------------------
    @classmethod
    def discover(
        cls,
        paths: Sequence[Path],
        *,
        entry_points: bool = True,
        facts_cache: Path | None = None,
        core: bool = True,
        core_schema: str | None = None,
    ) -> PackageRegistry:
        """Core, every package under `paths`, and those installed through entry points.

        With `facts_cache`, what each file declares is kept there keyed by its sha256 (every
        file is still read and hashed: the checksums are always those of the files on disk)."""
        sources: list[tuple[str, Path]] = [("core", CORE_PACKAGE_DIR)] if core else []
        for root in paths:
            if not root.is_dir():
                raise PackageError(
                    f"packages.paths names {root}, which is not a folder",
                    suggestions=["Create the folder or remove it from packages.paths in dbinit.yaml."],
                )
            sources.extend((str(root), folder) for folder in _package_folders(root))
        if entry_points:
            for origin, root in entry_point_folders():
                sources.extend((origin, folder) for folder in _package_folders(root))
        problems: list[str] = []
        packages: list[Package] = []
        cache = FactsCache(facts_cache, facts_derivation()) if facts_cache is not None else None
        for _origin, folder in sources:
            try:
                found = read_package(folder, cache)
                if folder == CORE_PACKAGE_DIR and core_schema:
                    found = replace(found, schema=core_schema)
                packages.append(found)
            except PackageError as exc:
                problems.append(exc.message)
        if cache is not None:
            cache.save()
        if problems:
            raise PackageError(
                "Invalid package schemas: " + "; ".join(problems),
                details={"problems": problems},
                suggestions=["Fix the packages named above; nothing was applied."],
            )
        return cls(packages)

    # -- validation --------------------------------------------------------------------
    def _validate(self) -> list[str]:
        problems: list[str] = []
        for pkg in self._packages:
            other = self.by_name.get(pkg.name)
            if other is not None:
                problems.append(
                    f"package name {pkg.name!r} is declared twice: {other.manifest_path} and {pkg.manifest_path}"
                )
                continue
            self.by_name[pkg.name] = pkg
        if CORE in self.by_name and self.by_name[CORE].path != CORE_PACKAGE_DIR:
            problems.append(
                f"package name 'core' is reserved for the core schema: {self.by_name[CORE].manifest_path}"
            )
        for pkg in self.by_name.values():
            for dep in pkg.depends_on:
                if dep not in self.by_name:
                    problems.append(
                        f"package {pkg.name!r} depends on {dep!r}, which is not registered ({pkg.manifest_path})"
                    )
                if dep == pkg.name:
                    problems.append(f"package {pkg.name!r} depends on itself ({pkg.manifest_path})")
        problems.extend(self._revision_dependencies())
        graph = {name: sorted(self.needs(name)) for name in self.by_name}
        cycle = find_cycle(graph)
        if cycle:
            files = ", ".join(str(self.by_name[n].manifest_path) for n in dict.fromkeys(cycle))
            problems.append(f"dependency cycle: {' -> '.join(cycle)} ({files})")
        revisions: dict[str, Path] = {}
        owners: dict[str, tuple[str, Path]] = {}
        for pkg in self.by_name.values():
            for m in pkg.migrations:
                seen = revisions.get(m.revision)
                if seen is not None and seen != m.path:
                    problems.append(f"revision id {m.revision!r} is used twice: {seen} and {m.path}")
                revisions[m.revision] = m.path
                for table in map(partial(qualified, pkg), m.creates_tables):
                    owner = owners.get(table)
                    if owner is not None and owner[0] != pkg.name:
                        problems.append(
                            f"table {table!r} is created by two packages: {owner[0]!r} ({owner[1]}) "
                            f"and {pkg.name!r} ({m.path})"
                        )
                    owners.setdefault(table, (pkg.name, m.path))
        version_tables: dict[str, Package] = {}
        for pkg in self.by_name.values():
            if not pkg.migrations:
                continue
            holder = version_tables.setdefault(pkg.version_table, pkg)
            if holder is not pkg:
                problems.append(
                    f"packages {holder.name!r} and {pkg.name!r} both keep their history in version table "
                    f"{pkg.version_table!r} ({holder.manifest_path}, {pkg.manifest_path}); give each its own "
                    "version_table in package.yaml"
                )
        if not cycle:
            for pkg in self.by_name.values():
                allowed = {pkg.name, CORE, *self.dependencies_of(pkg.name)}
                for m in pkg.migrations:
                    for table in map(partial(qualified, pkg), m.references):
                        owner = owners.get(table)
                        if owner is not None and owner[0] not in allowed:
                            problems.append(
                                f"package {pkg.name!r} has a foreign key to table {table!r} of package "
                                f"{owner[0]!r}, which it does not depend on ({m.path}); "
                                f"add {owner[0]!r} to depends_on in {pkg.manifest_path}"
                            )
        return problems

    def _revision_dependencies(self) -> list[str]:
        """A script's depends_on naming another package's revision (or branch label) makes its
        package need that package: it is applied first."""
        problems: list[str] = []
        owner: dict[str, str] = {}
        for pkg in self.by_name.values():
            for m in pkg.migrations:
                owner.setdefault(m.revision, pkg.name)
                for label in m.branch_labels:
                    owner.setdefault(label, pkg.name)
        self._implied = {}
        self.revision_edges = []
        for pkg in self.by_name.values():
            for m in pkg.migrations:
                for dep in m.depends_on:
                    found = owner.get(dep)
                    if found is None:
                        problems.append(
                            f"{m.path} has depends_on {dep!r}, which no revision or branch label of any "
                            "package declares"
                        )
                    elif found != pkg.name:
                        self._implied.setdefault(pkg.name, set()).add(found)
                        self.revision_edges.append((pkg.name, m.revision, dep, found))
        return problems

    def needs(self, name: str) -> set[str]:
        """The packages `name` must come after: package.yaml's depends_on and its scripts' depends_on."""
        pkg = self.by_name.get(name)
        declared = set(pkg.depends_on) if pkg is not None else set()
        return declared | self._implied.get(name, set())

    def dependencies_of(self, name: str) -> set[str]:
        """Every package `name` depends on, directly or through others."""
        seen: set[str] = set()
        todo = list(self.needs(name)) if name in self.by_name else []
        while todo:
            dep = todo.pop()
            if dep in seen or dep not in self.by_name:
                continue
            seen.add(dep)
            todo.extend(self.needs(dep))
        return seen

    def _topological(self) -> list[Package]:
        """Core first, then every package after what it needs; among those ready at once, the
        smallest name first (a stable order, so the plan of unchanged packages never changes)."""
        sorter = TopologicalSorter({name: self.needs(name) - {CORE} for name in self.by_name if name != CORE})
        sorter.prepare()
        order: list[Package] = [self.by_name[CORE]] if CORE in self.by_name else []
        ready: list[str] = []
        while sorter.is_active():
            for name in sorter.get_ready():
                heapq.heappush(ready, name)
            name = heapq.heappop(ready)
            order.append(self.by_name[name])
            sorter.done(name)
        return order

    # -- queries -----------------------------------------------------------------------
    def ordered(self) -> list[Package]:
        """All packages, core first, every package after its dependencies."""
        return list(self._order)

    def packages(self) -> list[Package]:
        """Every package but core, in order."""
        return [p for p in self._order if p.name != CORE]

    @property
    def core(self) -> Package:
        return self.by_name[CORE]

    def core_packages(self) -> list[Package]:
        """The core, or nothing where `core: {enabled: false}`."""
        return [self.by_name[CORE]] if CORE in self.by_name else []

    def mermaid(self) -> str:
        """The dependency graph as a Mermaid flowchart (edges point from a package to what it needs)."""
        lines = ["graph TD"]
        for pkg in self._order:
            lines.append(f'    {pkg.name}["{pkg.name} {pkg.version}"]')
        for pkg in self._order:
            deps = pkg.depends_on or ((CORE,) if pkg.name != CORE else ())
            lines.extend(f"    {pkg.name} --> {dep}" for dep in deps)
        lines.extend(mermaid_revision_edges(self.revision_edges))
        return "\n".join(lines) + "\n"

    def dot(self) -> str:
        """The dependency graph in Graphviz DOT."""
        lines = ["digraph packages {", "    rankdir=BT;"]
        for pkg in self._order:
            lines.append(f'    "{pkg.name}" [label="{pkg.name} {pkg.version}"];')
        for pkg in self._order:
            deps = pkg.depends_on or ((CORE,) if pkg.name != CORE else ())
            lines.extend(f'    "{pkg.name}" -> "{dep}";' for dep in deps)
        lines.extend(dot_revision_edges(self.revision_edges))
        lines.append("}")
        return "\n".join(lines) + "\n"
