"""Jobs and their results expire SERVING_JOB_TTL_SECONDS after submission, then answer
404 `job_not_found` (README, Jobs), on a stack whose jobs live six seconds."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from tests.integration.stack import Stack
from tests.integration.test_jobs import rows

pytestmark = pytest.mark.integration

TTL = 6  # seconds: a job on a cold pool process of a loaded machine ends well before


@pytest.fixture(scope="module")
def expiring(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack("expiry", job_ttl_seconds=TTL)


def finished(client: httpx.Client, url: str, until: float) -> httpx.Response:
    """The job's status once it has ended (polled until `until`, a monotonic time)."""
    while True:
        response = client.get(url)
        ended = response.status_code != 200 or response.json()["status"] not in {
            "queued",
            "running",
        }
        if ended or time.monotonic() >= until:
            return response
        time.sleep(0.05)


def routes(job: dict[str, str]) -> dict[str, str]:
    return {
        "status": job["status_url"],
        "results": job["results_url"],
        "results.csv": job["results_url"] + ".csv",
    }


def test_a_job_and_its_results_answer_404_once_its_ttl_has_passed(expiring: Stack) -> None:
    _, data = rows(4, 0.0501)
    with expiring.client() as client:
        submitted = client.post("/jobs", json={"input_data": data})
        answered_at = time.monotonic()  # the job was created before this
        assert submitted.status_code == 202, submitted.text
        job = submitted.json()
        done = finished(client, job["status_url"], answered_at + TTL - 1)
        before = {name: client.get(url) for name, url in routes(job).items()}
        time.sleep(max(0.0, TTL + 0.5 - (time.monotonic() - answered_at)))
        after = {name: client.get(url) for name, url in routes(job).items()}
        cancel_after = client.delete(job["status_url"])

    # Before: the job and its results are there.
    assert done.status_code == 200 and done.json()["status"] == "succeeded", done.text
    assert {name: r.status_code for name, r in before.items()} == dict.fromkeys(routes(job), 200)
    assert len(before["results"].json()["predictions"]) == 4
    assert before["results.csv"].text.count("\n") == 5  # the header and four rows

    # After: every route of the job answers as for a job that never existed.
    for name, response in [*after.items(), ("cancel", cancel_after)]:
        assert response.status_code == 404, (name, response.text)
        error = response.json()["error"]
        assert error["type"] == "job_not_found", (name, error)
        assert job["job_id"] in error["message"], (name, error)


def test_an_expired_job_is_like_an_unknown_one(expiring: Stack) -> None:
    """The 404 of an expired job is the very answer an id that never existed gets."""
    _, data = rows(1, 0.0502)
    with expiring.client() as client:
        job = client.post("/jobs", json={"input_data": data}).json()
        time.sleep(TTL + 0.5)
        expired = client.get(job["status_url"])
        never = client.get("/jobs/" + "f" * len(job["job_id"]))
    assert expired.status_code == never.status_code == 404
    assert expired.json()["error"]["type"] == never.json()["error"]["type"] == "job_not_found"
    assert expired.json()["error"]["message"].replace(job["job_id"], "<id>") == never.json()[
        "error"
    ]["message"].replace("f" * len(job["job_id"]), "<id>")
