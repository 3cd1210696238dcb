"""Tasks pushed from the event loop (queueing.redis_publish) are Celery's own messages:
the same envelope kombu's Redis transport pushes, consumed by a stock Celery worker."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from celery import Celery
from celery.contrib.testing.worker import start_worker
from kombu.serialization import loads

from common.errors import BackendUnavailable
from common.settings import Settings
from queueing.dispatcher import create_producer, publish
from queueing.messages import JobStep, Outgoing
from queueing.packed_rows import PackedRows, pack
from queueing.redis_publish import RedisTaskPublisher


def normalised(raw: bytes) -> dict[str, Any]:
    """An envelope without what differs between two sends of the same task."""
    envelope = json.loads(raw)
    content_type = envelope["content-type"]
    body = base64.b64decode(envelope["body"])
    envelope["body"] = loads(
        body, content_type, envelope["content-encoding"], accept=[content_type]
    )
    del envelope["headers"]["sent_at"], envelope["properties"]["delivery_tag"]
    # Celery passes its send options through to kombu, which stores them as properties;
    # argsrepr is in the headers already, where the worker reads it.
    envelope["properties"].pop("argsrepr", None)
    return envelope


STEP = JobStep("serving.finalize_job", "job-1")
# A 1,000-row batch: its body is put into the envelope after kombu's JSON wrote the rest.
PACKED = PackedRows(pack([[1.5, -2.0, 3.25]]), 3).wire()
MSGPACK = {"serializer": "msgpack"}
BIG_ROWS = "[" + ",".join(["[" + ",".join(["12.34567890123"] * 30) + "]"] * 1000) + "]"


@pytest.mark.parametrize(
    ("name", "args", "options"),
    [
        (STEP.name, STEP.args(), {"ignore_result": True, "argsrepr": STEP.summary()}),
        ("serving.predict", ["m", "1", "sha", "[[1.5,2]]", [["r", 1, 1.0, "o"]]], {}),
        ("serving.predict", ["m", "1", "sha", BIG_ROWS, [["r", 1000, 1.0, "o"]]], {}),
        ("serving.predict", ["m", "1", "sha", PACKED, [["r", 1, 1.0, "o"]]], MSGPACK),
    ],
    ids=["a job step", "a prediction", "1,000 rows", "packed rows"],
)
def test_the_envelope_is_the_one_kombu_pushes(
    redis_url: str, name: str, args: list[Any], options: dict[str, Any]
) -> None:
    app = create_producer(Settings(redis_url=redis_url))
    queue = f"q-{uuid.uuid4().hex}"
    outgoing = Outgoing(name, args, queue, {**options, "task_id": str(uuid.uuid4())})
    client = redis.Redis.from_url(redis_url)

    publish(app, outgoing)  # kombu's own publish
    by_kombu = client.rpop(queue)
    ours = RedisTaskPublisher(app, aioredis.Redis.from_url(redis_url)).envelope(outgoing)

    assert isinstance(by_kombu, bytes)
    assert normalised(ours) == normalised(by_kombu)
    assert json.loads(ours)["headers"]["task"] == outgoing.name
    # Written as kombu writes it, separators included: /metrics finds `"sent_at": ` in it.
    assert b'"sent_at": ' in ours and b'"sent_at": ' in by_kombu
    assert list(json.loads(ours)) == list(json.loads(by_kombu))


def test_a_stock_celery_worker_runs_what_is_pushed(redis_url: str) -> None:
    queue = f"q-{uuid.uuid4().hex}"
    worker_app = Celery("stock", broker=redis_url, backend=redis_url, set_as_current=False)
    worker_app.conf.update(
        task_default_queue=queue,
        worker_hijack_root_logger=False,
        accept_content=["json", "msgpack"],
    )

    @worker_app.task(name="serving.add")
    def add(a: int, b: int) -> int:
        return a + b

    @worker_app.task(name="serving.unpack")
    def unpack(wire: dict[str, Any]) -> list[list[float]]:
        return PackedRows.from_wire(wire).rows()

    producer = create_producer(Settings(redis_url=redis_url))
    ids = [str(uuid.uuid4()) for _ in range(4)]
    outgoing = [
        Outgoing("serving.add", [i, 10], queue, {"task_id": t}) for i, t in enumerate(ids[:3])
    ]
    # A body of msgpack with raw bytes in it: packed rows, as the predict task gets them.
    packed = PackedRows(pack([[1.5, -2.0], [0.1, 7.0]]), 2).wire()
    outgoing.append(Outgoing("serving.unpack", [packed], queue, {"task_id": ids[3], **MSGPACK}))

    async def push() -> None:
        client = aioredis.Redis.from_url(redis_url)
        publisher = RedisTaskPublisher(producer, client)
        await publisher.publish(outgoing[0])  # one LPUSH
        await publisher.publish(*outgoing[1:])  # a pipeline
        await client.aclose()

    with start_worker(worker_app, pool="solo", perform_ping_check=False, loglevel="WARNING"):
        asyncio.run(push())
        results = [worker_app.AsyncResult(t).get(timeout=20) for t in ids]

    assert results == [10, 11, 12, [[1.5, -2.0], [0.1, 7.0]]]


def test_redis_gone_is_the_broker_unavailable() -> None:
    from dev.services import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    producer = create_producer(Settings(redis_url=url))
    client = aioredis.Redis.from_url(url, socket_connect_timeout=0.5)
    publisher = RedisTaskPublisher(producer, client)

    with pytest.raises(BackendUnavailable) as info:
        asyncio.run(publisher.publish(Outgoing("serving.ping", [], "q", {})))

    assert info.value.message.startswith("the task queue (broker) is unavailable")


def test_options_it_does_not_know_go_through_kombu() -> None:
    assert RedisTaskPublisher.handles(Outgoing("t", [], "q", {"task_id": "x", "argsrepr": ""}))
    assert not RedisTaskPublisher.handles(Outgoing("t", [], "q", {"countdown": 5}))
