"""Schema machinery: packages, their registry and order, the ledger and the Alembic runner."""
