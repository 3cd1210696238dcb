"""Pages of the prediction log: owners, filters, the cursor and the byte cap, on a real
SQLite file."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from common.errors import InvalidInput
from common.log_rows import log_row
from common.prediction_log import PredictionLogRepo, create_log_engine, create_tables
from common.prediction_log.query import (
    LogQuery,
    decode_cursor,
    encode_cursor,
    name_inputs,
    read_page,
)
from common.tenancy import Tenant

A, B = Tenant("owner-a"), Tenant("owner-b")
ADMIN = Tenant("owner-admin", admin=True)
NAMES = ["alpha", "beta"]


def names(model_type: str, version: str) -> list[str] | None:
    return NAMES if (model_type, version) == ("m", "1") else None


def write(engine: Engine, n: int, owner: str, *, rows: int = 1, **extra: Any) -> list[str]:
    ids, entries = [], []
    for i in range(n):
        request_id = f"{owner}-{extra.get('version', '1')}-{i}-{time.monotonic_ns()}"
        inputs = [[float(i), float(r)] for r in range(rows)]
        output = {"labels": ["a"] * rows, "probabilities": [[1.0, 0.0]] * rows}
        labels = ("m", extra.get("version", "1"))
        entry = log_row(request_id, labels, rows, inputs, output, time.time(), owner=owner)
        entries.append(entry | {k: v for k, v in extra.items() if k != "version"})
        ids.append(request_id)
    PredictionLogRepo(engine).record(entries)
    return ids


def page(engine: Engine, max_bytes: int = 1 << 20, **fields: Any) -> tuple[list[Any], Any]:
    query = LogQuery(**({"tenant": A, "limit": 100} | fields))
    found = read_page(engine, query, max_bytes, names)
    body = json.loads(found.body)
    assert found.rows == len(body) and len(found.body) <= max_bytes
    return body, found.next_cursor


def test_a_key_sees_only_its_own_rows_and_an_admin_sees_all(engine: Engine) -> None:
    mine, theirs = write(engine, 3, A.owner), write(engine, 2, B.owner)

    own, _ = page(engine, tenant=A)
    everyone, _ = page(engine, tenant=ADMIN)
    one_owner, _ = page(engine, tenant=ADMIN, owner=B.owner)

    assert [r["request_id"] for r in own] == mine[::-1]  # newest first
    assert {r["owner"] for r in own} == {A.owner}
    assert len(everyone) == 5
    assert [r["request_id"] for r in one_owner] == theirs[::-1]
    # A reader's owner filter never widens what it sees.
    assert page(engine, tenant=A, owner=B.owner)[0] == own


def test_filters_narrow_the_rows(engine: Engine) -> None:
    write(engine, 2, A.owner)
    [second_version] = write(engine, 1, A.owner, version="2")
    [failed] = write(engine, 1, A.owner, status="error", output=None, job_id="job-1")

    assert [r["request_id"] for r in page(engine, version="2")[0]] == [second_version]
    assert [r["request_id"] for r in page(engine, status="error")[0]] == [failed]
    assert [r["request_id"] for r in page(engine, job_id="job-1")[0]] == [failed]
    assert [r["request_id"] for r in page(engine, request_id=failed)[0]] == [failed]
    assert page(engine, model_type="other")[0] == []
    now = datetime.now(UTC)
    assert len(page(engine, since=now - timedelta(minutes=1))[0]) == 4
    assert page(engine, since=now + timedelta(minutes=1))[0] == []
    assert page(engine, until=now - timedelta(minutes=1))[0] == []


def test_the_cursor_walks_every_row_once(engine: Engine) -> None:
    written = write(engine, 7, A.owner)
    seen, cursor, pages = [], None, 0
    while True:
        before = decode_cursor(cursor) if cursor else None
        body, cursor = page(engine, limit=3, before_id=before)
        seen += [r["request_id"] for r in body]
        pages += 1
        if cursor is None:
            break

    assert seen == written[::-1]
    assert pages == 3


def test_an_answer_stops_at_the_byte_cap_and_the_rest_is_on_the_next_page(
    engine: Engine,
) -> None:
    written = write(engine, 6, A.owner, rows=200)  # each row some 8 KB of JSON
    one_row = len(json.dumps(page(engine, limit=1)[0][0]))

    body, cursor = page(engine, max_bytes=int(one_row * 2.5))
    rest, _ = page(engine, before_id=decode_cursor(cursor))

    assert len(body) == 2 and cursor is not None
    assert [r["request_id"] for r in body + rest] == written[::-1]
    assert body[0]["input"][0] == {"alpha": 5.0, "beta": 0.0}  # named again


def test_a_worker_s_packed_inputs_come_named_like_any_others(engine: Engine) -> None:
    import numpy as np

    lists = write(engine, 1, A.owner, rows=3)
    rows = [[0.0, 0.0], [0.0, 1.0], [0.0, 2.0]]  # what write() logs as lists
    output = {"labels": ["a"] * 3, "probabilities": [[1.0, 0.0]] * 3}
    packed = log_row("packed", ("m", "1"), 3, np.array(rows), output, time.time(), owner=A.owner)
    PredictionLogRepo(engine).record([packed])

    body, _ = page(engine)
    by_id = {r["request_id"]: r for r in body}
    named = [dict(zip(NAMES, row, strict=True)) for row in rows]
    assert by_id["packed"]["input"] == by_id[lists[0]]["input"] == named
    assert "input_packed" not in by_id["packed"]


def test_a_row_too_big_for_any_page_comes_without_its_data(engine: Engine) -> None:
    [big] = write(engine, 1, A.owner, rows=2000)
    [small] = write(engine, 1, A.owner)

    body, cursor = page(engine, max_bytes=4096)
    rest, _ = page(engine, max_bytes=4096, before_id=decode_cursor(cursor))

    assert [r["request_id"] for r in body] == [small] and body[0]["truncated"] is False
    assert [r["request_id"] for r in rest] == [big]
    assert rest[0]["truncated"] is True and rest[0]["input"] is None
    assert rest[0]["n_rows"] == 2000


def test_a_cursor_is_checked() -> None:
    assert decode_cursor(encode_cursor(42)) == 42
    for garbage in ["", "abc", encode_cursor(0), "aWQ6LTE", "!!!"]:
        with pytest.raises(InvalidInput, match="cursor"):
            decode_cursor(garbage)


def test_a_database_made_before_owners_gets_the_columns(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE prediction_log (id INTEGER PRIMARY KEY, request_id VARCHAR(64) "
            "UNIQUE NOT NULL, created_at DATETIME, model_type VARCHAR(64), version "
            "VARCHAR(64), n_rows INTEGER, input JSON, output JSON, latency_ms FLOAT, "
            "cached BOOLEAN, status VARCHAR(16), error TEXT, worker VARCHAR(128))"
        )
        conn.execute(
            "INSERT INTO prediction_log (request_id, created_at, model_type, version, n_rows,"
            " input, output, latency_ms, cached, status) VALUES ('old', '2026-01-01 00:00:00',"
            " 'm', '1', 1, '[[1,2]]', 'null', 1.0, 0, 'ok')"
        )
    engine = create_log_engine(f"sqlite:///{path}")
    create_tables(engine)
    write(engine, 1, A.owner)

    assert [r["request_id"] for r in page(engine, tenant=ADMIN)[0]][-1] == "old"
    assert all(r["request_id"] != "old" for r in page(engine)[0])  # no owner: admins only


@pytest.mark.parametrize(
    ("logged", "feature_names", "expected"),
    [
        ([[1.0, 2.0]], NAMES, [{"alpha": 1.0, "beta": 2.0}]),
        ({"job_id": "j1", "rows": 5}, NAMES, {"job_id": "j1", "rows": 5}),  # a job's summary
        ([[1.0, 2.0]], None, [[1.0, 2.0]]),  # the version's metadata is gone
        ([[1.0, 2.0, 3.0]], NAMES, [[1.0, 2.0, 3.0]]),  # not this version's shape
        ([], NAMES, []),
    ],
)
def test_logged_rows_get_their_feature_names_back(
    logged: Any, feature_names: list[str] | None, expected: Any
) -> None:
    assert name_inputs(logged, feature_names) == expected
