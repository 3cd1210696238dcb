"""A miss's answer goes out before its log row is written, and its task's message is
acknowledged only after: while another writer holds the log's SQLite database, the
caller gets its answer, its row is not there yet, and the message is still in the
broker's unacknowledged set; once the writer lets go, the row lands and the message is
acknowledged."""

from __future__ import annotations

import base64
import sqlite3
import time
from typing import Any

import msgpack
import orjson
import pytest
import redis
from sqlalchemy.engine import make_url

from common.training import breast_cancer
from dev.services import wait_until
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration


def unacked_request_ids(broker: redis.Redis) -> set[str]:
    """The request ids of the predict tasks kombu keeps as not acknowledged yet."""
    ids = set()
    for kept in broker.hvals("unacked"):
        message = orjson.loads(kept)[0]
        body = base64.b64decode(message["body"])
        if message["content-type"] == "application/x-msgpack":
            args = msgpack.unpackb(body)[0]
        else:
            args = orjson.loads(body)[0]
        if len(args) == 5 and isinstance(args[4], list):  # PredictBatch's layout
            ids.update(str(segment[0]) for segment in args[4])
    return ids


def logged(path: str, request_id: str) -> bool:
    with sqlite3.connect(path, timeout=30) as conn:
        found = conn.execute(
            "SELECT 1 FROM prediction_log WHERE request_id = ?", (request_id,)
        ).fetchone()
    return found is not None


def test_the_answer_does_not_wait_for_the_log_and_the_ack_does(stack: Stack) -> None:
    settings = stack.settings
    path = make_url(settings.database_url).database
    assert path is not None
    x, _, names, _ = breast_cancer()
    row = dict(zip(names, map(float, x[5]), strict=True))
    row["mean radius"] += 0.000321  # a miss
    broker = redis.Redis.from_url(settings.effective_broker_url)
    holder = sqlite3.connect(path, timeout=30, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the write lock: every other writer waits
    held = True
    try:
        with stack.client() as client:
            response = client.post("/predict/xgboost/1", json={"input_data": row})
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        assert answer["cached"] is False
        request_id = answer["request_id"]
        # The worker is waiting for the lock to log the row, its message not acknowledged.
        wait_until(lambda: request_id in unacked_request_ids(broker), 10, "the kept message")
        time.sleep(0.3)
        assert request_id in unacked_request_ids(broker)
        assert not logged(path, request_id)  # WAL: a reader does not wait for the lock
        holder.execute("ROLLBACK")
        held = False
        wait_until(lambda: logged(path, request_id), 20, "the log row")
        wait_until(lambda: request_id not in unacked_request_ids(broker), 10, "the ack")
    finally:
        if held:
            holder.execute("ROLLBACK")
        holder.close()
        broker.close()
