"""Alembic's environment: the connection is the caller's (common/prediction_log/migrate.py),
which holds the lock that serializes processes migrating at once."""

from __future__ import annotations

from alembic import context

from common.tables import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata)
with context.begin_transaction():
    context.run_migrations()
