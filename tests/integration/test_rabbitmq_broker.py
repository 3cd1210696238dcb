"""RabbitMQ as the broker (`pytest --broker=rabbitmq`): what differs from Redis. The
queues are quorum queues (the workers' direct ones classic), publishes are confirmed, a
whole worker killed mid-task has its task delivered again at once (no visibility
timeout), a callback's retry stays on the callback queue, and /metrics counts the
queues without an oldest-task age. Real stack on the session's private node."""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from celery import Celery

from api.examples import EXAMPLE_ROW
from api.routes.metrics import amqp_depths
from common.cache import notify_registry_changed
from common.settings import Settings
from common.training import TrainedModel
from dev.rabbitmq import RabbitNode, rabbitmqctl
from dev.services import free_port, wait_until
from queueing.dispatcher import create_producer
from queueing.messages import CALLBACK_TASK, PING_TASK
from tests.integration.slow_models import SlowModel, calls
from tests.integration.stack import ROOT, Stack, scrape
from tests.integration.test_callback_delivery import Receiver
from tests.integration.test_jobs import rows
from tests.integration.test_worker_faults import (
    assert_answered_once,
    in_background,
    live_workers,
    marker,
    pool_processes,
    wait_for_call,
    worker_of,
)

pytestmark = pytest.mark.integration

SLOW_SECONDS = 1.5  # "slow" answers after this long, as in test_worker_faults
VISIBILITY = 3600  # Redis's visibility timeout, which RabbitMQ does not have: never waited for
PREDICT_TIMEOUT = 40.0  # far below VISIBILITY: an answer in time is no visibility wait


@dataclass(frozen=True)
class Rabbit:
    stack: Stack
    node: RabbitNode
    vhost: str

    def queue_types(self) -> dict[str, str]:
        """Name -> type (quorum, classic) of every queue of this stack's vhost."""
        return {q["name"]: q["type"] for q in self.table("list_queues", "-p", self.vhost)}

    def channels(self) -> list[dict[str, str]]:
        """This stack's channels (`list_channels` has no vhost option: filtered here)."""
        found = self.table("list_channels", "vhost", "confirm", "consumer_count")
        return [c for c in found if c["vhost"] == self.vhost]

    def table(self, *args: str) -> list[dict[str, str]]:
        """A rabbitmqctl listing (its columns named in `args`), a dict per line."""
        if args[0] == "list_queues":
            args = (*args, "name", "type")
        header, *body = (line.split("\t") for line in rabbitmqctl(self.node, *args).splitlines())
        return [dict(zip(header, values, strict=True)) for values in body]


@pytest.fixture(scope="module")
def rabbit(
    rabbitmq: tuple[RabbitNode, str] | None,
    make_stack: Callable[..., Stack],
    demo_models: dict[str, TrainedModel],
) -> Iterator[Rabbit]:
    """Two workers of two pool processes, a callback worker, and the "slow" model."""
    if rabbitmq is None:
        pytest.skip("RabbitMQ's own behaviour: run with --broker=rabbitmq")
    stack = make_stack(
        "rabbit",
        workers=2,
        callback_workers=1,
        allow_unsafe_pickle=True,
        cache_ttl_seconds=0,  # every request reaches a worker
        broker_visibility_timeout_seconds=VISIBILITY,  # ignored on RabbitMQ
        predict_timeout_seconds=PREDICT_TIMEOUT,
        callback_max_attempts=3,
    )
    metadata = demo_models["xgboost"].metadata | {"model_type": "slow", "artifact_format": "pickle"}
    model = SlowModel(marker(stack, "slow"), SLOW_SECONDS)
    stack.registry().publish(metadata, pickle.dumps(model))
    notify_registry_changed(stack.settings)
    assert stack.settings.broker_url is not None
    yield Rabbit(stack, rabbitmq[0], stack.settings.broker_url.rsplit("/", 1)[1])
    stack.stop()


def test_the_queues_are_quorum_queues_and_the_direct_ones_classic(rabbit: Rabbit) -> None:
    settings = rabbit.stack.settings
    types = rabbit.queue_types()
    ours = [settings.task_queue, settings.effective_job_queue, settings.effective_callback_queue]
    assert {name: types.get(name) for name in ours} == dict.fromkeys(ours, "quorum")
    # Native delayed delivery (the retries' countdown) is set up: its levels are there.
    assert types.get("celery_delayed_0") == types.get("celery_delayed_27") == "quorum"
    # Each worker's own queue (worker.ping) stays classic: Celery declares it.
    direct = {name: kind for name, kind in types.items() if name.endswith(".dq2")}
    assert len(direct) == 3 and set(direct.values()) == {"classic"}, direct


def test_publishes_are_confirmed(rabbit: Rabbit) -> None:
    """Every channel that only publishes (the API's, the workers' events) is in confirm
    mode: the API answers a prediction only once RabbitMQ has the task."""
    with rabbit.stack.client() as client:
        response = client.post("/predict/xgboost/1", json={"input_data": EXAMPLE_ROW})
    assert response.status_code == 200, response.text
    channels = rabbit.channels()
    publishers = [c for c in channels if c["consumer_count"] == "0"]
    assert publishers and {c["confirm"] for c in publishers} == {"true"}, channels


def test_worker_ping_reaches_a_worker_through_its_direct_queue(rabbit: Rabbit) -> None:
    """`python -m worker.ping NODE`, the workers' probe, over RabbitMQ: the ping task goes
    to that worker's own (classic) queue, and that worker answers."""
    stack = rabbit.stack
    for name in ("worker0-rabbit", "callbacks0-rabbit"):
        node = f"{name}@{socket.gethostname()}"
        done = subprocess.run(
            [sys.executable, "-m", "worker.ping", node],
            env=stack.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.startswith(f"{node} (pid "), done.stdout


def test_a_whole_worker_killed_mid_prediction_is_delivered_again_at_once(
    rabbit: Rabbit,
) -> None:
    """SIGKILL of a worker's main process and its pool processes: its connection closes,
    so RabbitMQ returns the unacknowledged task to the queue then and there and the other
    worker runs it. With Redis it would wait out the visibility timeout (VISIBILITY s,
    far past the request's PREDICT_TIMEOUT: the answer would be a 202)."""
    stack = rabbit.stack
    before = len(calls(marker(stack, "slow")))
    with ThreadPoolExecutor(1) as pool:
        pending = in_background(pool, stack, "slow")
        victim = wait_for_call(stack, "slow", before + 1)
        worker = worker_of(stack, victim)
        survivor = next(p for p in live_workers(stack) if p is not worker)
        children = pool_processes(worker.pid)
        killed_at = time.monotonic()
        for pid in [worker.pid, *children]:
            os.kill(pid, signal.SIGKILL)
        response, _ = pending.result(timeout=PREDICT_TIMEOUT + 20)
        again_after = time.monotonic() - killed_at
    assert_answered_once(stack, response)  # a 200 in time, not the 202 of a timeout
    runs = calls(marker(stack, "slow"))[before:]
    assert len(runs) == 2 and runs[0] == victim
    assert runs[1] in pool_processes(survivor.pid)  # the survivor ran it
    assert not worker.alive()
    print(f"\nanswered {again_after:.2f} s after the kill (the model takes {SLOW_SECONDS} s)")


def test_a_callback_retry_stays_on_the_callback_queue(rabbit: Rabbit) -> None:
    """A retried delivery (Celery's countdown, through native delayed delivery) goes back
    to the callback queue, so the callback worker makes it, never a prediction worker:
    without `task_routes` Celery would send it to the default, prediction, queue."""
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    url = receiver.url(2, "twice")  # 500, 500, then 200
    try:
        with rabbit.stack.client() as client:
            job = client.post("/jobs", json={"input_data": rows(1, 0.0402)[1], "callback_url": url})
            assert job.status_code == 202, job.text
        # Backoff with full jitter: at most 1 s, then at most 2 s, plus delay-queue rounding.
        deliveries = receiver.wait_for(url, 3, 60)
    finally:
        receiver.shutdown()
        receiver.server_close()
    assert [d.answered for d in deliveries] == [500, 500, 200]
    received = f"Task {CALLBACK_TASK}["  # Celery's "Task <name>[<id>] received" line
    took_one = [
        p.name
        for p in rabbit.stack.processes
        if p.name.startswith("worker") and received in p.log_path.read_text()
    ]
    assert took_one == []  # no prediction worker ever received a delivery
    callback_worker = next(p for p in rabbit.stack.processes if p.name.startswith("callbacks"))
    assert callback_worker.log_path.read_text().count(received) == 3  # first try, 2 retries


def test_metrics_count_the_queues_without_an_oldest_age(rabbit: Rabbit) -> None:
    """Last: it stops the callback worker. Three tasks wait on its queue; RabbitMQ's
    count shows them, and no age gauge is made up for a broker that cannot tell."""
    stack, settings = rabbit.stack, rabbit.stack.settings
    next(p for p in stack.processes if p.name.startswith("callbacks")).stop()
    producer = create_producer(settings)
    try:
        for _ in range(3):
            producer.send_task(PING_TASK, queue=settings.effective_callback_queue)
        samples = scrape(stack.url + "/metrics")
        assert samples[f"serving_queue_depth{{queue={settings.effective_callback_queue}}}"] == 3
        assert samples[f"serving_queue_depth{{queue={settings.task_queue}}}"] == 0
        assert samples[f"serving_queue_depth{{queue={settings.effective_job_queue}}}"] == 0
        assert not [k for k in samples if k.startswith("serving_queue_oldest_task_age_seconds")]
        # A queue nothing declared has nothing waiting; a broker that is down, no figures.
        assert amqp_depths(producer, ["never-declared"]) == {"never-declared": (0, None)}
        assert amqp_depths(unreachable(settings), ["any"]) == {}
    finally:
        assert stack.purge_queue(settings.effective_callback_queue) == 3
        producer.close()
    wait_until(lambda: scrape_depth(stack) == 0, 10, "the purge to show")


def scrape_depth(stack: Stack) -> float:
    return scrape(stack.url + "/metrics")[
        f"serving_queue_depth{{queue={stack.settings.effective_callback_queue}}}"
    ]


def unreachable(settings: Settings) -> Celery:
    closed = f"amqp://guest:guest@127.0.0.1:{free_port()}//"  # nothing listens there
    return create_producer(settings.model_copy(update={"broker_url": closed}))
