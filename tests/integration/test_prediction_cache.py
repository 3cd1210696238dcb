"""PredictionCache on a real Redis: concurrent lookups share one MGET, writes one
pipeline, and what this process wrote it reads back before Redis has it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from common.cache import SET_ALL, PredictionCache
from dev.services import free_port

pytestmark = pytest.mark.integration


def commands_run(client: redis.Redis, name: str) -> int:
    stats: dict[str, Any] = client.info("commandstats")
    return int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))


@pytest.fixture
def sync(redis_db_url: str) -> Iterator[redis.Redis]:
    """A plain client on the test's database, to look at what reached Redis."""
    with redis.Redis.from_url(redis_db_url) as client:
        yield client


def run(url: str, scenario: Callable[[aioredis.Redis], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        client = aioredis.Redis.from_url(url)
        try:
            return await scenario(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_lookups_made_together_go_as_one_mget_and_each_gets_its_value(
    redis_db_url: str, sync: redis.Redis
) -> None:
    sync.mset({f"k{i}": f"v{i}" for i in range(0, 50, 2)})  # even keys cached
    before = commands_run(sync, "mget")

    async def scenario(client: aioredis.Redis) -> list[bytes | None]:
        cache = PredictionCache(client, ttl_seconds=60)
        keys = [f"k{i}" for i in range(50)] + ["k4", "k4"]  # a key asked for thrice
        return await asyncio.gather(*(cache.get(key) for key in keys))

    values = run(redis_db_url, scenario)
    assert values[:50] == [f"v{i}".encode() if i % 2 == 0 else None for i in range(50)]
    assert values[50:] == [b"v4", b"v4"]
    assert commands_run(sync, "mget") - before == 1


def test_writes_go_as_one_command_with_the_ttl_and_read_back_at_once(
    redis_db_url: str, sync: redis.Redis
) -> None:
    sync.script_load(SET_ALL)  # loaded already, as after a process's first write
    before, scripts_before = commands_run(sync, "set"), commands_run(sync, "evalsha")

    async def scenario(client: aioredis.Redis) -> tuple[bytes | None, int]:
        cache = PredictionCache(client, ttl_seconds=60)
        for i in range(20):
            cache.put(f"w{i}", f"value {i}".encode())
        mine = await cache.get("w7")  # before the pipeline went out
        in_redis = sync.exists("w7")
        await cache.flush()
        return mine, in_redis

    mine, in_redis_before_flush = run(redis_db_url, scenario)
    assert mine == b"value 7"
    assert in_redis_before_flush == 0  # read back from this process, not from Redis
    assert commands_run(sync, "set") - before == 20
    assert commands_run(sync, "evalsha") - scripts_before == 1  # all 20 in one script call
    assert sync.get("w19") == b"value 19"
    assert 55 <= sync.ttl("w3") <= 60


def test_a_zero_ttl_writes_nothing(redis_db_url: str, sync: redis.Redis) -> None:
    async def scenario(client: aioredis.Redis) -> None:
        cache = PredictionCache(client, ttl_seconds=0)
        cache.put("off", b"x")
        await cache.flush()

    run(redis_db_url, scenario)
    assert sync.exists("off") == 0


def test_unreachable_redis_fails_every_waiting_lookup_and_drops_writes() -> None:
    async def scenario(client: aioredis.Redis) -> list[Any]:
        cache = PredictionCache(client, ttl_seconds=60)
        cache.put("lost", b"x")  # a failed write is only a later miss
        await cache.flush()
        return await asyncio.gather(
            cache.get("a"), cache.get("b"), cache.get("lost"), return_exceptions=True
        )

    a, b, lost = run(f"redis://127.0.0.1:{free_port()}/0", scenario)  # nothing listens
    assert isinstance(a, RedisConnectionError) and isinstance(b, RedisConnectionError)
    assert isinstance(lost, RedisConnectionError)  # the write did not stick locally either
