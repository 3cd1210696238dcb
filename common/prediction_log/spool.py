"""The spool: prediction log rows the database refused, kept in a Redis stream until it
takes them again (LogSink.drain).

One stream entry per row, oldest first, under `<cache_prefix>log-spool`: the entry's one
field `row` holds the row as orjson-encoded JSON, datetimes as RFC 3339 strings in UTC.
Rows that the table refuses for their content (set aside by LogSink) go to
`<cache_prefix>log-spool-dead`, with the refusal in an `error` field, for a person to read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import orjson
import redis
from sqlalchemy import DateTime

from common.tables import PredictionLog

if TYPE_CHECKING:
    from common.settings import Settings

ROW_FIELD = "row"
ERROR_FIELD = "error"

# Decoded back into datetimes on the way out; every other string stays a string.
_DATETIME_COLUMNS = frozenset(
    column.name for column in PredictionLog.__table__.columns if isinstance(column.type, DateTime)
)


def spool_key(prefix: str) -> str:
    return f"{prefix}log-spool"


def dead_letter_key(prefix: str) -> str:
    return f"{prefix}log-spool-dead"


def encode_row(entry: dict[str, Any], lenient: bool = False) -> bytes:
    """`lenient` writes what JSON cannot hold as its str(), for rows set aside, which a
    person reads: the spool's own rows stay exact or fail."""
    # The log writes UTC: a naive datetime is UTC, so it decodes to the same instant. A
    # worker's inputs may be a NumPy matrix: the same JSON as the same rows as lists.
    options = orjson.OPT_NAIVE_UTC | orjson.OPT_SERIALIZE_NUMPY
    return orjson.dumps(entry, default=str if lenient else None, option=options)


def decode_row(raw: bytes | str) -> dict[str, Any]:
    """The row as it was given to encode_row, with aware datetimes; ValueError, KeyError or
    TypeError if `raw` is not such a row."""
    row = orjson.loads(raw)
    if not isinstance(row, dict):
        raise TypeError(f"a spooled row is a JSON object, not {type(row).__name__}")
    for name in _DATETIME_COLUMNS & row.keys():
        if row[name] is not None:
            value = datetime.fromisoformat(row[name])
            row[name] = value if value.tzinfo else value.replace(tzinfo=UTC)
    return row


@dataclass(frozen=True)
class SpooledRow:
    entry_id: str  # the stream entry's id, e.g. "1735689600000-0"
    raw: bytes

    def row(self) -> dict[str, Any]:
        return decode_row(self.raw)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _field(fields: dict[Any, Any], name: str) -> bytes:
    value = fields.get(name.encode(), fields.get(name, b""))
    return value.encode() if isinstance(value, str) else bytes(value)


class LogSpool:
    """The stream of spooled rows on one Redis (a client with or without decode_responses).

    Every method raises redis.RedisError when Redis does not answer."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.key = spool_key(prefix)
        self.dead_key = dead_letter_key(prefix)

    @classmethod
    def from_settings(cls, settings: Settings) -> LogSpool:
        """The one spool of a deployment: the API spools and the workers drain the same
        stream, on the result backend's Redis (which holds the jobs too), under the prefix."""
        client = redis.Redis.from_url(
            settings.effective_result_backend_url, socket_timeout=5, socket_connect_timeout=2
        )
        return cls(client, settings.cache_prefix)

    def append(self, entries: list[dict[str, Any]]) -> None:
        """All the rows or none (one MULTI): a caller that sees an error can retry them all;
        a row spooled twice is written once, as the log ignores a repeated request id."""
        encoded = [encode_row(entry) for entry in entries]
        with self.client.pipeline(transaction=True) as pipe:
            for raw in encoded:
                pipe.xadd(self.key, {ROW_FIELD: raw})
            pipe.execute()

    def oldest(self, count: int) -> list[SpooledRow]:
        found = cast(list[tuple[Any, dict[Any, Any]]], self.client.xrange(self.key, count=count))
        return [
            SpooledRow(_text(entry_id), _field(fields, ROW_FIELD)) for entry_id, fields in found
        ]

    def remove(self, entry_ids: Sequence[str]) -> None:
        """Delete exactly these entries (never a range: rows spooled meanwhile stay)."""
        if entry_ids:
            self.client.xdel(self.key, *entry_ids)

    def set_aside(self, rows: list[tuple[bytes, str]], entry_ids: Sequence[str] = ()) -> None:
        """Move rows (raw, why) to the dead-letter stream and delete `entry_ids` from the
        spool, in one MULTI: a row is in one stream or both, never in neither."""
        with self.client.pipeline(transaction=True) as pipe:
            for raw, why in rows:
                pipe.xadd(self.dead_key, {ROW_FIELD: raw, ERROR_FIELD: why})
            if entry_ids:
                pipe.xdel(self.key, *entry_ids)
            pipe.execute()

    def length(self) -> int:
        return int(self.client.xlen(self.key))

    def close(self) -> None:
        self.client.close()
