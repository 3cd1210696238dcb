"""A CSV input object with a bad value fails its job with an error naming the line
(README, Jobs, CSV input): "A row with a missing or non-numeric value fails the job
with an error naming its line"."""

from __future__ import annotations

import re

import pytest

from common.training import breast_cancer
from tests.integration.stack import Stack
from tests.integration.test_jobs import csv_bytes, rows, wait_for
from tests.integration.uploads import put_upload, results_key

pytestmark = pytest.mark.integration


def csv_with(value: str, line: int, feature: str, n: int = 12) -> bytes:
    """n rows of valid CSV (header on line 1), `feature` on `line` replaced by `value`."""
    x, _ = rows(n, 0.1501)
    _, _, names, _ = breast_cancer()
    lines = csv_bytes(x, names).decode().splitlines()
    cells = lines[line - 1].split(",")
    cells[1 + names.index(feature)] = value  # column 0 is the id
    lines[line - 1] = ",".join(cells)
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.parametrize(
    ("name", "value", "line"),
    [
        ("non-numeric.csv", "twelve", 7),
        ("missing-value.csv", "", 3),
        ("last-line.csv", "1.0.0", 13),  # the last of twelve rows
    ],
)
def test_a_bad_value_fails_the_job_naming_its_line(
    stack: Stack, name: str, value: str, line: int
) -> None:
    store = stack.registry().store
    key = put_upload(stack, name, csv_with(value, line, "mean smoothness"))
    with stack.client() as client:
        job = client.post("/jobs", json={"input_object": key, "model_type": "xgboost"})
        assert job.status_code == 202, job.text
        done, _ = wait_for(client, job.json()["status_url"], {"succeeded", "failed"})
        results = client.get(done["results_url"])
    assert done["status"] == "failed", done
    error = done["error"]
    assert error["type"] == "invalid_input", error
    assert re.search(rf"\bline {line}\b", error["message"]), error
    assert done["output_object"] is None and done["output_location"] is None
    assert not store.exists(results_key(done["job_id"]))
    assert results.status_code == 409, results.text  # a failed job has no results
