"""Celery's Redis result backend, storing a task's result in one round trip instead of two.

Before each write Celery reads the task's stored state, so that a late rerun of a task
(a lost worker's message delivered again) never overwrites a success
(`BaseKeyValueStoreBackend._store_result`). That read was a quarter of a busy worker's
samples. Here the same check runs inside Redis, in one script with the write and the
publish that tells the API: the same guarantee, one round trip. A prediction's script
also writes each request's result into the prediction cache (CACHE_WRITES), which the
API would otherwise do in a round trip of its own.
"""

from __future__ import annotations

from typing import Any

from celery import states
from celery.backends.redis import RedisBackend
from kombu.utils.encoding import bytes_to_str

from queueing.results import keep_key

# KEYS[1]: the result key, KEYS[2]: its keep marker (a deferred prediction's job needs
# the result as long as the job lives), KEYS[3..]: the prediction cache's keys to write
# with the result (CACHE_WRITES). ARGV[1]: the encoded result, ARGV[2]: its lifetime in
# seconds (0: none), ARGV[3]: how many cache keys, then each one's lifetime and value.
# The cache is written before the publish, so the API that reads the result finds it.
STORE_UNLESS_SUCCEEDED = """
local current = redis.call('GET', KEYS[1])
if current then
    local ok, meta = pcall(cjson.decode, current)
    if ok and type(meta) == 'table' and meta['status'] == 'SUCCESS' then
        return 0
    end
end
local ttl = tonumber(ARGV[2])
local keep = redis.call('TTL', KEYS[2])
if ttl > 0 and keep > ttl then ttl = keep end
if ttl > 0 then
    redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl)
else
    redis.call('SET', KEYS[1], ARGV[1])
end
for i = 1, tonumber(ARGV[3]) do
    redis.call('SET', KEYS[2 + i], ARGV[3 + 2 * i], 'EX', ARGV[2 + 2 * i])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"""

# The attribute of a task's request (its Context) that holds the prediction cache's
# writes to make with its successful result: (key, lifetime in seconds, value) each.
CACHE_WRITES = "serving_cache_writes"

# What `Celery(backend=...)` takes to use this class with a redis:// URL.
BACKEND_PATH = "worker.result_backend:ResultBackend"


def backend_url(redis_url: str) -> str:
    return f"{BACKEND_PATH}+{redis_url}"


class ResultBackend(RedisBackend):  # type: ignore[misc]
    _store_script: Any = None

    def _store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: Any = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        meta = self._get_result_meta(
            result=result, state=state, traceback=traceback, request=request
        )
        meta["task_id"] = bytes_to_str(task_id)  # type: ignore[no-untyped-call]
        expires = self.failure_expires if state == states.FAILURE else self.expires
        key, value = self.get_key_for_task(task_id), self.encode(meta)
        keep = keep_key(bytes_to_str(task_id))  # type: ignore[no-untyped-call]
        writes = getattr(request, CACHE_WRITES, None) if state == states.SUCCESS else None
        self.ensure(
            self._store_unless_succeeded, (key, keep, value, int(expires or 0), writes or [])
        )
        return result

    def _store_unless_succeeded(
        self,
        key: bytes,
        keep: str,
        value: bytes | str,
        expires: int,
        writes: list[tuple[str, int, bytes]],
    ) -> int:
        if self._store_script is None:
            self._store_script = self.client.register_script(STORE_UNLESS_SUCCEEDED)
        keys: list[Any] = [key, keep]
        args: list[Any] = [value, expires, len(writes)]
        for cache_key, ttl, cached in writes:
            keys.append(cache_key)
            args += (ttl, cached)
        return int(self._store_script(keys=keys, args=args))
