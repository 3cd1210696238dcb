"""What is in Redis never breaks the API: garbage on the result channels is counted and
skipped while synchronous predictions keep their answers, and /metrics answers 200 and
gets a few bytes per queue from the broker whatever the queues hold (a 50 MB element,
a 40 MB real task, a key of another type)."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
import redis

from api.examples import EXAMPLE_ROW
from queueing.dispatcher import Outgoing, create_producer, publish
from queueing.results import RESULT_KEY_PREFIX
from tests.integration.stack import Stack, scrape, total

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def quiet(make_stack: Callable[..., Stack]) -> Iterator[Stack]:
    """A stack whose worker is stopped: what is queued stays queued."""
    stack = make_stack("robust", predict_timeout_seconds=30)
    for worker in [p for p in stack.processes if p.name.startswith("worker")]:
        worker.stop()
    yield stack


@pytest.fixture
def broker(quiet: Stack) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(quiet.fields["redis_url"])
    yield client
    client.close()


def timed_scrapes(url: str, n: int = 10) -> tuple[float, str]:
    times, text = [], ""
    for _ in range(n):
        started = time.perf_counter()
        response = httpx.get(url + "/metrics", timeout=30)
        times.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
        text = response.text
    return statistics.median(times), text


def queue_samples(url: str) -> dict[str, float]:
    return {k: v for k, v in scrape(url + "/metrics").items() if k.startswith("serving_queue_")}


def test_metrics_get_a_few_bytes_whatever_the_queues_hold(
    quiet: Stack, broker: redis.Redis
) -> None:
    settings = quiet.settings
    predictions, jobs = settings.task_queue, settings.effective_job_queue
    callbacks = settings.effective_callback_queue
    idle, _ = timed_scrapes(quiet.url)
    # The oldest element of the predictions queue: 50 MB that are not Celery's JSON.
    broker.rpush(predictions, b"\x00junk" + b"x" * 50_000_000)
    # A real Celery message of 40 MB, sent now, then a small one after it.
    producer = create_producer(settings)
    sent = time.time()
    publish(producer, Outgoing("serving.not_a_task", ["a" * 40_000_000], jobs, {}))
    publish(producer, Outgoing("serving.not_a_task", ["small"], jobs, {}))
    broker.set(callbacks, b"a key of another type")
    try:
        time.sleep(1.5)
        loaded, text = timed_scrapes(quiet.url)
        samples = queue_samples(quiet.url)
    finally:
        broker.delete(predictions, jobs, callbacks)
    age = samples[f"serving_queue_oldest_task_age_seconds{{queue={jobs}}}"]

    print(
        f"\n/metrics: {idle * 1000:.1f} ms with empty queues, {loaded * 1000:.1f} ms with "
        f"a 50 MB and a 40 MB message queued (x{loaded / idle:.1f})"
    )
    assert samples[f"serving_queue_depth{{queue={predictions}}}"] == 1
    assert samples[f"serving_queue_oldest_task_age_seconds{{queue={predictions}}}"] == 0
    assert samples[f"serving_queue_depth{{queue={jobs}}}"] == 2
    assert 1.5 <= age <= time.time() - sent + 0.5
    assert samples[f"serving_queue_depth{{queue={callbacks}}}"] == 0
    assert len(text) < 1_000_000  # the exposition, never a message
    # No bound on the time: the API gets a few bytes, but Redis still copies each queue's
    # oldest element into the script (~3 ms per MB here), as LINDEX did before.


def in_flight_task(broker: redis.Redis, queue: str, timeout: float = 10) -> str:
    """The id of the task waiting in `queue` (the stack's worker is stopped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        raw = broker.lindex(queue, -1)
        if raw:
            return str(orjson.loads(raw)["headers"]["id"])
        time.sleep(0.05)
    raise AssertionError(f"no task in {queue}")


GARBAGE = [
    b"not json",
    b"\xff\xfe\x00\x01 binary",
    b"[1, 2, 3]",
    b'{"status": ["unhashable"]}',
    b'{"status": "PENDING", "result": null}',
    b'{"no": "status"}',
    # Huge, yet under Redis's own limit for a subscriber's backlog (pubsub 32 MB hard):
    # past it Redis drops the subscription, and the messages with it, on a slow reader.
    b"\x00" * 5_000_000,
]


def skipped(url: str) -> dict[str, float]:
    samples = scrape(url + "/metrics")
    reasons = ("not_a_result", "unawaited", "failed")
    return {r: total(samples, "serving_result_messages_skipped_total", reason=r) for r in reasons}


def wait_for_skips(url: str, before: dict[str, float], n: int) -> dict[str, float]:
    """The skip counts once both reasons have counted `n` more (at most 20 s: the 5 MB
    messages take the listener a while on a loaded machine), or as they are by then."""
    deadline = time.monotonic() + 20
    while True:
        counted = skipped(url)
        grown = [counted[r] - before[r] for r in ("not_a_result", "unawaited")]
        if min(grown) >= n or time.monotonic() > deadline:
            return counted
        time.sleep(0.2)


def test_garbage_on_the_result_channels_is_skipped_and_predictions_still_answer(
    quiet: Stack, broker: redis.Redis
) -> None:
    row = EXAMPLE_ROW | {"mean radius": 11.25}
    before = skipped(quiet.url)
    answer: dict[str, Any] = {}

    def predict() -> None:
        with quiet.client() as client:
            answer["response"] = client.post("/predict/xgboost", json={"input_data": row})

    waiting = threading.Thread(target=predict)
    waiting.start()
    task_id = in_flight_task(broker, quiet.settings.task_queue)
    prefix = task_id[:13]  # this API process's listener's: its 12 hex digits and a dash
    for garbage in GARBAGE:  # on the channel of the very task the request waits for
        assert broker.publish(RESULT_KEY_PREFIX + task_id, garbage) == 1
    for garbage in GARBAGE:  # and on this process's channels that nobody waits on
        assert broker.publish(f"{RESULT_KEY_PREFIX}{prefix}nobody", garbage) == 1
    counted = wait_for_skips(quiet.url, before, len(GARBAGE))
    assert waiting.is_alive(), "the garbage answered the waiting request"

    quiet.start_worker("worker-garbage")
    waiting.join(60)
    with quiet.client() as client:
        again = client.post("/predict/xgboost", json={"input_data": row | {"mean radius": 12.5}})
        cached = client.post("/predict/xgboost", json={"input_data": row})
    samples = scrape(quiet.url + "/metrics")

    response = answer["response"]
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == cached.json()["predictions"]
    assert cached.json()["cached"] is True
    assert again.status_code == 200, again.text
    assert counted["not_a_result"] - before["not_a_result"] == len(GARBAGE)
    assert counted["unawaited"] - before["unawaited"] == len(GARBAGE)
    assert counted["failed"] == before["failed"]
    assert total(samples, "serving_result_listener_restarts_total") == 0
