"""Reading the prediction log a page at a time: a tenant's rows, filtered, newest first,
each answer capped in bytes and built one row at a time.

A log row can hold a request's every input row (10,000 rows of 30 features is megabytes
of JSON), so a page is never loaded whole: rows are read from the database a few at a
time, each encoded at once, and the page ends when the next row would pass the byte
cap. Its next page starts below the last row returned (the cursor).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Engine, Select, select

from common.errors import InvalidInput
from common.tables import PredictionLog, logged_inputs
from common.tenancy import Tenant

# Rows fetched from the database at once: a handful, since one may be megabytes.
FETCH_ROWS = 4
# What a row takes in an answer besides its inputs and outputs, to decide whether the
# next one still fits.
ROW_OVERHEAD_BYTES = 2
COLUMNS = (
    "request_id",
    "created_at",
    "model_type",
    "version",
    "n_rows",
    "input",
    "output",
    "latency_ms",
    "cached",
    "status",
    "error",
    "worker",
    "owner",
    "job_id",
    "shadow",
    "primary_request_id",
)

FeatureNames = Callable[[str, str], list[str] | None]


@dataclass(frozen=True)
class LogQuery:
    """Which rows: the tenant's own (an admin's: all, or one owner's), filtered."""

    tenant: Tenant
    limit: int
    owner: str | None = None
    request_id: str | None = None
    job_id: str | None = None
    model_type: str | None = None
    version: str | None = None
    status: str | None = None
    shadow: bool | None = None
    primary_request_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    before_id: int | None = None  # from the cursor

    def statement(self) -> Select[Any]:
        table = PredictionLog
        stmt = select(*(getattr(table, c) for c in COLUMNS), table.input_packed, table.id)
        owner = self.owner if self.tenant.admin else self.tenant.owner
        exact = {
            "owner": owner,
            "request_id": self.request_id,
            "job_id": self.job_id,
            "model_type": self.model_type,
            "version": self.version,
            "status": self.status,
            "primary_request_id": self.primary_request_id,
        }
        for column, value in exact.items():
            if value is not None:
                stmt = stmt.where(getattr(table, column) == value)
        if self.shadow is not None:  # rows from before shadows have None: not shadows
            stmt = stmt.where(table.shadow.is_(True) if self.shadow else table.shadow.isnot(True))
        if self.since is not None:
            stmt = stmt.where(table.created_at >= _naive_utc(self.since))
        if self.until is not None:
            stmt = stmt.where(table.created_at < _naive_utc(self.until))
        if self.before_id is not None:
            stmt = stmt.where(table.id < self.before_id)
        # One more than asked for: whether there is a next page.
        return stmt.order_by(table.id.desc()).limit(self.limit + 1)


def _naive_utc(moment: datetime) -> datetime:
    """SQLite keeps timestamps as naive UTC text; compare like with like."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class LogPage:
    body: bytes  # a JSON array of LogEntry objects
    rows: int
    next_cursor: str | None


def encode_cursor(row_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{row_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, value = text.partition(":")
        row_id = int(value)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        row_id, kind = 0, ""
    if kind != "id" or row_id <= 0:
        raise InvalidInput("cursor is not one this server gave: use the X-Next-Cursor value")
    return row_id


def read_page(engine: Engine, query: LogQuery, max_bytes: int, names: FeatureNames) -> LogPage:
    """The page's JSON, at most `max_bytes` (a row too big for any page alone comes
    without its inputs and outputs, marked truncated). Blocking: run it in a thread."""
    parts: list[bytes] = []
    size, last_id, more = 2, None, False
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=FETCH_ROWS).execute(
            query.statement()
        )
        for row in result:
            if len(parts) == query.limit:
                more = True
                break
            encoded = encode_entry(row._mapping, names)
            if size + len(encoded) + ROW_OVERHEAD_BYTES > max_bytes:
                if parts:  # it goes first on the next page
                    more = True
                    break
                encoded = encode_entry(row._mapping, names, truncated=True)
            parts.append(encoded)
            size += len(encoded) + 1
            last_id = row.id
        result.close()
    cursor = encode_cursor(last_id) if more and last_id is not None else None
    return LogPage(b"[" + b",".join(parts) + b"]", len(parts), cursor)


def encode_entry(row: Any, names: FeatureNames, truncated: bool = False) -> bytes:
    entry = {column: row[column] for column in COLUMNS}
    created = entry["created_at"]
    if created is not None and created.tzinfo is None:
        entry["created_at"] = created.replace(tzinfo=UTC)  # written in UTC
    if truncated:
        entry["input"] = entry["output"] = None
    else:
        inputs = logged_inputs(entry["input"], row["input_packed"], entry["n_rows"])
        entry["input"] = name_inputs(inputs, names(entry["model_type"], entry["version"]))
    entry["shadow"] = bool(entry["shadow"])  # None on rows from before shadows
    entry["truncated"] = truncated
    return orjson.dumps(entry)


def name_inputs(rows: Any, names: list[str] | None) -> Any:
    """The log keeps a request's rows as lists in its version's feature order (half the
    bytes of objects naming every feature, and the workers' largest cost on big
    requests); an answer names the features again. A job's summary, or rows of a
    version whose metadata is gone, stay as they are."""
    if not names or not isinstance(rows, list) or not rows:
        return rows
    if all(isinstance(row, list) and len(row) == len(names) for row in rows):
        return [dict(zip(names, row, strict=True)) for row in rows]
    return rows
