"""The team's models module: env.py imports it (through prepend_sys_path) for its MetaData."""

import sqlalchemy as sa

# Names every constraint and index the migrations leave unnamed; without this env.py, PostgreSQL
# and MariaDB would pick their own names (accounts_pkey, accounts_email_key, ...).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

# Read by a revision script: revisions may import the project's own modules.
PROJECT_STATES = ("draft", "active", "archived")

imported = []  # env.py appends to it: an import side effect the tests can see
