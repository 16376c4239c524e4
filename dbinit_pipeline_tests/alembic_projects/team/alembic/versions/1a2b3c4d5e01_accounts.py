"""accounts

Revision ID: 1a2b3c4d5e01
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "1a2b3c4d5e01"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(200), nullable=False),
        sa.Column("name", sa.String(100), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("email"),
    )
    op.create_index(None, "accounts", ["name"])


def downgrade() -> None:
    op.drop_table("accounts")
