"""project states, from the project's own module

Revision ID: 1a2b3c4d5e03
Revises: 1a2b3c4d5e02
"""

import sqlalchemy as sa
import team_models
from alembic import op

revision = "1a2b3c4d5e03"
down_revision = "1a2b3c4d5e02"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("projects", sa.Column("state", sa.String(20), nullable=False, server_default="draft"))
    states = ", ".join(f"'{s}'" for s in team_models.PROJECT_STATES)
    op.create_check_constraint("state_known", "projects", f"state IN ({states})")
    op.create_unique_constraint(None, "projects", ["account_id", "title"])
    op.create_index(None, "projects", ["state"])


def downgrade() -> None:
    op.drop_column("projects", "state")
