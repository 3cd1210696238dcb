"""The prediction log: one row per prediction request, through SQLAlchemy (SQLite by
default, PostgreSQL for several hosts).

- engine: create_log_engine, create_tables
- repo: PredictionLogRepo, the table's idempotent inserts and reads
- sink: LogSink, the writer that spools to Redis what the database refuses, and drains it
- spool: LogSpool, that Redis stream and its row format
- retention: purge_older_than
- writer: BackgroundLogWriter, the API's batching writer on a thread
"""

from common.prediction_log.engine import create_log_engine, create_tables
from common.prediction_log.repo import PredictionLogRepo
from common.prediction_log.retention import purge_older_than
from common.prediction_log.sink import DATABASE_ERRORS, LogSink
from common.prediction_log.spool import LogSpool, dead_letter_key, spool_key
from common.prediction_log.writer import BackgroundLogWriter

__all__ = [
    "DATABASE_ERRORS",
    "BackgroundLogWriter",
    "LogSink",
    "LogSpool",
    "PredictionLogRepo",
    "create_log_engine",
    "create_tables",
    "dead_letter_key",
    "purge_older_than",
    "spool_key",
]
