"""Which live tables verify has to read the shape of, and which it only has to find.

dbinit's own tables (the ledger, the snapshots, the clones and protection tables, every package's
version table) are expected by name only: verify reports one missing, never compares its columns
(`expected_schema` gives them the owner `dbinit` and no shape). Their presence is already proven
by the catalog digest query, which lists every table of the schema; reading their shapes (500
version tables at 500 packages) is work whose result nothing looks at.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from dbinit_pipeline.database.catalog import TableShape
from dbinit_pipeline.migrations.package import Package
from dbinit_pipeline.verify.expected import BOOKKEEPING_TABLES, OPTIONAL_TABLES

# Stands in `live` for a dbinit table that is present and whose shape is never compared.
PRESENT_ONLY = TableShape("", (), (), frozenset(), frozenset(), frozenset())


def found_by_name_only(
    packages: Sequence[Package],
    snapshot_tables: Iterable[str],
    present: Iterable[str],
) -> set[str]:
    """The present tables that are dbinit's bookkeeping and belong to no package: a table some
    package declares (in its migrations or a snapshot) is always read, even under such a name."""
    bookkeeping = {*BOOKKEEPING_TABLES, *OPTIONAL_TABLES, *(p.version_table for p in packages)}
    declared = {t for p in packages for t in p.tables} | set(snapshot_tables)
    return {t for t in present if t in bookkeeping and t not in declared}
