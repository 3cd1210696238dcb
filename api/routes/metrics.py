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
from queueing.config import worker_queues

router = APIRouter(tags=["health"])
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class QueueCollector(Collector):
    def __init__(self, stats: dict[str, tuple[int, float]]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            metrics.QUEUE_DEPTH, "Tasks waiting in the broker queue", labels=["queue"]
        )
        age = GaugeMetricFamily(
            metrics.QUEUE_OLDEST_AGE,
            "Age of the oldest task waiting in the queue",
            labels=["queue"],
        )
        for queue, (n, oldest) in self.stats.items():
            depth.add_metric([queue], n)
            age.add_metric([queue], oldest)
        yield from (depth, age)


def sent_at(message: bytes | None) -> float | None:
    """When the API sent a queued task (its `sent_at` header); None for a message that
    is not Celery's JSON, which must never fail a scrape."""
    if not message:
        return None
    try:
        value = orjson.loads(message).get("headers", {}).get("sent_at")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return float(value) if isinstance(value, int | float) else None


async def queue_stats(services: Services) -> dict[str, tuple[int, float]]:
    """Depth and oldest task's age of each queue. Kombu's Redis transport pushes on the
    left and pops on the right."""
    queues = worker_queues(services.settings)
    try:
        async with services.broker.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.llen(queue)
                pipe.lindex(queue, -1)
            replies = await pipe.execute()
    except RedisError:
        return {}
    now, stats = time.time(), {}
    for i, queue in enumerate(queues):
        depth, oldest = replies[2 * i], sent_at(replies[2 * i + 1])
        stats[queue] = (int(depth), 0.0 if oldest is None else max(0.0, now - oldest))
    return stats


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
    extra = [QueueCollector(stats)] if stats else []
    return Response(exposition(extra), media_type=CONTENT_TYPE)
