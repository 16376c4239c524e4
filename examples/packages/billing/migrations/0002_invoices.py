"""billing: invoices

Revision ID: b1f0a0000002
Revises: b1f0a0000001
"""

import sqlalchemy as sa
from alembic import op

revision = "b1f0a0000002"
down_revision = "b1f0a0000001"


def upgrade():
    op.create_table(
        "billing_invoices",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column(
            "subscription_id",
            sa.String(64),
            sa.ForeignKey("billing_subscriptions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("amount_cents", sa.Integer(), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_billing_invoices_subscription_id", "billing_invoices", ["subscription_id"])


def downgrade():
    op.drop_table("billing_invoices")
