"""The edges `dbinit graph` draws for revision scripts whose `depends_on` names another package's
revision or branch label: dashed, labelled with the revision and what it depends on, beside the
solid edges of package.yaml's `depends_on`."""

from __future__ import annotations

from collections.abc import Iterable

# (package, revision, depends_on entry, package that declares that entry)
RevisionEdge = tuple[str, str, str, str]


def _label(revision: str, target: str) -> str:
    # Mermaid and DOT labels are quoted; a revision id or branch label holds no quote (Alembic
    # ids are identifiers), but one is escaped rather than trusted.
    return f"{revision} depends_on {target}".replace('"', "'")


def mermaid_revision_edges(edges: Iterable[RevisionEdge]) -> list[str]:
    """One dashed Mermaid edge per cross-package `depends_on` of a revision script."""
    return [f'    {pkg} -. "{_label(rev, target)}" .-> {owner}' for pkg, rev, target, owner in edges]


def dot_revision_edges(edges: Iterable[RevisionEdge]) -> list[str]:
    """One dashed DOT edge per cross-package `depends_on` of a revision script."""
    return [
        f'    "{pkg}" -> "{owner}" [style=dashed, label="{_label(rev, target)}"];'
        for pkg, rev, target, owner in edges
    ]
