"""The worker's Redis transport: kombu's, with one client per channel (queueing/
redis_transport.py). Messages are taken, kept until acknowledged, and acknowledged as
with kombu's own, on a real Redis, without building a client for each command."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from kombu import Connection

from common.settings import Settings
from queueing.config import celery_config
from queueing.redis_transport import TRANSPORT_PATH, Channel

# A database of the session's Redis (tests/conftest.py) of this module's own: kombu's
# hash of unacknowledged messages is one per database.
REDIS_DB = 61


@pytest.fixture
def own_db_url(redis_url: str) -> str:
    return f"{redis_url.rsplit('/', 1)[0]}/{REDIS_DB}"


@pytest.fixture
def connection(own_db_url: str) -> Iterator[Connection]:
    app = Celery("test-transport", set_as_current=False)
    app.conf.update(celery_config(Settings(redis_url=own_db_url)))
    conn = app.connection_for_write()
    yield conn
    conn.release()
    app.close()


def counted(channel: Any) -> list[int]:
    """How many redis.Redis the channel builds from now on."""
    built, make = [0], channel.Client

    def client(*args: Any, **kwargs: Any) -> Any:
        built[0] += 1
        return make(*args, **kwargs)

    channel.Client = client
    return built


def test_a_redis_broker_uses_it_and_other_schemes_keep_kombu_s() -> None:
    assert celery_config(Settings(redis_url="redis://h:1/0"))["broker_transport"] == TRANSPORT_PATH
    for url in ("rediss://h:1/0", "amqp://guest@h//"):
        assert "broker_transport" not in celery_config(Settings(broker_url=url))


def test_messages_are_kept_until_acknowledged_with_one_client_for_every_command(
    connection: Connection, own_db_url: str
) -> None:
    channel = connection.default_channel
    assert isinstance(channel, Channel)
    built = counted(channel)
    queue = connection.SimpleQueue(f"test-transport-{uuid.uuid4().hex}")
    for i in range(20):
        queue.put({"n": i})
    unacked = redis.Redis.from_url(own_db_url)
    before = unacked.hlen("unacked")
    for i in range(20):
        message = queue.get(timeout=5)
        assert message.payload == {"n": i}
        assert unacked.hlen("unacked") == before + 1  # kept until acknowledged
        message.ack()
        assert unacked.hlen("unacked") == before
    queue.close()
    unacked.close()
    assert built[0] <= 1  # kombu's own channel built 82 here


def test_a_new_pool_gets_a_new_client_and_the_polling_loop_its_own(
    connection: Connection,
) -> None:
    channel = connection.default_channel
    first = channel._create_client()
    assert channel._create_client() is first
    channel._pool = None  # as after the connection was reset
    second = channel._create_client()
    assert second is not first and second.connection_pool is channel.pool
    assert channel._create_client(asynchronous=True) is not channel._create_client(
        asynchronous=True
    )
