"""projects

Revision ID: 1a2b3c4d5e02
Revises: 1a2b3c4d5e01
"""

import sqlalchemy as sa
from alembic import op

revision = "1a2b3c4d5e02"
down_revision = "1a2b3c4d5e01"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.CheckConstraint("char_length(title) > 0", name="title_not_empty"),
    )


def downgrade() -> None:
    op.drop_table("projects")
