"""The prediction log table: one row per prediction request."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from common.float64_rows import float64_rows_of


def logged_inputs(json_inputs: Any, packed: bytes | None, n_rows: int) -> Any:
    """A log row's inputs from its two columns: the packed bytes as lists, if set."""
    return json_inputs if packed is None else float64_rows_of(packed, n_rows)


class Base(DeclarativeBase):
    pass


class PredictionLog(Base):
    __tablename__ = "prediction_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # Unique: a redelivered task or a retried write never adds a second row.
    request_id: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    model_type: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(64))
    n_rows: Mapped[int] = mapped_column(Integer)
    # The request's rows in its version's feature order: JSON, or, for a worker's float
    # features, `input_packed` (float64 values row after row, common.float64_rows, with
    # JSON null here): 240 KB for 1,000 rows of 30, where JSON text took 550 KB and the
    # JSON of them a quarter of a worker's samples on big requests. Readers take whichever
    # is set (logged_inputs).
    input: Mapped[Any] = mapped_column(JSON)
    input_packed: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    output: Mapped[Any] = mapped_column(JSON(none_as_null=True), nullable=True)
    latency_ms: Mapped[float] = mapped_column(Float)
    cached: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(String(16))  # "ok" or "error"
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(128), nullable=True)  # host:pid
    # Whose request this was: the key's digest (common.tenancy), never the key. Rows
    # written before owners were recorded have none, and only admin keys see them.
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    job_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    # A shadow version's score of the request `primary_request_id` (common.rollout);
    # nullable, so that a database of an earlier release gets the columns added.
    shadow: Mapped[bool | None] = mapped_column(nullable=True, default=False)
    primary_request_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)

    def inputs(self) -> Any:
        """The rows as they were logged: lists, whichever column holds them."""
        return logged_inputs(self.input, self.input_packed, self.n_rows)

    # A key's own rows, newest first, without a sort: GET /logs's usual question.
    __table_args__ = (Index("ix_prediction_log_owner_id", "owner", "id"),)
