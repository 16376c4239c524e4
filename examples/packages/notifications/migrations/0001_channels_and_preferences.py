"""notifications: channels and preferences

Revision ID: n0t1f0000001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "n0t1f0000001"
down_revision = None


def upgrade():
    op.create_table(
        "notification_channels",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("workspace_id", sa.String(64), sa.ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
    )
    op.create_table(
        "notification_preferences",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(64), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("channel_id", sa.String(64), sa.ForeignKey("notification_channels.id", ondelete="CASCADE"), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.UniqueConstraint("user_id", "channel_id", name="uq_notification_preferences_user_channel"),
    )


def downgrade():
    op.drop_table("notification_preferences")
    op.drop_table("notification_channels")
