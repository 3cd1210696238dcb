"""Uploads belong to their key (README, Uploads), on a real stack (S3 server over HTTP):
two predict keys (A, B) and an admin key. A job's input_object is one of the caller's
uploads and nothing else in the store; results go to `results/<job_id>.*`, presigned for
the job's owner only; an upload is streamed, so 200 MB keeps the API under 150 MB."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlparse

import httpx
import numpy as np
import orjson
import pytest

from common.tenancy import owner_of
from common.training import TrainedModel, breast_cancer
from tests.integration.stack import ADMIN_KEY, READER_KEY, Stack
from tests.integration.test_jobs import assert_results_match, csv_bytes, rows, wait_for
from tests.integration.uploads import results_key, upload_key

pytestmark = pytest.mark.integration

A, B = READER_KEY, "other-reader-key-for-tests"
A_OWNER, B_OWNER, ADMIN_OWNER = owner_of(A), owner_of(B), owner_of(ADMIN_KEY)
PARQUET = "application/vnd.apache.parquet"
PRESIGN_SECONDS = 1234
RSS_LIMIT_MB = 150
BIG_MB = 200


@pytest.fixture(scope="module")
def shared(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack(
        "uploads",
        callback_workers=1,
        api_keys=f"{A},{B}",
        presign_seconds=PRESIGN_SECONDS,
        callback_allowed_networks="127.0.0.1/32",  # the test's receiver
    )


def features(n: int, offset: float) -> tuple[np.ndarray, bytes]:
    x, _ = rows(n, offset)
    _, _, names, _ = breast_cancer()
    return x, csv_bytes(x, names)


def put(stack: Stack, key: str, name: str, data: bytes, content_type: str) -> httpx.Response:
    with stack.client(key) as client:
        return client.put(f"/uploads/{name}", content=data, headers={"content-type": content_type})


def assert_expires_in(url: str, seconds: int) -> None:
    """A presigned URL (SigV2 as boto3 signs it here: `Expires`, a Unix time) that is
    valid for `seconds` from about now."""
    query = parse_qs(urlparse(url).query)
    expires = int(query["Expires"][0])
    assert abs(expires - (time.time() + seconds)) < 60, (expires, time.time())


def run_job(stack: Stack, key: str, body: dict[str, Any]) -> dict[str, Any]:
    with stack.client(key) as client:
        submitted = client.post("/jobs", json=body | {"model_type": "xgboost"})
        assert submitted.status_code == 202, submitted.text
        done, _ = wait_for(client, submitted.json()["status_url"], {"succeeded", "failed"}, 120)
    return done  # type: ignore[no-any-return]


def listed(stack: Stack, key: str) -> list[dict[str, Any]]:
    with stack.client(key) as client:
        response = client.get("/uploads")
    assert response.status_code == 200, response.text
    return response.json()["uploads"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def a_job(shared: Stack) -> dict[str, Any]:
    """Key A's upload `batch.csv` and a finished job of it."""
    x, data = features(300, 0.2101)
    response = put(shared, A, "batch.csv", data, "text/csv")
    assert response.status_code == 201, response.text
    assert response.json() == {
        "input_object": upload_key("batch.csv", A),
        "name": "batch.csv",
        "owner": A_OWNER,
        "bytes": len(data),
        "content_type": "text/csv",
    }
    done = run_job(shared, A, {"input_object": "batch.csv"})
    return {"x": x, "data": data, "done": done}


def test_a_key_uploads_a_csv_runs_a_job_of_it_and_fetches_its_results(
    shared: Stack, a_job: dict[str, Any], demo_models: dict[str, TrainedModel]
) -> None:
    done = a_job["done"]
    assert done["status"] == "succeeded", done
    assert done["input_object"] == upload_key("batch.csv", A)
    assert done["output_object"] == results_key(done["job_id"])  # under the job's id
    location = done["output_location"]
    assert location.startswith(shared.fields["s3_endpoint_url"])
    assert_expires_in(location, PRESIGN_SECONDS)
    download = httpx.get(location)  # the presigned URL, plain HTTP, no key
    assert download.status_code == 200
    assert_results_match(download.text, a_job["x"], demo_models["xgboost"])
    assert shared.registry().store.get(done["output_object"]) == download.content
    with shared.client(A) as client:
        again = client.get(done["status_url"]).json()  # the owner's later reads: a URL too
        page = client.get(done["results_url"], params={"limit": 2}).json()
    assert again["output_location"] is not None and page["total"] == 300
    # The full form names the same upload.
    full = run_job(shared, A, {"input_object": upload_key("batch.csv", A)})
    assert full["status"] == "succeeded" and full["input_object"] == done["input_object"]
    assert [u["name"] for u in listed(shared, A)] == ["batch.csv"]


class Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        self.received.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


def test_the_callback_to_the_owner_carries_the_presigned_url(
    shared: Stack, a_job: dict[str, Any]
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        done = run_job(shared, A, {"input_object": "batch.csv", "callback_url": url})
        deadline = time.monotonic() + 30
        while not Hook.received and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        server.shutdown()
        server.server_close()
    assert len(Hook.received) == 1, Hook.received
    payload = orjson.loads(Hook.received[0])
    assert payload["job_id"] == done["job_id"] and payload["status"] == "succeeded"
    assert payload["output_object"] == results_key(done["job_id"])
    assert_expires_in(payload["output_location"], PRESIGN_SECONDS)
    download = httpx.get(payload["output_location"])
    assert download.status_code == 200
    assert download.content == shared.registry().store.get(payload["output_object"])


def test_another_key_can_neither_see_name_delete_nor_read_them(
    shared: Stack, a_job: dict[str, Any]
) -> None:
    done = a_job["done"]
    assert listed(shared, B) == []
    with shared.client(B) as client:
        named = [
            client.post("/jobs", json={"input_object": name, "model_type": "xgboost"})
            for name in ("batch.csv", upload_key("batch.csv", A))
        ]
        deleted = client.delete("/uploads/batch.csv")
        reads = [
            client.get(url)
            for url in (done["status_url"], done["results_url"], done["results_url"] + ".csv")
        ]
    for response in named:
        assert response.status_code == 404, response.text
        assert response.json()["error"]["type"] == "upload_not_found"
        assert "of this key" in response.json()["error"]["message"]
    assert deleted.status_code == 404 and deleted.json()["error"]["type"] == "upload_not_found"
    assert [r.status_code for r in reads] == [404, 404, 404]
    assert shared.registry().store.exists(upload_key("batch.csv", A))  # still there


def test_an_admin_sees_every_upload_and_job_but_gets_no_url_of_another_keys(
    shared: Stack, a_job: dict[str, Any]
) -> None:
    done = a_job["done"]
    mine = {"input_object": upload_key("batch.csv", A), "owner": A_OWNER, "name": "batch.csv"}
    assert any(mine.items() <= u.items() for u in listed(shared, ADMIN_KEY))
    with shared.client(ADMIN_KEY) as admin:
        status = admin.get(done["status_url"])
        results = admin.get(done["results_url"], params={"limit": 3})
    assert status.status_code == 200 and status.json()["status"] == "succeeded"
    assert status.json()["output_object"] == done["output_object"]
    assert status.json()["output_location"] is None  # no URL of another key's results
    assert results.status_code == 200 and results.json()["total"] == 300
    # An admin may run a job of any key's upload: that job is the admin's own.
    own = run_job(shared, ADMIN_KEY, {"input_object": upload_key("batch.csv", A)})
    assert own["status"] == "succeeded", own
    assert own["output_location"].startswith(shared.fields["s3_endpoint_url"])


@pytest.mark.parametrize("key", [A, B, ADMIN_KEY])
def test_nothing_but_an_upload_is_a_jobs_input(
    shared: Stack, a_job: dict[str, Any], key: str
) -> None:
    store = shared.registry().store
    assert store.exists("registry.json") and store.exists("xgboost/1/metadata.json")
    escapes = [
        "registry.json",
        "xgboost/1/metadata.json",
        "xgboost/1/model.ubj",
        "../x",
        "../registry.json",
        "/etc/passwd",
        f"uploads/{B_OWNER}/../{A_OWNER}/batch.csv",
        f"uploads/{B_OWNER}/../../registry.json",
        "uploads/../registry.json",
        f"uploads/{A_OWNER}",
        f"uploads/{A_OWNER}/",
        f"uploads/{A_OWNER}/batch.csv/../../../registry.json",
        f"uploads//{A_OWNER}/batch.csv",
        a_job["done"]["output_object"],  # another job's results
        "uploads/not-an-owner/batch.csv",
        "absent.csv",
    ]
    with shared.client(key) as client:
        answers = {
            name: client.post("/jobs", json={"input_object": name, "model_type": "xgboost"})
            for name in escapes
        }
    for name, response in answers.items():
        assert response.status_code == 404, (name, response.text)
        assert response.json()["error"]["type"] == "upload_not_found", name


def test_upload_names_must_be_safe_and_match_the_content_type(
    shared: Stack, a_job: dict[str, Any]
) -> None:
    cases = [
        ("x.json", "text/csv"),  # not a CSV name
        (".hidden.csv", "text/csv"),
        ("a..csv", "text/csv"),
        ("batch.csv", PARQUET),  # a Parquet body named .csv
        ("batch.parquet", "text/csv"),
        ("x" * 129 + ".csv", "text/csv"),
        ("bad name.csv", "text/csv"),
    ]
    answers = [put(shared, A, name, b"a,b\n1,2\n", ctype) for name, ctype in cases]
    assert [r.status_code for r in answers] == [422] * len(cases), [r.text for r in answers]
    with shared.client(A) as client:
        escape = client.put("/uploads/..%2Fregistry.json", content=b"{}")  # no such route
    assert escape.status_code in {404, 422}, escape.text
    assert [u["name"] for u in listed(shared, A)] == ["batch.csv"]


def test_other_content_types_are_refused_naming_the_accepted_ones(
    shared: Stack, a_job: dict[str, Any]
) -> None:
    with shared.client(A) as client:
        answers = [
            client.put("/uploads/x.csv", content=b"a\n1\n", headers={"content-type": ctype})
            for ctype in ("application/json", "text/plain", "application/octet-stream")
        ]
        bare = client.put("/uploads/x.csv", content=b"a\n1\n")  # no Content-Type
        job = client.post("/jobs", content=b"a\n1\n", headers={"content-type": "text/plain"})
    for response in [*answers, bare]:
        assert response.status_code == 415, response.text
        message = response.json()["error"]["message"]
        assert "text/csv" in message and PARQUET in message
    assert job.status_code == 415 and "application/json" in job.json()["error"]["message"]
    assert PARQUET in job.json()["error"]["message"]
    assert [u["name"] for u in listed(shared, A)] == ["batch.csv"]


def test_a_csv_body_to_post_jobs_is_stored_as_an_upload_and_run(
    shared: Stack, demo_models: dict[str, TrainedModel]
) -> None:
    x, data = features(40, 0.2202)
    with shared.client(A, headers={"content-type": "text/csv"}) as client:
        submitted = client.post("/jobs", params={"model_type": "xgboost"}, content=data)
        assert submitted.status_code == 202, submitted.text
        done, _ = wait_for(client, submitted.json()["status_url"], {"succeeded", "failed"})
        csv_text = client.get(done["results_url"] + ".csv").text
        unknown = client.post("/jobs", params={"model_type": "nope"}, content=data)
    with shared.client(A) as client:
        mixed = client.post("/jobs", params={"model_type": "xgboost"}, json={"input_data": []})
    assert done["status"] == "succeeded", done
    name = done["input_object"].rsplit("/", 1)[1]
    assert done["input_object"] == upload_key(name, A)
    assert name.startswith("job-") and name.endswith(".csv")
    assert done["output_object"] == results_key(done["job_id"])
    assert shared.registry().store.get(done["input_object"]) == data
    assert_results_match(csv_text, x, demo_models["xgboost"])
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "model_not_found"
    assert mixed.status_code == 422 and "query parameters" in mixed.text
    names = [u["name"] for u in listed(shared, A)]
    assert name in names and len([n for n in names if n.startswith("job-")]) == 1


def test_a_parquet_upload_gives_parquet_results_under_the_jobs_id(
    shared: Stack, demo_models: dict[str, TrainedModel], tmp_path: Path
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    x, _ = rows(12_000, 0.2303)  # three pages of results
    _, _, names, _ = breast_cancer()
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({n: x[:, i] for i, n in enumerate(names)}), path)
    response = put(shared, B, "batch.parquet", path.read_bytes(), PARQUET)
    assert response.status_code == 201, response.text
    assert response.json()["content_type"] == PARQUET
    done = run_job(shared, B, {"input_object": "batch.parquet"})
    assert done["status"] == "succeeded", done
    assert done["output_object"] == results_key(done["job_id"], "parquet")
    download = httpx.get(done["output_location"])
    table = pq.read_table(io.BytesIO(download.content))
    assert table.column_names == ["row", "label", "p_malignant", "p_benign"]
    assert table.column("row").to_pylist() == list(range(12_000))
    model = demo_models["xgboost"]
    got = np.column_stack([table.column("p_malignant"), table.column("p_benign")])
    np.testing.assert_allclose(got, model.estimator.predict_proba(x), rtol=1e-6)
    classes = model.metadata["classes"]
    assert table.column("label").to_pylist() == [classes[i] for i in model.estimator.predict(x)]
    assert pq.ParquetFile(io.BytesIO(download.content)).metadata.num_row_groups == 3


def test_a_re_put_replaces_and_a_delete_removes(shared: Stack) -> None:
    assert put(shared, B, "twice.csv", b"a,b\n1,2\n", "text/csv").status_code == 201
    assert put(shared, B, "twice.csv", b"a,b\n3,4\n5,6\n", "text/csv").json()["bytes"] == 12
    assert shared.registry().store.get(upload_key("twice.csv", B)) == b"a,b\n3,4\n5,6\n"
    with shared.client(B) as client:
        deleted = client.delete("/uploads/twice.csv")
        again = client.delete("/uploads/twice.csv")
        job = client.post("/jobs", json={"input_object": "twice.csv", "model_type": "xgboost"})
    assert deleted.status_code == 200 and deleted.json()["bytes"] == 12
    assert again.status_code == 404 and job.status_code == 404
    assert not shared.registry().store.exists(upload_key("twice.csv", B))


def vm_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for {pid}")


def big_csv() -> tuple[bytes, bytes]:
    """A CSV header, and whole lines of about a MiB to repeat after it."""
    _, data = features(64, 0.2404)
    header, body = data.split(b"\n", 1)
    chunk = body * (1024 * 1024 // len(body) + 1)
    return header + b"\n", chunk[: chunk.rindex(b"\n", 0, 1024 * 1024) + 1]


def streamed(header: bytes, piece: bytes, times: int) -> Iterator[bytes]:
    """Sent a piece at a time: the body is never whole in this process either."""
    yield header
    for _ in range(times):
        yield piece


def test_a_200_mb_upload_keeps_the_api_under_150_mb(shared: Stack) -> None:
    api = next(p for p in shared.processes if p.name == "api" and p.alive())
    before = vm_mb(api.pid, "VmRSS")
    samples: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            samples.append(vm_mb(api.pid, "VmRSS"))

    header, piece = big_csv()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    try:
        with shared.client(A, headers={"content-type": "text/csv"}) as client:
            body = streamed(header, piece, BIG_MB)
            response = client.put("/uploads/big.csv", content=body, timeout=300)
    finally:
        stop.set()
        sampler.join()
    seconds = time.monotonic() - started
    peak, hwm, after = (
        max(samples, default=before),
        vm_mb(api.pid, "VmHWM"),
        vm_mb(api.pid, "VmRSS"),
    )
    size = response.json().get("bytes", 0) if response.status_code == 201 else 0
    print(
        f"\nAPI RSS during a {size / 2**20:.0f} MiB upload ({seconds:.1f} s, "
        f"{size / 2**20 / seconds:.0f} MiB/s): before {before:.1f} MB, sampled peak "
        f"{peak:.1f} MB, VmHWM {hwm:.1f} MB, after {after:.1f} MB"
    )
    assert response.status_code == 201, response.text
    assert size == len(header) + BIG_MB * len(piece) > (BIG_MB - 1) * 2**20
    store = shared.registry().store
    assert store.size(upload_key("big.csv", A)) == size
    store.delete(upload_key("big.csv", A))  # the session's S3 server holds it in memory
    assert hwm < RSS_LIMIT_MB, (before, peak, hwm)
