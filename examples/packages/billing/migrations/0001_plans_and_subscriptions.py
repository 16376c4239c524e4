"""billing: plans and subscriptions

Revision ID: b1f0a0000001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "b1f0a0000001"
down_revision = None


def upgrade():
    op.create_table(
        "billing_plans",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("price_cents", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False, server_default="EUR"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "billing_subscriptions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("workspace_id", sa.String(64), sa.ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
        sa.Column("plan_id", sa.String(64), sa.ForeignKey("billing_plans.id"), nullable=False),
        sa.Column("status", sa.String(32), nullable=False, server_default="active"),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_billing_subscriptions_workspace_id", "billing_subscriptions", ["workspace_id"])


def downgrade():
    op.drop_table("billing_subscriptions")
    op.drop_table("billing_plans")
