"""SQLAlchemy models of the core schema: what verify expects after the core migrations."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

_ID = sa.String(64)


def _timestamps() -> list[sa.Column[object]]:
    return [
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    ]


users = sa.Table(
    "users",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("email", sa.String(255), nullable=False, unique=True),
    sa.Column("email_verified", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("image", sa.Text(), nullable=True),
    *_timestamps(),
)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("user_id", _ID, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("token", sa.String(255), nullable=False, unique=True),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ip_address", sa.String(64), nullable=True),
    sa.Column("user_agent", sa.Text(), nullable=True),
    *_timestamps(),
)

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("user_id", _ID, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("account_id", sa.String(255), nullable=False),
    sa.Column("provider_id", sa.String(255), nullable=False),
    sa.Column("access_token", sa.Text(), nullable=True),
    sa.Column("refresh_token", sa.Text(), nullable=True),
    sa.Column("id_token", sa.Text(), nullable=True),
    sa.Column("access_token_expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("refresh_token_expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("scope", sa.Text(), nullable=True),
    sa.Column("password", sa.Text(), nullable=True),
    *_timestamps(),
    sa.UniqueConstraint("provider_id", "account_id", name="uq_accounts_provider_account"),
)

verifications = sa.Table(
    "verifications",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("identifier", sa.String(255), nullable=False, index=True),
    sa.Column("value", sa.Text(), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    *_timestamps(),
)

workspaces = sa.Table(
    "workspaces",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("slug", sa.String(255), nullable=False, unique=True),
    sa.Column("owner_id", _ID, sa.ForeignKey("users.id", ondelete="RESTRICT"), nullable=False, index=True),
    *_timestamps(),
)

workspace_members = sa.Table(
    "workspace_members",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column(
        "workspace_id",
        _ID,
        sa.ForeignKey("workspaces.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("user_id", _ID, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("role", sa.String(32), nullable=False, server_default="member"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.UniqueConstraint("workspace_id", "user_id", name="uq_workspace_members_workspace_user"),
)

CORE_TABLES = tuple(metadata.tables)
