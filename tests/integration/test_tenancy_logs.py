"""Keys are tenants, on a real stack: each predict key sees only its own log rows and its
own cache hits; the admin key sees every key's rows. /logs answers stay under their byte
cap, and the API's memory stays flat, however big the logged requests."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.examples import EXAMPLE_ROW
from common.settings import Settings
from common.tenancy import owner_of
from tests.integration.stack import ADMIN_KEY, READER_KEY, Stack

pytestmark = pytest.mark.integration

OTHER_KEY = "second-reader-key-for-tests"
KEYS = f"{READER_KEY},{OTHER_KEY}"
LOG_CAP = Settings().logs_max_response_bytes  # the default, 8 MiB
BIG_ROWS = 5000


def row(offset: float) -> dict[str, float]:
    return {name: value + offset for name, value in EXAMPLE_ROW.items()}


@pytest.fixture(scope="module")
def stack(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack(
        "tenancy",
        api_keys=KEYS,
        max_rows_per_request=BIG_ROWS,
        max_body_bytes=16 * 1024 * 1024,
    )


def predict(client: httpx.Client, body: Any) -> dict[str, Any]:
    response = client.post("/predict/xgboost/1", json={"input_data": body})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def logged_ids(client: httpx.Client, **params: Any) -> list[str]:
    response = client.get("/logs", params={"n_limit": 1000} | params)
    assert response.status_code == 200, response.text
    return [entry["request_id"] for entry in response.json()]


def test_a_cache_hit_is_never_another_keys(stack: Stack) -> None:
    body = row(0.0101)
    with stack.client(READER_KEY) as a, stack.client(OTHER_KEY) as b:
        first_a = predict(a, body)
        first_b = predict(b, body)
        second_a, second_b = predict(a, body), predict(b, body)

    assert (first_a["cached"], first_b["cached"]) == (False, False)
    assert (second_a["cached"], second_b["cached"]) == (True, True)  # each its own entry
    assert first_b["predictions"] == first_a["predictions"]


def test_with_a_global_cache_every_key_shares_the_entries(
    make_stack: Callable[..., Stack],
) -> None:
    shared = make_stack("tenancy-global", api_keys=KEYS, cache_scope="global")
    body = row(0.0202)
    with shared.client(READER_KEY) as a, shared.client(OTHER_KEY) as b:
        assert predict(a, body)["cached"] is False
        assert predict(b, body)["cached"] is True
    shared.stop()


def test_each_key_sees_its_own_log_rows_and_the_admin_all(stack: Stack) -> None:
    with (
        stack.client(READER_KEY) as a,
        stack.client(OTHER_KEY) as b,
        stack.client(ADMIN_KEY) as admin,
    ):
        mine = [predict(a, row(0.03 + i / 1000))["request_id"] for i in range(3)]
        theirs = [predict(b, row(0.04 + i / 1000))["request_id"] for i in range(2)]
        hit = predict(b, row(0.04))["request_id"]  # a cache hit, logged by the API
        seen_by_a, seen_by_b = logged_ids(a), logged_ids(b)
        seen_by_admin = logged_ids(admin)
        admin_of_b = logged_ids(admin, owner=owner_of(OTHER_KEY))
        refused = b.get("/logs", params={"owner": owner_of(READER_KEY)})
        a_rows = a.get("/logs", params={"n_limit": 3}).json()

    assert set(mine) <= set(seen_by_a) and not {*theirs, hit} & set(seen_by_a)
    assert {*theirs, hit} <= set(seen_by_b) and not set(mine) & set(seen_by_b)
    assert {*mine, *theirs, hit} <= set(seen_by_admin)
    assert set(admin_of_b) == set(seen_by_b)
    assert refused.status_code == 403
    assert refused.json()["error"]["type"] == "forbidden"
    assert {entry["owner"] for entry in a_rows} == {owner_of(READER_KEY)}
    assert READER_KEY not in str(a_rows)  # the digest, never the key


def test_a_jobs_rows_are_its_owners_and_found_by_job_id(stack: Stack) -> None:
    with stack.client(READER_KEY) as a, stack.client(OTHER_KEY) as b:
        submitted = a.post("/jobs", json={"input_data": [row(0.05), row(0.06)]})
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["job_id"]
        for _ in range(200):
            if a.get(f"/jobs/{job_id}").json()["status"] == "succeeded":
                break
        by_job = a.get("/logs", params={"job_id": job_id}).json()
        assert logged_ids(b, job_id=job_id) == []

    assert [entry["job_id"] for entry in by_job] == [job_id]
    assert by_job[0]["owner"] == owner_of(READER_KEY)


def test_filters_and_the_cursor_over_http(stack: Stack) -> None:
    with stack.client(OTHER_KEY) as b:
        ids = [predict(b, row(0.07 + i / 1000))["request_id"] for i in range(5)]
        page = b.get("/logs", params={"n_limit": 2, "status": "ok", "model_type": "xgboost"})
        walked = [entry["request_id"] for entry in page.json()]
        while "X-Next-Cursor" in page.headers:
            assert 'rel="next"' in page.headers["Link"]
            page = b.get(page.headers["Link"].split(">")[0].lstrip("<"))
            walked += [entry["request_id"] for entry in page.json()]
            if set(ids) <= set(walked):
                break
        one = b.get("/logs", params={"request_id": ids[2]}).json()
        bad_cursor = b.get("/logs", params={"cursor": "not-a-cursor"})
        bad_status = b.get("/logs", params={"status": "maybe"})

    assert walked[:5] == ids[::-1]
    assert [entry["request_id"] for entry in one] == [ids[2]]
    assert bad_cursor.status_code == 422 and "cursor" in bad_cursor.json()["error"]["message"]
    assert bad_status.status_code == 422


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.mark.timeout(240)
def test_big_requests_keep_log_answers_capped_and_memory_flat(stack: Stack) -> None:
    api = next(p for p in stack.processes if p.name == "api").pid
    rng = random.Random(7)
    with stack.client(READER_KEY) as a:
        predict(a, row(0.08))
        a.get("/logs", params={"n_limit": 5})
        before = rss_mib(api)
        for _ in range(12):
            rows = [row(rng.random()) for _ in range(BIG_ROWS)]
            predict(a, rows)
        after_requests = rss_mib(api)
        sizes, peak = [], after_requests
        for _ in range(4):
            response = a.get("/logs", params={"n_limit": 1000})
            assert response.status_code == 200
            sizes.append(len(response.content))
            first = response.json()[0]
            peak = max(peak, rss_mib(api))
        assert first["n_rows"] == BIG_ROWS and len(first["input"]) == BIG_ROWS
        assert first["truncated"] is False and "X-Next-Cursor" in response.headers

    print(
        f"\n/logs after {BIG_ROWS}-row requests: answers {[s / 2**20 for s in sizes]} MiB "
        f"(cap {LOG_CAP / 2**20} MiB); API RSS {before:.0f} MiB before, "
        f"{after_requests:.0f} after the requests, {peak:.0f} at most while reading logs"
    )
    assert all(size <= LOG_CAP for size in sizes)
    # Reading pages of megabyte rows costs a page's worth, not the rows': before the fix,
    # 20 such rows at n_limit=20 raised the API's memory by 150 MB.
    assert peak - after_requests < 50, (before, after_requests, peak)
