"""SQLAlchemy models of the core schema: what verify expects after the core migrations.

The tables are Better Auth's (core tables and the organization plugin with teams) under dbinit's
names; `BETTER_AUTH_MODELS` says which Better Auth model each table holds, and
examples/better-auth/dbinit-schema.mjs gives Better Auth the same mapping field by field.
Column types are the ones Better Auth's own migrations choose per dialect: text on PostgreSQL;
on MySQL varchar(255) for unique, indexed or sortable strings, text for the rest, and ids
varchar(64).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

metadata = sa.MetaData()


def _text(mysql_type: sa.types.TypeEngine[Any] | None = None) -> sa.types.TypeEngine[str]:
    return sa.Text().with_variant(mysql_type or sa.Text(), "mysql", "mariadb")


_ID = _text(sa.String(64))
_BOUNDED = _text(sa.String(255))
_WHEN = sa.DateTime(timezone=True)


def _created() -> sa.Column[Any]:
    return sa.Column("created_at", _WHEN, nullable=False, server_default=sa.func.now())


def _updated() -> sa.Column[Any]:
    return sa.Column("updated_at", _WHEN, nullable=False, server_default=sa.func.now())


users = sa.Table(
    "users",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("name", _BOUNDED, nullable=False),
    sa.Column("email", _BOUNDED, nullable=False, unique=True),
    sa.Column("email_verified", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("image", _text(), nullable=True),
    _created(),
    _updated(),
)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("user_id", _ID, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("token", _BOUNDED, nullable=False, unique=True),
    sa.Column("expires_at", _WHEN, nullable=False),
    sa.Column("ip_address", _text(), nullable=True),
    sa.Column("user_agent", _text(), nullable=True),
    _created(),
    _updated(),
    # Not foreign keys in Better Auth either: a session outlives the workspace it pointed to.
    sa.Column("active_workspace_id", _text(), nullable=True),
    sa.Column("active_team_id", _text(), nullable=True),
)

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("user_id", _ID, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("account_id", _text(), nullable=False),
    sa.Column("provider_id", _text(), nullable=False),
    sa.Column("access_token", _text(), nullable=True),
    sa.Column("refresh_token", _text(), nullable=True),
    sa.Column("id_token", _text(), nullable=True),
    sa.Column("access_token_expires_at", _WHEN, nullable=True),
    sa.Column("refresh_token_expires_at", _WHEN, nullable=True),
    sa.Column("scope", _text(), nullable=True),
    sa.Column("password", _text(), nullable=True),
    _created(),
    _updated(),
)

verifications = sa.Table(
    "verifications",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("identifier", _BOUNDED, nullable=False, index=True),
    sa.Column("value", _text(), nullable=False),
    sa.Column("expires_at", _WHEN, nullable=False),
    _created(),
    _updated(),
)

# Better Auth's organization. Its owners are the members whose role includes "owner".
workspaces = sa.Table(
    "workspaces",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("name", _BOUNDED, nullable=False),
    sa.Column("slug", _BOUNDED, nullable=False, unique=True),
    _created(),
    sa.Column("logo", _text(), nullable=True),
    sa.Column("metadata", _text(), nullable=True),
)

workspace_members = sa.Table(
    "workspace_members",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column(
        "workspace_id", _ID, sa.ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    sa.Column("user_id", _ID, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("role", _BOUNDED, nullable=False, server_default="member"),
    _created(),
)

workspace_invitations = sa.Table(
    "workspace_invitations",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column(
        "workspace_id", _ID, sa.ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    sa.Column("email", _BOUNDED, nullable=False, index=True),
    sa.Column("role", _BOUNDED, nullable=True),
    sa.Column("team_id", _BOUNDED, nullable=True),
    sa.Column("status", _BOUNDED, nullable=False, server_default="pending"),
    sa.Column("expires_at", _WHEN, nullable=False),
    _created(),
    # Indexed although Better Auth declares no index: MySQL builds one for the foreign key anyway.
    sa.Column("inviter_id", _ID, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
)

workspace_teams = sa.Table(
    "workspace_teams",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("name", _text(), nullable=False),
    sa.Column("member_count", sa.Integer(), nullable=False, server_default=sa.text("0")),
    sa.Column(
        "workspace_id", _ID, sa.ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    _created(),
    sa.Column("updated_at", _WHEN, nullable=True),
)

workspace_team_members = sa.Table(
    "workspace_team_members",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column(
        "team_id", _ID, sa.ForeignKey("workspace_teams.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    sa.Column("user_id", _ID, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("membership_key", _BOUNDED, nullable=True, unique=True),
    sa.Column("created_at", _WHEN, nullable=True),
)

CORE_TABLES = tuple(metadata.tables)

# Better Auth's model name for each core table.
BETTER_AUTH_MODELS = {
    "user": "users",
    "session": "sessions",
    "account": "accounts",
    "verification": "verifications",
    "organization": "workspaces",
    "member": "workspace_members",
    "invitation": "workspace_invitations",
    "team": "workspace_teams",
    "teamMember": "workspace_team_members",
}
