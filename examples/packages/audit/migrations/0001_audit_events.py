"""audit: events

Revision ID: aud170000001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "aud170000001"
down_revision = None


def upgrade():
    op.create_table(
        "audit_events",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=True),
        sa.Column("workspace_id", sa.String(64), sa.ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
        sa.Column("actor_id", sa.String(64), sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
        sa.Column("invoice_id", sa.String(64), sa.ForeignKey("billing_invoices.id", ondelete="SET NULL"), nullable=True),
        sa.Column("channel_id", sa.String(64), sa.ForeignKey("notification_channels.id", ondelete="SET NULL"), nullable=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_audit_events_workspace_occurred", "audit_events", ["workspace_id", "occurred_at"])


def downgrade():
    op.drop_table("audit_events")
