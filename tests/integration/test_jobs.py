"""Asynchronous jobs: submit, poll, page and download results, cancel, idempotency."""

from __future__ import annotations

import csv
import io
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from common.training import TrainedModel, breast_cancer
from tests.integration.stack import ADMIN_KEY, Stack
from tests.integration.uploads import put_upload, results_key

pytestmark = pytest.mark.integration


def rows(count: int, offset: float) -> tuple[np.ndarray, list[dict[str, float]]]:
    x, _, names, _ = breast_cancer()
    picked = x[np.arange(count) % len(x)].copy()
    picked[:, 0] += offset + np.arange(count) * 1e-7  # distinct rows, in a known order
    return picked, [dict(zip(names, map(float, r), strict=True)) for r in picked]


def wait_for(client: httpx.Client, url: str, statuses: set[str], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        body = client.get(url).json()
        seen.append(body["progress"]["rows_done"])
        if body["status"] in statuses:
            return body, seen
        time.sleep(0.05)
    raise AssertionError(f"job still {body['status']} after {timeout} s")


def test_submit_and_poll_gives_the_sync_result(stack: Stack) -> None:
    _, data = rows(5, 0.0011)
    with stack.client() as client:
        sync = client.post("/predict/xgboost/1", json={"input_data": data}).json()
        submitted = client.post(
            "/jobs", json={"input_data": data, "model_type": "xgboost", "version": "1"}
        )
        assert submitted.status_code == 202, submitted.text
        job = submitted.json()
        assert submitted.headers["location"] == job["status_url"] == f"/jobs/{job['job_id']}"
        assert job["status"] in {"queued", "running", "succeeded"}
        done, _ = wait_for(client, job["status_url"], {"succeeded", "failed"})
    assert done["status"] == "succeeded", done
    assert done["progress"] == {"rows_done": 5, "rows_total": 5}
    assert done["result"]["predictions"] == sync["predictions"]
    assert done["started_at"] <= done["finished_at"]


def test_prefer_respond_async_on_predict(stack: Stack) -> None:
    _, data = rows(2, 0.0022)
    with stack.client(headers={"Prefer": "respond-async"}) as client:
        response = client.post("/predict/logistic_regression", json={"input_data": data})
    assert response.status_code == 202, response.text
    assert response.headers["preference-applied"] == "respond-async"
    with stack.client() as client:
        done, _ = wait_for(client, response.headers["location"], {"succeeded", "failed"})
    assert done["status"] == "succeeded" and done["model_type"] == "logistic_regression"
    assert len(done["result"]["predictions"]) == 2


def test_large_job_is_chunked_paged_and_logged_once(
    stack: Stack, demo_models: dict[str, TrainedModel]
) -> None:
    n = 50_000  # about 50 MB inline: under SERVING_JOB_MAX_BODY_BYTES (64 MiB)
    x, data = rows(n, 0.0033)
    with stack.client() as client:
        job = client.post("/jobs", json={"input_data": data, "model_type": "xgboost"}).json()
        done, progress = wait_for(client, job["status_url"], {"succeeded", "failed"}, 120)
        assert done["status"] == "succeeded", done
        assert done["result"] is None  # too large to inline: page it or download it
        assert progress == sorted(progress) and progress[-1] == n
        pages = [
            client.get(done["results_url"], params={"offset": o, "limit": 10_000}).json()
            for o in range(0, n, 10_000)
        ]
        download = client.get(done["results_url"] + ".csv")
        logs = client.get("/logs", params={"n_limit": 50}).json()
    predictions = [p for page in pages for p in page["predictions"]]
    assert len(predictions) == n and pages[0]["total"] == n
    expected = demo_models["xgboost"].estimator.predict_proba(x)
    got = np.array(
        [[p["probabilities"]["malignant"], p["probabilities"]["benign"]] for p in predictions]
    )
    np.testing.assert_allclose(got, expected, rtol=1e-6)  # float32 model, in input order
    table = list(csv.reader(io.StringIO(download.text)))
    assert table[0] == ["row", "label", "p_malignant", "p_benign"]
    assert len(table) == n + 1 and [int(r[0]) for r in table[1:]] == list(range(n))
    assert [r[1] for r in table[1:]] == [p["label"] for p in predictions]
    mine = [entry for entry in logs if entry["request_id"] == job["job_id"]]
    assert len(mine) == 1
    assert mine[0]["n_rows"] == n and mine[0]["output"]["results"] == done["results_url"]


def test_cancel_and_other_keys_and_unknown_ids(stack: Stack) -> None:
    _, data = rows(20_000, 0.0044)
    with stack.client() as client:
        job = client.post("/jobs", json={"input_data": data}).json()
        cancelled = client.delete(job["status_url"])
        again = client.delete(job["status_url"])
        with stack.client(ADMIN_KEY) as admin:  # an admin key sees every key's jobs
            seen_by_admin = admin.get(job["status_url"])
            assert seen_by_admin.status_code == 200, seen_by_admin.text
            assert seen_by_admin.json()["status"] == "cancelled"
            assert admin.delete(job["status_url"]).status_code == 409  # already ended
        unknown = client.get("/jobs/" + "0" * 24)
        results = client.get(job["results_url"])
        time.sleep(1)
        final = client.get(job["status_url"]).json()
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert again.status_code == 409
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "job_not_found"
    assert results.status_code == 409
    assert final["status"] == "cancelled"  # chunks that ran later did not revive it


def test_idempotency_key(stack: Stack) -> None:
    _, data = rows(3, 0.0055)
    with stack.client(headers={"Idempotency-Key": "nightly-2026-11-26"}) as client:
        first = client.post("/jobs", json={"input_data": data}).json()
        second = client.post("/jobs", json={"input_data": data}).json()
        other_body = client.post("/jobs", json={"input_data": data[:2]})
    assert first["job_id"] == second["job_id"]
    assert other_body.status_code == 409
    assert other_body.json()["error"]["details"]["job_id"] == first["job_id"]


def test_failing_job_ends_failed_with_a_clear_error(
    stack: Stack, demo_models: dict[str, TrainedModel]
) -> None:
    from common.cache import notify_registry_changed

    trained = demo_models["xgboost"]
    registry = stack.registry()
    meta = registry.publish(trained.metadata | {"model_type": "broken_for_jobs"}, trained.artifact)
    registry.store.put(meta.artifact_key, b"{" + trained.artifact[1:-1] + b"!")  # tampered
    notify_registry_changed(stack.settings)
    _, data = rows(3, 0.0066)
    with stack.client() as client:
        job = client.post("/jobs", json={"input_data": data, "model_type": "broken_for_jobs"})
        assert job.status_code == 202, job.text
        done, _ = wait_for(client, job.json()["status_url"], {"succeeded", "failed"})
    assert done["status"] == "failed"
    assert done["error"]["type"] == "artifact_rejected"
    assert "checksum" in done["error"]["message"]


def pool_processes(worker_pid: int) -> list[int]:
    children = Path(f"/proc/{worker_pid}/task/{worker_pid}/children").read_text().split()
    return [int(pid) for pid in children]


def test_a_killed_pool_process_loses_nothing(
    make_stack: Callable[..., Stack], demo_models: dict[str, TrainedModel]
) -> None:
    stack = make_stack("sigkill", job_chunk_rows=2000)
    worker = next(p for p in stack.processes if p.name.startswith("worker"))
    n = 60_000
    x, data = rows(n, 0.0077)
    with stack.client() as client:
        job = client.post("/jobs", json={"input_data": data, "model_type": "xgboost"}).json()
        deadline = time.monotonic() + 60
        while client.get(job["status_url"]).json()["progress"]["rows_done"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        victims = pool_processes(worker.pid)
        for pid in victims:  # mid-job: both pool processes, while they hold chunks
            os.kill(pid, signal.SIGKILL)
        # 15 s on its own; minutes when the machine's two cores run much else beside it.
        done, _ = wait_for(client, job["status_url"], {"succeeded", "failed"}, 300)
        page = client.get(done["results_url"], params={"offset": n - 10, "limit": 10}).json()
        download = client.get(done["results_url"] + ".csv")
        logs = client.get("/logs", params={"n_limit": 20}).json()
    assert done["status"] == "succeeded", done
    assert done["progress"] == {"rows_done": n, "rows_total": n}
    assert page["total"] == n and len(page["predictions"]) == 10
    # Every row, in input order, is what the model in this process predicts for it: a
    # chunk lost with a killed process and run again is neither missing, nor doubled,
    # nor another chunk's.
    assert download.status_code == 200, download.text
    table = assert_results_match(download.text, x, demo_models["xgboost"])
    assert [p["label"] for p in page["predictions"]] == [r[1] for r in table[-10:]]
    assert not set(victims) & set(pool_processes(worker.pid))  # they were replaced
    assert len([e for e in logs if e["request_id"] == job["job_id"]]) == 1


def assert_results_match(text: str, x: np.ndarray, trained: TrainedModel) -> list[list[str]]:
    """A results CSV holds one line per input row, in order, each what the in-process model
    predicts for it; the table, for further checks."""
    table = list(csv.reader(io.StringIO(text)))
    assert table[0] == ["row", "label", "p_malignant", "p_benign"] and len(table) == len(x) + 1
    assert [int(r[0]) for r in table[1:]] == list(range(len(x)))
    got = np.array([[float(r[2]), float(r[3])] for r in table[1:]])
    np.testing.assert_allclose(got, trained.estimator.predict_proba(x), rtol=1e-6)
    classes = trained.metadata["classes"]
    assert [r[1] for r in table[1:]] == [classes[i] for i in trained.estimator.predict(x)]
    return table


def run_object_job(client: httpx.Client, key: str, timeout: float = 120) -> Any:
    """Submit a job of the upload `key` (the xgboost model) and wait for its end."""
    job = client.post("/jobs", json={"input_object": key, "model_type": "xgboost"})
    assert job.status_code == 202, job.text
    done, _ = wait_for(client, job.json()["status_url"], {"succeeded", "failed"}, timeout)
    return done


def csv_bytes(x: np.ndarray, names: list[str], drop: str | None = None) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    columns = [n for n in names if n != drop]
    writer.writerow(["id", *columns])  # an id column the model does not use
    for i, row in enumerate(x):
        values = dict(zip(names, row, strict=True))
        writer.writerow([f"patient-{i}", *(repr(float(values[c])) for c in columns)])
    return buffer.getvalue().encode()


def test_a_csv_object_in_the_store_is_scored_into_a_result_object(
    stack: Stack, demo_models: dict[str, TrainedModel]
) -> None:
    x, _ = rows(12_000, 0.0088)
    _, _, names, _ = breast_cancer()
    store = stack.registry().store
    key = put_upload(stack, "batch-1.csv", csv_bytes(x, names))
    with stack.client() as client:
        done = run_object_job(client, key)
    assert done["status"] == "succeeded", done
    assert done["progress"] == {"rows_done": 12_000, "rows_total": 12_000}
    assert done["output_object"] == results_key(done["job_id"])
    assert done["output_location"].startswith(stack.fields["s3_endpoint_url"])
    download = httpx.get(done["output_location"])  # the presigned URL, no credentials
    assert download.status_code == 200
    table = list(csv.reader(io.StringIO(download.text)))
    assert table[0] == ["row", "label", "p_malignant", "p_benign"] and len(table) == 12_001
    got = np.array([[float(r[2]), float(r[3])] for r in table[1:]])
    np.testing.assert_allclose(got, demo_models["xgboost"].estimator.predict_proba(x), rtol=1e-6)
    assert store.get(results_key(done["job_id"])) == download.content


def test_a_bad_csv_object_fails_the_job_naming_the_problem(stack: Stack) -> None:
    x, _ = rows(10, 0.0099)
    _, _, names, _ = breast_cancer()
    key = put_upload(stack, "no-radius.csv", csv_bytes(x, names, drop="mean radius"))
    with stack.client() as client:
        missing = client.post("/jobs", json={"input_object": key}).json()
        absent = client.post("/jobs", json={"input_object": "absent.csv"})
        both = client.post("/jobs", json={"input_object": "a.csv", "input_data": []})
        escape = client.post("/jobs", json={"input_object": "../../etc/passwd"})
        failed, _ = wait_for(client, missing["status_url"], {"succeeded", "failed"})
    assert failed["status"] == "failed"
    assert "mean radius" in failed["error"]["message"]
    # An upload that does not exist, or a name that is none, is refused at submission.
    assert absent.status_code == 404 and "no upload 'absent.csv'" in absent.text
    assert escape.status_code == 404 and escape.json()["error"]["type"] == "upload_not_found"
    assert both.status_code == 422
