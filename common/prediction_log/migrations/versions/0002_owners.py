"""Tenancy: each row's owner (a key's digest) and job id, and the index a key's pages use.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("prediction_log", sa.Column("owner", sa.String(64), nullable=True))
    op.add_column("prediction_log", sa.Column("job_id", sa.String(64), nullable=True))
    op.create_index("ix_prediction_log_job_id", "prediction_log", ["job_id"])
    op.create_index("ix_prediction_log_owner_id", "prediction_log", ["owner", "id"])


def downgrade() -> None:
    op.drop_index("ix_prediction_log_owner_id", "prediction_log")
    op.drop_index("ix_prediction_log_job_id", "prediction_log")
    op.drop_column("prediction_log", "job_id")
    op.drop_column("prediction_log", "owner")
