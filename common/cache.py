"""Prediction cache keys and the registry-change notifications, on Redis."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

if TYPE_CHECKING:
    from common.registry import ModelMetadata
    from common.settings import Settings

log = logging.getLogger(__name__)


def rows_digest(rows: list[list[Any]] | bytes) -> str:
    """A canonical hash of validated rows: values in training feature order, typed.
    `rows` may already be their JSON (orjson.dumps(rows)), as the data plane has it."""
    encoded = rows if isinstance(rows, bytes) else orjson.dumps(rows)
    return hashlib.blake2b(encoded, digest_size=20).hexdigest()


def prediction_key(
    prefix: str, meta: ModelMetadata, rows: list[list[Any]] | bytes, owner: str | None = None
) -> str:
    """Type, version and artifact checksum: activating or republishing never serves stale.
    With an owner (SERVING_CACHE_SCOPE=key), the entry is that key's alone: a hit never
    tells one key what another sent. Without one, every key shares it."""
    scope = f"{owner}:" if owner else "all:"
    model = f"{meta.model_type}:{meta.version}:{meta.sha256[:16]}"
    return f"{prefix}pred:{model}:{scope}{rows_digest(rows)}"


# Every write of one loop turn in one command. redis-py's pipeline cost the API about
# 35 us of CPU per SET (its command wrappers, and one reply to parse for each); this
# script about 11 us, measured with 17 writes, a batch's worth at c=64.
SET_ALL = """
local ttl = ARGV[1]
for i, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[i + 1], 'EX', ttl)
end
return #KEYS
"""


class PredictionCache:
    """The prediction cache on Redis, with its round trips shared by concurrent requests.

    Lookups made in one turn of the event loop go out together as one MGET in the next,
    and writes as one script call (SET_ALL) after the answers have gone: under load a
    request pays for a fraction of a round trip instead of two, and an idle one waits
    one loop turn.
    A write is visible to this process's own lookups at once, before it reaches Redis.
    """

    def __init__(self, client: aioredis.Redis, ttl_seconds: int) -> None:
        self.client = client
        self.ttl = ttl_seconds
        self._lookups: dict[str, list[asyncio.Future[bytes | None]]] = {}
        self._writes: dict[str, bytes] = {}
        self._writing: dict[str, bytes] = {}  # sent, not yet confirmed
        self._tasks: set[asyncio.Task[None]] = set()
        self._set_all = client.register_script(SET_ALL)

    async def get(self, key: str) -> bytes | None:
        """The cached value, or None; RedisError if Redis is unreachable."""
        value = self._writes.get(key) or self._writing.get(key)
        if value is not None:
            return value
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        if not self._lookups:
            self._start(self._send_lookups())
        self._lookups.setdefault(key, []).append(future)
        return await future

    def put(self, key: str, value: bytes) -> None:
        """Write without waiting; a failed write only makes the next lookup miss."""
        if self.ttl <= 0:
            return
        if not self._writes:
            self._start(self._send_writes())
        self._writes[key] = value

    async def flush(self) -> None:
        """Wait until every write so far has been sent (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)  # the loop keeps only a weak reference
        task.add_done_callback(self._tasks.discard)

    async def _send_lookups(self) -> None:
        lookups, self._lookups = self._lookups, {}
        keys = list(lookups)
        try:
            values: list[bytes | None] = await self.client.mget(keys)  # type: ignore[assignment]
        except RedisError as exc:
            _settle(lookups, error=exc)
            return
        except BaseException:  # cancelled at shutdown: so are the lookups
            _settle(lookups, cancel=True)
            raise
        for key, value in zip(keys, values, strict=True):
            _settle({key: lookups[key]}, value=value)

    async def _send_writes(self) -> None:
        writes, self._writes = self._writes, {}
        self._writing.update(writes)
        try:
            await self._set_all(keys=list(writes), args=[self.ttl, *writes.values()])
        except RedisError as exc:
            log.debug("prediction cache write failed: %s", exc)
        finally:
            for key in writes:
                if self._writing.get(key) is writes[key]:
                    del self._writing[key]


def _settle(
    lookups: dict[str, list[asyncio.Future[bytes | None]]],
    value: bytes | None = None,
    error: BaseException | None = None,
    cancel: bool = False,
) -> None:
    """Answer every lookup still waiting (a caller that went away cancelled its own)."""
    for futures in lookups.values():
        for future in futures:
            if future.done():
                continue
            if cancel:
                future.cancel()
            elif error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)


def prediction_pattern(prefix: str) -> str:
    return f"{prefix}pred:*"


def registry_channel(prefix: str) -> str:
    return f"{prefix}registry-changed"


def models_epoch_key(prefix: str) -> str:
    """Bumped when artifacts are deleted, so every worker process drops loaded models."""
    return f"{prefix}models-epoch"


def notify_registry_changed(settings: Settings) -> None:
    """Tell running API processes to reread the registry now; best effort.

    Sent on the result backend's Redis, where each API process already subscribes."""
    import redis

    client = redis.Redis.from_url(
        settings.effective_result_backend_url, socket_timeout=2, socket_connect_timeout=2
    )
    try:
        client.publish(registry_channel(settings.cache_prefix), b"changed")
    except redis.RedisError as exc:
        log.warning(
            "could not notify API processes of the registry change (%s); "
            "they pick it up within %.0f s",
            exc,
            settings.registry_cache_seconds,
        )
    finally:
        client.close()


async def purge_predictions(client: aioredis.Redis, prefix: str, batch_size: int = 1000) -> int:
    """Delete every cached prediction under `prefix`, in batches; how many went."""
    purged, batch = 0, []
    async for key in client.scan_iter(match=prediction_pattern(prefix), count=batch_size):
        batch.append(key)
        if len(batch) >= batch_size:
            purged += await client.unlink(*batch)
            batch.clear()
    if batch:
        purged += await client.unlink(*batch)
    return purged
