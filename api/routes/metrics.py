"""GET /metrics: Prometheus text format for all of this API's processes, plus the
broker's queue depth and (Redis only) the age of its oldest task, read at scrape time."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Iterator, Sequence

from amqp.exceptions import AMQPError
from celery import Celery
from fastapi import APIRouter, Response
from kombu.connection import Connection
from kombu.exceptions import OperationalError
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from redis.asyncio import Redis
from redis.exceptions import RedisError

from api.deps import Services, ServicesDep
from common import metrics
from queueing.config import worker_queues

router = APIRouter(tags=["health"])
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# A queue's depth, and the age of its oldest task where the broker shows it (None).
QueueStats = dict[str, tuple[int, float | None]]
AMQP_CONNECT_SECONDS = 2.0


class QueueCollector(Collector):
    def __init__(self, stats: QueueStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            metrics.QUEUE_DEPTH, "Tasks waiting in the broker queue", labels=["queue"]
        )
        age = GaugeMetricFamily(
            metrics.QUEUE_OLDEST_AGE,
            "Age of the oldest task waiting in the queue (Redis broker only: RabbitMQ "
            "shows no waiting message without delivering it)",
            labels=["queue"],
        )
        for queue, (n, oldest) in self.stats.items():
            depth.add_metric([queue], n)
            if oldest is not None:
                age.add_metric([queue], oldest)
        yield depth
        if age.samples:  # absent, not 0, where the broker cannot tell
            yield age


# KEYS: the queues. ARGV[1]: how many bytes at a message's end to search. For each queue,
# its depth and the `sent_at` header of its oldest message ('' when there is none, or the
# element is not Celery's JSON). Kombu's Redis transport pushes JSON with "body" (base64,
# so no quote inside) first and "headers" after it: the header is in the element's last
# few KiB, however big the body. The API receives two short values per queue, never the
# message, whatever is queued (a key of another type counts as empty).
OLDEST_SENT_AT = """
local out = {}
for _, queue in ipairs(KEYS) do
  local depth, sent = 0, ''
  if redis.call('TYPE', queue).ok == 'list' then
    depth = redis.call('LLEN', queue)
    local message = redis.call('LINDEX', queue, -1)
    if message then
      local tail = string.sub(message, -tonumber(ARGV[1]))
      local at = string.find(tail, '"sent_at": ', 1, true)
      if at then sent = string.match(tail, '^[-+%d.eE]+', at + 11) or '' end
    end
  end
  table.insert(out, depth)
  table.insert(out, sent)
end
return out
"""
# Celery's headers and properties (argsrepr and kwargsrepr are cut at 1 KiB each) take
# about 1.5 KiB; a message whose header is farther from its end is not Celery's.
HEADER_TAIL_BYTES = 64 * 1024


def sent_at(raw: bytes | str | None) -> float | None:
    """The `sent_at` header's value as the script found it; None when it is not a time."""
    try:
        value = float(raw) if raw else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


async def queue_stats(services: Services) -> QueueStats:
    settings = services.settings
    # The callback worker's queue too: it has a worker of its own (worker/__main__.py).
    queues = list(dict.fromkeys([*worker_queues(settings), settings.effective_callback_queue]))
    if services.broker is None:  # RabbitMQ (api/main.py)
        return await asyncio.to_thread(amqp_depths, services.producer, queues)
    return await redis_stats(services.broker, queues)


async def redis_stats(broker: Redis, queues: list[str]) -> QueueStats:
    """Depth and oldest task's age of each queue, in one round trip of a few bytes.
    Kombu's Redis transport pushes on the left and pops on the right."""
    try:
        script = broker.register_script(OLDEST_SENT_AT)
        replies = await script(keys=queues, args=[HEADER_TAIL_BYTES])
    except RedisError:
        return {}
    now, stats = time.time(), QueueStats()
    for i, queue in enumerate(queues):
        depth, oldest = replies[2 * i], sent_at(replies[2 * i + 1])
        stats[queue] = (int(depth), 0.0 if oldest is None else max(0.0, now - oldest))
    return stats


def amqp_depths(producer: Celery, queues: list[str]) -> QueueStats:
    """Each queue's ready messages, from a passive declare (RabbitMQ's count, no message
    delivered), on a connection of this scrape's own: never one a publish waits for."""
    try:
        with producer.connection_for_read(connect_timeout=AMQP_CONNECT_SECONDS) as connection:
            connection.ensure_connection(max_retries=1)
            return {queue: (ready_messages(connection, queue), None) for queue in queues}
    except (OperationalError, OSError, AMQPError):
        return {}  # the broker is down: no queue metrics this scrape, as with Redis


def ready_messages(connection: Connection, queue: str) -> int:
    channel = connection.channel()  # type: ignore[no-untyped-call]
    try:
        return int(channel.queue_declare(queue=queue, passive=True).message_count)
    except connection.channel_errors:  # 404: nothing declared it yet, so nothing waits
        return 0
    finally:
        with contextlib.suppress(*connection.channel_errors, *connection.connection_errors):
            channel.close()


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
