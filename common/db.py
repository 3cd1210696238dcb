"""The prediction log, importable from here as before; it lives in common/prediction_log/."""

from common.prediction_log import (
    BackgroundLogWriter,
    LogSink,
    LogSpool,
    PredictionLogRepo,
    create_log_engine,
    create_tables,
    purge_older_than,
)

__all__ = [
    "BackgroundLogWriter",
    "LogSink",
    "LogSpool",
    "PredictionLogRepo",
    "create_log_engine",
    "create_tables",
    "purge_older_than",
]
