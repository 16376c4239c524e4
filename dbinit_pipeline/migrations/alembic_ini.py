"""What an existing Alembic project's `alembic.ini` says about its layout, read without running it.

A package whose `package.yaml` names `alembic_ini:` is that project: its revision scripts are in
the ini's `version_locations` (else `<script_location>/versions`), its env.py in
`script_location`, and its version table is the ini's `version_table` option, else package.yaml's
`version_table`, else Alembic's default `alembic_version` (what `alembic upgrade` uses when env.py
names none). Reading the ini imports nothing and changes no `sys.path`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic import util as alembic_util
from alembic.config import Config

from dbinit_pipeline.errors import PackageError

DEFAULT_VERSION_TABLE = "alembic_version"


@dataclass(frozen=True)
class ProjectLayout:
    """Where an Alembic project keeps its env.py and revision scripts."""

    ini: Path
    script_location: Path
    versions: Path
    version_table: str | None  # as the ini states it; None when it does not


def read_layout(ini: Path, manifest_path: Path) -> ProjectLayout:
    """The layout `ini` declares; a missing file or folder is a `PackageError` naming it."""
    if not ini.is_file():
        raise PackageError(
            f"{manifest_path}: alembic_ini points at {ini}, which is not a file",
            suggestions=[f"Fix alembic_ini: in {manifest_path} (relative to that file)."],
        )
    try:
        config = Config(str(ini))
        location = config.get_alembic_option("script_location")
        versions = config.get_version_locations_list()
        version_table = config.get_alembic_option("version_table")
    except Exception as exc:
        raise PackageError(
            f"{ini}: cannot be read as an Alembic configuration: {type(exc).__name__}: {exc}",
            suggestions=[f"Fix {ini}; `alembic -c {ini} heads` must work."],
        ) from None
    if not location:
        raise PackageError(
            f"{ini}: has no script_location",
            suggestions=[f"Add script_location = %(here)s/alembic to the [alembic] section of {ini}."],
        )
    script_location = _folder(location, ini)
    if versions and len(versions) > 1:
        raise PackageError(
            f"{ini}: version_locations names {len(versions)} folders; a dbinit package has one history",
            suggestions=["Make each folder a package of its own (one alembic.ini each), or merge them."],
        )
    folder = _folder(versions[0], ini) if versions else script_location / "versions"
    for what, path in (("script_location", script_location), ("versions folder", folder)):
        if not path.is_dir():
            raise PackageError(
                f"{ini}: its {what} {path} is not a folder",
                suggestions=[
                    f"Fix {ini} (relative paths are relative to the current directory in "
                    "Alembic; use %(here)s to make them relative to the ini)."
                ],
            )
    if not (script_location / "env.py").is_file():
        raise PackageError(
            f"{ini}: {script_location} has no env.py",
            suggestions=[f"Point script_location in {ini} at the folder that holds env.py."],
        )
    return ProjectLayout(ini, script_location, folder, version_table or None)


def _folder(location: str, ini: Path) -> Path:
    path = Path(alembic_util.coerce_resource_to_filename(location))
    # Alembic resolves a relative location against the working directory; a package is read from
    # anywhere, so the folder of the ini (where `alembic` is run from) stands in for it.
    return path if path.is_absolute() else (ini.parent / path).resolve()
