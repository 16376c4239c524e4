"""A package schema on disk: `package.yaml` and its Alembic revision scripts.

Reading a package never imports its scripts: revision ids come from the scripts' header
assignments, and the tables each script creates (and the tables its foreign keys point to)
from its syntax tree, so validation and the no-op path stay cheap and touch nothing.

Every file is read and hashed on every run (the sha256 is what the ledger compares), but what
is derived from a file's content (its revision ids, tables and foreign keys, a manifest's
fields) is a function of that content alone, so a `FactsCache` keeps it keyed by the sha256:
with 2,000 scripts the syntax-tree walk costs seconds, the lookup a millisecond.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib.util
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from alembic.script.revision import Revision, RevisionError, RevisionMap
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dbinit_pipeline.configuration import validation_problems
from dbinit_pipeline.database.providers.plain_ddl import imports_foreign
from dbinit_pipeline.errors import ErrorCode, PackageError
from dbinit_pipeline.fastpath.facts_cache import FactsCache
from dbinit_pipeline.migrations.alembic_ini import DEFAULT_VERSION_TABLE, read_layout

REVISION_MAX = 32  # alembic_version.version_num is VARCHAR(32)
PACKAGE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
VERSION_TABLE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,59}$")
_REVISION = re.compile(r"^revision\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", re.MULTILINE)
_DOWN = re.compile(r"^down_revision\s*(?::[^=]*)?=\s*(.+)$", re.MULTILINE)
_DEPENDS = re.compile(r"^depends_on\s*(?::[^=]*)?=\s*(.+)$", re.MULTILINE)
_LABELS = re.compile(r"^branch_labels\s*(?::[^=]*)?=\s*(.+)$", re.MULTILINE)
_SQL_CREATE = re.compile(r"create\s+table\s+(?:if\s+not\s+exists\s+)?[\"`]?(\w+)", re.IGNORECASE)
_SQL_REFERENCES = re.compile(r"references\s+[\"`]?(\w+)", re.IGNORECASE)
_SQL_RENAME = re.compile(
    r"alter\s+table\s+(?:if\s+exists\s+)?[\"`]?(\w+)[\"`]?\s+rename\s+to\s+[\"`]?(\w+)", re.IGNORECASE
)
_SQL_DROP = re.compile(r"drop\s+table\s+(?:if\s+exists\s+)?[\"`]?(\w+)", re.IGNORECASE)
# A script that reaches for the DBAPI connection itself runs outside SQLAlchemy's events, so the
# runner must not have any of its own statements still in flight while that script runs.
_DBAPI_ACCESS = re.compile(r"\b(cursor|driver_connection|dbapi_connection)\b")
# libyaml when PyYAML was built with it: ten times faster on 500 manifests.
_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class InstalledFolder(BaseModel):
    """A folder inside an installed Python package: `{package: optuna, path: storages/_rdb/alembic/versions}`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    package: str
    path: str = ""

    @field_validator("package")
    @classmethod
    def _top_level(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError("name a top-level importable package (no dots); the rest goes in path")
        return value


class Manifest(BaseModel):
    """The contents of `package.yaml`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: str = "0.0.0"
    description: str = ""
    depends_on: list[str] = Field(default_factory=list)
    models: str | None = None
    # Alembic's version table for this package's history; default `alembic_version_<name>`.
    version_table: str | None = None
    # Where the revision scripts are: `migrations/` beside package.yaml unless this names a folder
    # (relative to package.yaml) or a folder of an installed distribution (an Alembic history a
    # project ships in its wheel).
    migrations: str | InstalledFolder | None = None
    # An existing Alembic project (relative to package.yaml): its scripts, env.py and version table
    # come from it, and dbinit runs it through its own env.py (see alembic_ini.py).
    alembic_ini: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not PACKAGE_NAME.fullmatch(value):
            raise ValueError("use lowercase letters, digits and underscores, starting with a letter")
        return value

    @field_validator("version_table")
    @classmethod
    def _version_table(cls, value: str | None) -> str | None:
        if value is not None and not VERSION_TABLE_NAME.fullmatch(value):
            raise ValueError("use letters, digits and underscores (at most 60), starting with a letter")
        return value

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, value: object) -> str:
        return str(value)


@dataclass(frozen=True)
class Migration:
    """One revision script of one package."""

    package: str
    revision: str
    down_revisions: tuple[str, ...]
    path: Path
    checksum: str
    creates_tables: tuple[str, ...] = ()
    foreign_keys: tuple[tuple[str, str], ...] = ()
    drops_tables: tuple[str, ...] = ()
    # Alembic's depends_on (revisions or branch labels, of this package or another) and branch_labels.
    depends_on: tuple[str, ...] = ()
    branch_labels: tuple[str, ...] = ()
    # ("rename", old, new) for every table rename (op.rename_table, ALTER TABLE ... RENAME TO).
    renames_tables: tuple[tuple[str, str], ...] = ()
    uses_dbapi: bool = False
    # The script imports a module whose DDL compile hooks plain Alembic would apply (plain_ddl.py).
    imports_foreign: bool = False
    # Where the runner may keep this script's compiled code (see `FactsCache.code_dir`).
    code_cache: Path | None = field(default=None, compare=False, repr=False)

    @property
    def references(self) -> tuple[str, ...]:
        """Tables this script's foreign keys point to."""
        return tuple(dict.fromkeys(r for _, r in self.foreign_keys))

    @property
    def key(self) -> tuple[str, str]:
        return (self.package, self.revision)


@dataclass(frozen=True)
class Package:
    """A package schema: its manifest and its migrations in apply order."""

    name: str
    version: str
    description: str
    depends_on: tuple[str, ...]
    path: Path
    manifest_path: Path
    migrations: tuple[Migration, ...]
    models: str | None = None
    problems: tuple[str, ...] = field(default=())
    declared_version_table: str | None = None
    # The folder of the revision scripts (package.yaml's `migrations:`, else `migrations/`).
    migrations_dir: Path | None = None
    # The project's alembic.ini when the package is an existing Alembic project.
    alembic_ini: Path | None = None
    # PostgreSQL schema its scripts run in and its tables live in (the core's `core.schema`);
    # None: the connection's current schema. See `core_placement`.
    schema: str | None = None

    @property
    def version_table(self) -> str:
        """Alembic's version table of this package: package.yaml's `version_table`, else
        `alembic_version_<name>`; `<schema>.<table>` where the package has a schema."""
        name = self.declared_version_table or f"alembic_version_{self.name}"
        return f"{self.schema}.{name}" if self.schema else name

    @property
    def head(self) -> str | None:
        return self.migrations[-1].revision if self.migrations else None

    @property
    def tables(self) -> tuple[str, ...]:
        """Tables the package's migrations leave behind (created, and not dropped later)."""
        alive: dict[str, None] = {}
        for m in self.migrations:
            for t in m.creates_tables:
                alive[t] = None
            for old, new in m.renames_tables:
                if old in alive:
                    alive.pop(old)
                    alive[new] = None
            for t in m.drops_tables:
                alive.pop(t, None)
        return tuple(alive)


def _parse_down(raw: str, path: Path) -> tuple[str, ...]:
    raw = raw.split("#", 1)[0].strip()
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        raise PackageError(
            f"{path}: down_revision must be None, a string or a tuple of strings",
            suggestions=[f"Fix down_revision in {path}."],
        ) from None
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (tuple, list)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise PackageError(f"{path}: down_revision must be None, a string or a tuple of strings")


def _string_arg(node: ast.expr) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _call_name(node: ast.Call) -> str:
    func = node.func
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _fk_target(node: ast.Call) -> str | None:
    """The referred table of a ForeignKey("t.c") or ForeignKeyConstraint(cols, ["t.c"])."""
    name = _call_name(node)
    target: str | None = None
    if name == "ForeignKey" and node.args:
        target = _string_arg(node.args[0])
    elif name == "ForeignKeyConstraint" and len(node.args) >= 2:
        cols = node.args[1]
        if isinstance(cols, (ast.List, ast.Tuple)) and cols.elts:
            target = _string_arg(cols.elts[0])
    if target and "." in target:
        return target.rsplit(".", 1)[0].split(".")[-1]
    return None


def _upgrade_tree(source: str | ast.Module) -> ast.Module | None:
    """A script's syntax tree without its downgrade() (it undoes, it does not declare); None when
    it does not parse. A tree passed in is that, already."""
    if isinstance(source, ast.Module):
        return source
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    tree.body = [n for n in tree.body if not (isinstance(n, ast.FunctionDef) and n.name == "downgrade")]
    return tree


def table_renames(source: str | ast.Module) -> tuple[tuple[str, str], ...]:
    """Tables a script renames, (old, new) in source order: op.rename_table and raw SQL."""
    tree = _upgrade_tree(source)
    if tree is None:
        return ()
    found: list[tuple[int, int, str, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            for match in _SQL_RENAME.finditer(node.value):
                found.append((node.lineno, node.col_offset, match.group(1), match.group(2)))
        elif isinstance(node, ast.Call) and _call_name(node) == "rename_table" and len(node.args) >= 2:
            old, new = _string_arg(node.args[0]), _string_arg(node.args[1])
            if old and new:
                found.append((node.lineno, node.col_offset, old, new))
    return tuple((old, new) for _, _, old, new in sorted(found))


def table_facts(
    source: str | ast.Module,
) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...], tuple[str, ...]]:
    """Tables a script creates, its foreign keys as (table, referred table), and the tables it
    drops, read from its syntax tree (downgrade() is skipped: it undoes, it does not declare)."""
    creates: list[str] = []
    drops: list[str] = []
    fks: list[tuple[str, str]] = []
    tree = _upgrade_tree(source)
    if tree is None:
        return (), (), ()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and len(node.value) > 12:
            # Raw SQL through op.execute: CREATE TABLE t (... REFERENCES r ...)
            for stmt in node.value.split(";"):
                drops.extend(m.group(1) for m in _SQL_DROP.finditer(stmt))
                created = _SQL_CREATE.search(stmt)
                if created:
                    creates.append(created.group(1))
                    fks.extend((created.group(1), m.group(1)) for m in _SQL_REFERENCES.finditer(stmt))
        if not isinstance(node, ast.Call):
            continue
        name = _call_name(node)
        if name == "create_table" and node.args:
            table = _string_arg(node.args[0])
            if not table:
                continue
            creates.append(table)
            for inner in ast.walk(node):
                if isinstance(inner, ast.Call):
                    referred = _fk_target(inner)
                    if referred:
                        fks.append((table, referred))
        elif name == "drop_table" and node.args:
            dropped = _string_arg(node.args[0])
            if dropped:
                drops.append(dropped)
        elif name == "create_foreign_key" and len(node.args) >= 3:
            source_table, referred = _string_arg(node.args[1]), _string_arg(node.args[2])
            if source_table and referred:
                fks.append((source_table, referred))
    return tuple(dict.fromkeys(creates)), tuple(dict.fromkeys(fks)), tuple(dict.fromkeys(drops))


def _script_facts(package: str, path: Path, source: str) -> dict[str, Any]:
    """What a script declares, from its text alone (a `PackageError` when it is no revision script)."""
    revision = _REVISION.search(source)
    down = _DOWN.search(source)
    if revision is None or down is None:
        raise PackageError(
            f"Package {package!r}: {path} is not an Alembic revision script "
            '(it needs top-level `revision = "..."` and `down_revision = ...`)',
            suggestions=[f"Scaffold revisions with `dbinit new-migration {package} -m MESSAGE`."],
        )
    tree = _upgrade_tree(source)  # parsed once for both walks
    creates, fks, drops = table_facts(tree) if tree is not None else ((), (), ())
    depends, labels = _DEPENDS.search(source), _LABELS.search(source)
    return {
        "depends": list(_parse_down(depends.group(1), path)) if depends else [],
        "labels": list(_parse_down(labels.group(1), path)) if labels else [],
        "revision": revision.group(1),
        "down": list(_parse_down(down.group(1), path)),
        "creates": list(creates),
        "fks": [list(fk) for fk in fks],
        "drops": list(drops),
        "renames": [list(r) for r in table_renames(tree)] if tree is not None else [],
        "dbapi": bool(_DBAPI_ACCESS.search(source)),
        "foreign": imports_foreign(source),
    }


def read_migration(package: str, path: Path, cache: FactsCache | None = None) -> Migration:
    """Read one revision script without importing it; its facts come from `cache` when it has
    them for this exact content."""
    data = path.read_bytes()
    checksum = hashlib.sha256(data).hexdigest()
    facts = cache.script(checksum) if cache is not None else None
    if facts is None:
        facts = _script_facts(package, path, data.decode("utf-8", errors="replace"))
        if cache is not None:
            cache.put_script(checksum, facts)
    revision = str(facts["revision"])
    if len(revision) > REVISION_MAX or not revision.isprintable() or revision != revision.strip():
        raise PackageError(
            f"Package {package!r}: {path} has revision id {revision[:80]!r}, which "
            + (
                f"is longer than {REVISION_MAX} characters (Alembic's version table holds {REVISION_MAX})"
                if len(revision) > REVISION_MAX
                else "has spaces or control characters"
            ),
            code=ErrorCode.PACKAGE_INVALID,
            suggestions=[
                f"Use a short id such as the 12 hex digits `dbinit new-migration {package}` writes."
            ],
        )
    return Migration(
        package=package,
        revision=facts["revision"],
        down_revisions=tuple(facts["down"]),
        path=path,
        checksum=checksum,
        creates_tables=tuple(facts["creates"]),
        foreign_keys=tuple((fk[0], fk[1]) for fk in facts["fks"]),
        drops_tables=tuple(facts["drops"]),
        renames_tables=tuple((r[0], r[1]) for r in facts.get("renames", ())),
        depends_on=tuple(facts.get("depends", ())),
        branch_labels=tuple(facts.get("labels", ())),
        uses_dbapi=bool(facts["dbapi"]),
        imports_foreign=bool(facts.get("foreign", False)),
        code_cache=cache.code_dir if cache is not None else None,
    )


_DERIVATION: list[str] = []


def facts_derivation() -> str:
    """A digest of this module's source: the facts are only as good as the code that derived them."""
    if not _DERIVATION:
        _DERIVATION.append(hashlib.sha256(Path(__file__).read_bytes()).hexdigest())
    return _DERIVATION[0]


def order_chain(package: str, migrations: list[Migration]) -> tuple[Migration, ...]:
    """Order one package's revisions base first; a broken chain is a `PackageError`."""
    by_rev: dict[str, Migration] = {}
    for m in migrations:
        if m.revision in by_rev:
            raise PackageError(
                f"Package {package!r}: revision {m.revision!r} is declared twice, in "
                f"{by_rev[m.revision].path.name} and {m.path.name}",
                suggestions=["Give each revision script its own revision id."],
            )
        by_rev[m.revision] = m
    for m in migrations:
        for down in m.down_revisions:
            if down not in by_rev:
                raise PackageError(
                    f"Package {package!r}: {m.path} has down_revision {down!r}, "
                    "which no script of this package declares",
                    code=ErrorCode.BROKEN_REVISION_CHAIN,
                    suggestions=[
                        "Point down_revision at the previous revision of the same package "
                        "(None for the first); dependencies on other packages go in package.yaml."
                    ],
                )
    bases = [m for m in migrations if not m.down_revisions]
    children: dict[str, list[str]] = {r: [] for r in by_rev}
    for m in migrations:
        for down in m.down_revisions:
            children[down].append(m.revision)
    heads = sorted(r for r, kids in children.items() if not kids)
    if migrations and not bases:
        raise PackageError(
            f"Package {package!r} must have a first revision (down_revision = None); found none (a cycle)",
            code=ErrorCode.BROKEN_REVISION_CHAIN,
            suggestions=["Chain the revisions: each script's down_revision names the one before it."],
        )
    if len(heads) > 1:
        files = ", ".join(by_rev[h].path.name for h in heads)
        raise PackageError(
            f"Package {package!r} has {len(heads)} heads ({files}): its revisions fork",
            code=ErrorCode.MULTIPLE_HEADS,
            suggestions=[
                "Point one of the forked scripts' down_revision at the other, or add a merge revision."
            ],
        )
    # Alembic's own graph decides the order, as `alembic upgrade heads` would walk it: every
    # down_revision and every depends_on inside the package (branch labels included) comes first.
    # A depends_on naming another package's revision orders the packages (see the registry).
    labels = {label for m in migrations for label in m.branch_labels}
    revisions = [
        Revision(
            m.revision,
            m.down_revisions or None,
            dependencies=tuple(d for d in m.depends_on if d in by_rev or d in labels) or None,
            branch_labels=m.branch_labels or None,
        )
        for m in migrations
    ]
    try:
        graph = RevisionMap(lambda: revisions)
        walked = list(graph.iterate_revisions("heads", "base")) if migrations else []
    except (RevisionError, KeyError) as exc:
        raise PackageError(
            f"Package {package!r}: Alembic cannot order its revisions: {type(exc).__name__}: {exc}",
            code=ErrorCode.BROKEN_REVISION_CHAIN,
            suggestions=["Fix the down_revision, depends_on or branch_labels named above."],
        ) from None
    ordered = [by_rev[r.revision] for r in reversed(walked) if r is not None]
    if len(ordered) != len(migrations):
        raise PackageError(
            f"Package {package!r}: its revisions form a cycle", code=ErrorCode.BROKEN_REVISION_CHAIN
        )
    return tuple(ordered)


def _load_manifest(manifest_path: Path, cache: FactsCache | None) -> Any:
    try:
        data = manifest_path.read_bytes()
    except OSError as exc:
        raise PackageError(
            f"{manifest_path}: cannot be read as YAML ({exc})",
            suggestions=[f"Fix {manifest_path}."],
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    cached = cache.manifest(digest) if cache is not None else None
    if cached is not None:
        return cached
    try:
        raw = yaml.load(data.decode("utf-8"), Loader=_YAML_LOADER)
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise PackageError(
            f"{manifest_path}: cannot be read as YAML ({exc})",
            suggestions=[f"Fix {manifest_path}."],
        ) from None
    if cache is not None and isinstance(raw, dict):
        with contextlib.suppress(ValidationError, TypeError, ValueError):
            Manifest.model_validate(raw)
            json.dumps(raw)
            cache.put_manifest(digest, raw)
    return raw


def _script_names(folder: Path) -> list[str]:
    """`*.py` in `folder` except `_*`, by name (what `sorted(folder.glob("*.py"))` gives, without
    building and comparing 2,000 Path objects)."""
    try:
        with os.scandir(folder) as entries:
            return sorted(e.name for e in entries if e.name.endswith(".py") and not e.name.startswith("_"))
    except (FileNotFoundError, NotADirectoryError):
        return []


def migrations_folder(folder: Path, manifest: Manifest, manifest_path: Path) -> Path:
    """The folder of a package's revision scripts (see `Manifest.migrations`)."""
    where = manifest.migrations
    if where is None:
        return folder / "migrations"
    if isinstance(where, str):
        path = Path(where).expanduser()
        path = path if path.is_absolute() else folder / path
    else:
        spec = importlib.util.find_spec(where.package)  # a top-level name: nothing is imported
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        if not locations:
            raise PackageError(
                f"{manifest_path}: migrations names the installed package {where.package!r}, which is not "
                "installed in this environment",
                suggestions=[f"pip install the distribution that provides {where.package!r}."],
            )
        path = Path(locations[0]) / where.path
    if not path.is_dir():
        raise PackageError(
            f"{manifest_path}: migrations points at {path}, which is not a folder",
            suggestions=[f"Fix migrations: in {manifest_path}."],
        )
    return path


def read_package(folder: Path, cache: FactsCache | None = None) -> Package:
    """Read `folder/package.yaml` and `folder/migrations/*.py` (facts from `cache` where it has them)."""
    manifest_path = folder / "package.yaml"
    raw = _load_manifest(manifest_path, cache)
    try:
        manifest = Manifest.model_validate(raw if isinstance(raw, dict) else {})
    except ValidationError as exc:
        problems = "; ".join(validation_problems(exc))
        raise PackageError(
            f"{manifest_path}: invalid package manifest: {problems}",
            suggestions=[
                f"Fix {manifest_path}: name, version, description, depends_on, models, version_table, "
                "migrations, alembic_ini."
            ],
        ) from None
    alembic_ini: Path | None = None
    version_table = manifest.version_table
    if manifest.alembic_ini is not None:
        if manifest.migrations is not None:
            raise PackageError(
                f"{manifest_path}: names both alembic_ini and migrations",
                suggestions=["Keep alembic_ini: the scripts' folder comes from its version_locations."],
            )
        layout = read_layout((folder / Path(manifest.alembic_ini).expanduser()).resolve(), manifest_path)
        alembic_ini, migrations_dir = layout.ini, layout.versions
        version_table = layout.version_table or version_table or DEFAULT_VERSION_TABLE
    else:
        migrations_dir = migrations_folder(folder, manifest, manifest_path)
    migrations = [
        read_migration(manifest.name, migrations_dir / name, cache) for name in _script_names(migrations_dir)
    ]
    return Package(
        name=manifest.name,
        version=manifest.version,
        description=manifest.description,
        depends_on=tuple(d for d in manifest.depends_on if d != "core"),
        path=folder,
        manifest_path=manifest_path,
        migrations=order_chain(manifest.name, migrations),
        models=manifest.models,
        declared_version_table=version_table,
        migrations_dir=migrations_dir,
        alembic_ini=alembic_ini,
    )
