"""GET /metrics: Prometheus text format for all of this API's processes, plus the
broker's queue depth and the age of its oldest task, read at scrape time."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import orjson
from fastapi import APIRouter, Response
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from api.deps import Services, ServicesDep
from common import metrics

router = APIRouter(tags=["health"])
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class QueueCollector(Collector):
    def __init__(self, queue: str, depth: int, oldest_age: float) -> None:
        self.queue, self.depth, self.oldest_age = queue, depth, oldest_age

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            metrics.QUEUE_DEPTH, "Tasks waiting in the broker queue", labels=["queue"]
        )
        depth.add_metric([self.queue], self.depth)
        age = GaugeMetricFamily(
            metrics.QUEUE_OLDEST_AGE,
            "Age of the oldest task waiting in the queue",
            labels=["queue"],
        )
        age.add_metric([self.queue], self.oldest_age)
        yield from (depth, age)


async def queue_stats(services: Services) -> tuple[int, float] | None:
    """Kombu's Redis transport pushes on the left and pops on the right."""
    queue = services.settings.task_queue
    try:
        async with services.broker.pipeline(transaction=False) as pipe:
            pipe.llen(queue)
            pipe.lindex(queue, -1)
            depth, oldest = await pipe.execute()
    except RedisError:
        return None
    age = 0.0
    if oldest:
        sent_at = orjson.loads(oldest).get("headers", {}).get("sent_at")
        if isinstance(sent_at, int | float):
            age = max(0.0, time.time() - sent_at)
    return int(depth), age


def exposition(extra: Sequence[Collector]) -> bytes:
    registry = CollectorRegistry()
    for collector in extra:
        registry.register(collector)
    try:
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # every process of `python -m api`
    except ValueError:  # not started by `python -m api`: one process, the default registry
        return generate_latest(REGISTRY) + generate_latest(registry)
    return generate_latest(registry)


@router.get(
    "/metrics",
    status_code=200,
    response_class=Response,
    summary="Prometheus metrics (no key needed)",
)
async def prometheus_metrics(services: ServicesDep) -> Response:
    stats = await queue_stats(services)
    extra = [] if stats is None else [QueueCollector(services.settings.task_queue, *stats)]
    return Response(exposition(extra), media_type=CONTENT_TYPE)
