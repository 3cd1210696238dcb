"""A worker's float inputs kept as float64 bytes instead of JSON text.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None
PAGE_ROWS = 100  # rows of inputs held at once while downgrading


def upgrade() -> None:
    op.add_column("prediction_log", sa.Column("input_packed", sa.LargeBinary, nullable=True))


def downgrade() -> None:
    """Packed inputs written back as JSON first, a page of rows at a time."""
    from common.float64_rows import float64_rows_of

    bind = op.get_bind()
    table = sa.table(
        "prediction_log",
        sa.column("id", sa.Integer),
        sa.column("n_rows", sa.Integer),
        sa.column("input", sa.JSON),
        sa.column("input_packed", sa.LargeBinary),
    )
    last = 0
    while True:
        page = bind.execute(
            sa.select(table.c.id, table.c.n_rows, table.c.input_packed)
            .where(table.c.input_packed.isnot(None), table.c.id > last)
            .order_by(table.c.id)
            .limit(PAGE_ROWS)
        ).all()
        if not page:
            break
        for row_id, n_rows, data in page:
            rows = float64_rows_of(data, n_rows)
            bind.execute(sa.update(table).where(table.c.id == row_id).values(input=rows))
        last = page[-1][0]
    op.drop_column("prediction_log", "input_packed")
