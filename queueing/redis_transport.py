"""kombu's Redis transport, with one client per channel instead of one per command.

kombu's Redis channel builds a new `redis.Redis` for every command it sends outside its
polling loop (`Channel._create_client`): the acknowledgement of each task, and the copy
of each message kept until then. Each build copies redis-py's table of about 170
response callbacks: 6% of a worker's main process under one-at-a-time misses (py-spy).
The client is a handle on the channel's connection pool, which every command draws a
connection from, so one client per channel serves them all; a new one is built when the
channel gets a new pool. Asynchronous clients (the polling loop's) are kombu's as ever.

Used for `redis://` brokers (queueing.config); `rediss://` and others keep kombu's own.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis

# What `broker_transport` names to use it.
TRANSPORT_PATH = "queueing.redis_transport:Transport"


class Channel(kombu_redis.Channel):
    _sync_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)  # type: ignore[no-untyped-call]
        client = self._sync_client
        if client is None or client.connection_pool is not self.pool:
            client = self._sync_client = super()._create_client()  # type: ignore[no-untyped-call]
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel
