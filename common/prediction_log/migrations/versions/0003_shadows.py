"""Rollout: a shadow version's rows, and the request each one scored again.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("prediction_log", sa.Column("shadow", sa.Boolean, nullable=True))
    op.add_column("prediction_log", sa.Column("primary_request_id", sa.String(64), nullable=True))
    op.create_index(
        "ix_prediction_log_primary_request_id", "prediction_log", ["primary_request_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_prediction_log_primary_request_id", "prediction_log")
    op.drop_column("prediction_log", "primary_request_id")
    op.drop_column("prediction_log", "shadow")
