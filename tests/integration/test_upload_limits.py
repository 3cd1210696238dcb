"""An upload past SERVING_UPLOAD_MAX_BYTES is refused (413) and leaves nothing in the
store; a job's results object (and the upload a job's own body made) is deleted from
the store once the job expires (README, Uploads). On a stack with a 2,000-byte limit
and jobs that live five seconds, swept every half second."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from common.training import breast_cancer
from tests.integration.stack import READER_KEY, Stack
from tests.integration.test_jobs import csv_bytes, rows, wait_for
from tests.integration.uploads import upload_key

pytestmark = pytest.mark.integration

LIMIT = 2000
TTL = 10  # the two jobs end well within it on a loaded machine (5 was too little)
SWEEP = 0.5
CSV_HEADER = "mean radius,mean texture\n"


@pytest.fixture(scope="module")
def limited(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack(
        "upload-limits", upload_max_bytes=LIMIT, job_ttl_seconds=TTL, job_sweep_seconds=SWEEP
    )


def lines(n_bytes: int) -> bytes:
    body = (CSV_HEADER + "14.1,19.3\n" * (n_bytes // 10)).encode()
    return body[:n_bytes]


def pieces(data: bytes, size: int = 500) -> Iterator[bytes]:
    """Sent chunked, without a Content-Length: the API finds the size as it reads."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def uploads_in_store(stack: Stack) -> list[str]:
    return stack.registry().store.list("uploads")


def test_an_upload_past_the_limit_is_413_and_stores_nothing(limited: Stack) -> None:
    kept = lines(LIMIT)  # exactly the limit: taken
    with limited.client(headers={"content-type": "text/csv"}) as client:
        at_limit = client.put("/uploads/kept.csv", content=kept)
        declared = client.put("/uploads/big.csv", content=lines(LIMIT + 1))
        chunked = client.put("/uploads/chunked.csv", content=pieces(lines(3 * LIMIT)))
        replaced = client.put("/uploads/kept.csv", content=pieces(lines(LIMIT + 500)))
        job = client.post("/jobs", params={"model_type": "xgboost"}, content=lines(LIMIT + 1))
        listed = client.get("/uploads").json()["uploads"]
    assert at_limit.status_code == 201 and at_limit.json()["bytes"] == LIMIT
    for response in (declared, chunked, replaced, job):
        assert response.status_code == 413, response.text
        assert response.json()["error"]["type"] == "body_too_large"
        assert f"at most {LIMIT} bytes" in response.json()["error"]["message"]
    assert [u["name"] for u in listed] == ["kept.csv"]
    assert uploads_in_store(limited) == [upload_key("kept.csv")]
    # A re-upload past the limit left the earlier one whole.
    assert limited.registry().store.get(upload_key("kept.csv")) == kept


def test_results_and_a_job_bodys_upload_are_deleted_when_the_job_expires(
    limited: Stack,
) -> None:
    store = limited.registry().store
    x, _ = rows(1, 0.3101)
    _, _, names, _ = breast_cancer()
    data = csv_bytes(x, names)  # one row of the 30 features: under the limit
    as_csv = {"content-type": "text/csv"}
    with limited.client() as client:
        put = client.put("/uploads/mine.csv", content=data, headers=as_csv)
        assert put.status_code == 201, put.text
        submitted = [
            client.post("/jobs", json={"input_object": "mine.csv", "model_type": "xgboost"}),
            client.post("/jobs", params={"model_type": "xgboost"}, content=data, headers=as_csv),
        ]
        created = time.time()  # each job was created before this
        jobs = [
            wait_for(client, s.json()["status_url"], {"succeeded", "failed"})[0] for s in submitted
        ]
    assert [j["status"] for j in jobs] == ["succeeded", "succeeded"], jobs
    due = [jobs[0]["output_object"], jobs[1]["output_object"], jobs[1]["input_object"]]
    assert due[:2] == [f"results/{j['job_id']}.csv" for j in jobs]
    assert time.time() < created + TTL  # still alive: everything is there
    assert [store.exists(key) for key in due] == [True, True, True]
    deadline = created + TTL + 10 * SWEEP + 5
    while any(store.exists(key) for key in due) and time.time() < deadline:
        time.sleep(SWEEP / 2)
    gone_at = time.time() - created
    print(f"\nobjects of jobs with a {TTL} s TTL deleted {gone_at:.1f} s after submission")
    assert [store.exists(key) for key in due] == [False, False, False]
    assert gone_at >= TTL - 0.5  # not before the job's own expiry
    assert store.exists(upload_key("mine.csv", READER_KEY))  # the caller's own upload stays
