"""core: Better Auth's schema and its organization plugin

Revision ID: c0a1core0002
Revises: c0a1core0001

The tables keep dbinit's names (users, sessions, accounts, verifications, workspaces,
workspace_members); examples/better-auth/dbinit-schema.mjs maps Better Auth's models and fields
onto them. Types, nullability, uniqueness, indexes, foreign keys and delete rules are those
Better Auth's own migrations give each dialect: text on PostgreSQL; on MySQL varchar(255) for
unique, indexed or sortable strings and text for the rest (ids stay varchar(64) there).

Ownership of a workspace becomes what Better Auth writes: a member row with role "owner". Every
workspace's owner_id is carried into such a row before the column goes, so no owner is lost and
deleting a user who owns a workspace no longer fails on a RESTRICT foreign key.
"""

import sqlalchemy as sa
from alembic import op

revision = "c0a1core0002"
down_revision = "c0a1core0001"

OLD_ID = sa.String(64)
NOW = sa.func.now()


def _text(mysql_type=None):
    """Better Auth's string column: text on PostgreSQL, `mysql_type` (default text) on MySQL."""
    return sa.Text().with_variant(mysql_type or sa.Text(), "mysql", "mariadb")


ID = _text(sa.String(64))
BOUNDED = _text(sa.String(255))  # unique, indexed or sortable strings

# (table, column, type before, type now, nullable, server default)
RETYPED = (
    ("users", "id", OLD_ID, ID, False, None),
    ("users", "name", sa.String(255), BOUNDED, False, None),
    ("users", "email", sa.String(255), BOUNDED, False, None),
    ("sessions", "id", OLD_ID, ID, False, None),
    ("sessions", "user_id", OLD_ID, ID, False, None),
    ("sessions", "token", sa.String(255), BOUNDED, False, None),
    ("sessions", "ip_address", sa.String(64), _text(), True, None),
    ("accounts", "id", OLD_ID, ID, False, None),
    ("accounts", "user_id", OLD_ID, ID, False, None),
    ("accounts", "account_id", sa.String(255), _text(), False, None),
    ("accounts", "provider_id", sa.String(255), _text(), False, None),
    ("verifications", "id", OLD_ID, ID, False, None),
    ("verifications", "identifier", sa.String(255), BOUNDED, False, None),
    ("workspaces", "id", OLD_ID, ID, False, None),
    ("workspaces", "name", sa.String(255), BOUNDED, False, None),
    ("workspaces", "slug", sa.String(255), BOUNDED, False, None),
    ("workspace_members", "id", OLD_ID, ID, False, None),
    ("workspace_members", "workspace_id", OLD_ID, ID, False, None),
    ("workspace_members", "user_id", OLD_ID, ID, False, None),
    ("workspace_members", "role", sa.String(32), BOUNDED, False, "member"),
)

# The foreign key the first revision declared without a name, as each server named it.
OWNER_FK = {"postgresql": "workspaces_owner_id_fkey", "mysql": "workspaces_ibfk_1", "mariadb": "workspaces_ibfk_1"}


def _owners_become_members():
    op.execute(
        "UPDATE workspace_members SET role = 'owner'"
        " WHERE role NOT LIKE '%owner%' AND EXISTS (SELECT 1 FROM workspaces w"
        " WHERE w.id = workspace_members.workspace_id AND w.owner_id = workspace_members.user_id)"
    )
    op.execute(
        "INSERT INTO workspace_members (id, workspace_id, user_id, role, created_at)"
        " SELECT md5(concat('owner:', w.id, ':', w.owner_id)), w.id, w.owner_id, 'owner', w.created_at"
        " FROM workspaces w WHERE NOT EXISTS (SELECT 1 FROM workspace_members m"
        " WHERE m.workspace_id = w.id AND m.user_id = w.owner_id)"
    )


def upgrade():
    dialect = op.get_context().dialect
    _owners_become_members()
    op.drop_constraint(OWNER_FK[dialect.name], "workspaces", type_="foreignkey")
    op.drop_index("ix_workspaces_owner_id", table_name="workspaces")
    op.drop_column("workspaces", "owner_id")
    op.drop_column("workspaces", "updated_at")
    # Better Auth declares neither: it links one provider account per user by itself, and
    # checks membership before it adds a member.
    op.drop_constraint("uq_accounts_provider_account", "accounts", type_="unique")
    op.drop_constraint("uq_workspace_members_workspace_user", "workspace_members", type_="unique")
    for table, column, before, now, nullable, default in RETYPED:
        if str(before.compile(dialect=dialect)) == str(now.compile(dialect=dialect)):
            continue
        op.alter_column(
            table,
            column,
            type_=now,
            existing_type=before,
            existing_nullable=nullable,
            existing_server_default=default,
        )

    op.add_column("sessions", sa.Column("active_workspace_id", _text(), nullable=True))
    op.add_column("sessions", sa.Column("active_team_id", _text(), nullable=True))
    op.add_column("workspaces", sa.Column("logo", _text(), nullable=True))
    op.add_column("workspaces", sa.Column("metadata", _text(), nullable=True))

    op.create_table(
        "workspace_invitations",
        sa.Column("id", ID, primary_key=True),
        sa.Column("workspace_id", ID, sa.ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("email", BOUNDED, nullable=False, index=True),
        sa.Column("role", BOUNDED, nullable=True),
        sa.Column("team_id", BOUNDED, nullable=True),
        sa.Column("status", BOUNDED, nullable=False, server_default="pending"),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("inviter_id", ID, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    )
    op.create_table(
        "workspace_teams",
        sa.Column("id", ID, primary_key=True),
        sa.Column("name", _text(), nullable=False),
        sa.Column("member_count", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("workspace_id", ID, sa.ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "workspace_team_members",
        sa.Column("id", ID, primary_key=True),
        sa.Column("team_id", ID, sa.ForeignKey("workspace_teams.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("user_id", ID, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("membership_key", BOUNDED, nullable=True, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade():
    dialect = op.get_context().dialect
    for table in ("workspace_team_members", "workspace_teams", "workspace_invitations"):
        op.drop_table(table)
    for table, column in (
        ("workspaces", "metadata"),
        ("workspaces", "logo"),
        ("sessions", "active_team_id"),
        ("sessions", "active_workspace_id"),
    ):
        op.drop_column(table, column)
    for table, column, before, now, nullable, default in reversed(RETYPED):
        if str(before.compile(dialect=dialect)) != str(now.compile(dialect=dialect)):
            op.alter_column(
                table,
                column,
                type_=before,
                existing_type=now,
                existing_nullable=nullable,
                existing_server_default=default,
            )
    op.create_unique_constraint("uq_workspace_members_workspace_user", "workspace_members", ["workspace_id", "user_id"])
    op.create_unique_constraint("uq_accounts_provider_account", "accounts", ["provider_id", "account_id"])
    op.add_column("workspaces", sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW))
    # A workspace whose owners all left has none to restore: owner_id comes back nullable.
    op.add_column("workspaces", sa.Column("owner_id", OLD_ID, nullable=True))
    op.execute(
        "UPDATE workspaces SET owner_id = (SELECT MIN(m.user_id) FROM workspace_members m"
        " WHERE m.workspace_id = workspaces.id AND m.role LIKE '%owner%')"
    )
    op.create_index("ix_workspaces_owner_id", "workspaces", ["owner_id"])
    op.create_foreign_key(
        OWNER_FK[dialect.name], "workspaces", "users", ["owner_id"], ["id"], ondelete="RESTRICT"
    )
