"""Publish tasks to the workers by name, each kind to its own queue, and await the
results of synchronous ones on Redis."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis
from celery import Celery
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from common.errors import BackendUnavailable, PredictionTimeout
from common.observability import new_id
from common.settings import Settings
from queueing.claims import claim, claim_key
from queueing.codec import use_orjson_codec
from queueing.config import celery_config
from queueing.listener import ResultListener
from queueing.messages import (
    CALLBACK_TASK,
    FINALIZE_JOB_TASK,
    PING_TASK,
    PREPARE_JOB_TASK,
    Artifact,
    JobChunk,
    JobStep,
    Outgoing,
    PredictBatch,
    Segment,
    ShadowPredict,
)
from queueing.packed_rows import PackedRows, pack, packable
from queueing.redis_publish import RedisTaskPublisher
from queueing.results import TaskResult, keep_key, result_key


class BatchRequest(Protocol):
    """What the dispatcher needs of a request in a micro-batch (common.batching.Request)."""

    request_id: str
    rows: list[list[Any]]
    received_at: float
    encoded: bytes  # encode_rows(meta, rows), or empty
    owner: str
    cache_key: str  # where the worker caches the request's result, or empty


def create_producer(settings: Settings) -> Celery:
    """A Celery app that only sends: no result backend, no task code, no ML imports."""
    use_orjson_codec()
    app = Celery("serving", set_as_current=False)
    app.conf.update(celery_config(settings))
    return app


def encode_rows(meta: Any, rows: list[list[Any]]) -> bytes:
    """A request's rows as its task will carry them: packed float64 values for a model of
    float features (queueing.packed_rows), JSON text otherwise. The cache keys its
    entries by these bytes too, so they are made once."""
    return pack(rows) if packable(meta) else orjson.dumps(rows)


def rows_text(requests: Iterable[BatchRequest]) -> str:
    """The batch's rows as one JSON text, joined from each request's own encoding."""
    parts = [(r.encoded or orjson.dumps(r.rows))[1:-1] for r in requests]
    return (b"[" + b",".join(part for part in parts if part) + b"]").decode()


def packed_rows(meta: Any, requests: Iterable[BatchRequest]) -> PackedRows:
    """The batch's rows packed, joined from each request's own packing."""
    data = b"".join(r.encoded or pack(r.rows) for r in requests)
    return PackedRows(data, len(meta.features))


def predict_batch_message(
    meta: Any, requests: Sequence[BatchRequest], cache_ttl: int = 0
) -> PredictBatch:
    segments = tuple(
        Segment(
            r.request_id,
            len(r.rows),
            r.received_at,
            r.owner,
            r.cache_key if cache_ttl > 0 else "",
            cache_ttl if r.cache_key else 0,
        )
        for r in requests
    )
    rows = packed_rows(meta, requests) if packable(meta) else rows_text(requests)
    return PredictBatch(Artifact.of(meta), rows, segments)


class TaskPublisher:
    """Builds each task kind's outgoing message for its queue. Shared by the API's
    dispatcher and the worker (which queues chunks, final writes and callbacks)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def predict(self, message: PredictBatch, task_id: str) -> Outgoing:
        options = {"task_id": task_id, "argsrepr": message.summary()}
        if message.serializer != "json":
            options["serializer"] = message.serializer
        return Outgoing(message.NAME, message.args(), self.settings.task_queue, options)

    def chunk(self, message: JobChunk) -> Outgoing:
        # Results go into the job's state, not the result backend.
        options = {"ignore_result": True, "argsrepr": message.summary()}
        return Outgoing(message.NAME, message.args(), self.settings.effective_job_queue, options)

    def shadow(self, message: ShadowPredict) -> Outgoing:
        # The job queue: workers take predictions first, so a shadow never delays one.
        options = {"ignore_result": True, "argsrepr": message.summary()}
        return Outgoing(message.NAME, message.args(), self.settings.effective_job_queue, options)

    def step(self, message: JobStep) -> Outgoing:
        queue = (
            self.settings.effective_callback_queue
            if message.name == CALLBACK_TASK
            else self.settings.effective_job_queue
        )
        options = {"ignore_result": True, "argsrepr": message.summary()}
        return Outgoing(message.name, message.args(), queue, options)


def publish(producer: Celery, outgoing: Outgoing) -> None:
    """Send one task (blocking: kombu's publish); `sent_at` feeds the queue-wait metric."""
    producer.send_task(
        outgoing.name,
        args=outgoing.args,
        queue=outgoing.queue,
        headers={"sent_at": time.time()},
        **outgoing.options,
    )


class CeleryDispatcher:
    def __init__(
        self,
        producer: Celery,
        listener: ResultListener,
        settings: Settings,
        broker: aioredis.Redis | None = None,
    ) -> None:
        """`broker`, the Redis broker's client: tasks are then pushed from the event loop
        (queueing.redis_publish) unless task-sent events are on. Otherwise, and for
        RabbitMQ, kombu publishes them in a thread."""
        self.producer = producer
        self.listener = listener
        self.tasks = TaskPublisher(settings)
        self.timeout = settings.predict_timeout_seconds
        self.claim_prefix, self.claim_ttl = settings.cache_prefix, settings.job_ttl_seconds
        self.cache_ttl = settings.cache_ttl_seconds
        self.direct = (
            RedisTaskPublisher(producer, broker)
            if broker is not None and not settings.task_events
            else None
        )

    async def _send(self, *outgoing: Outgoing) -> None:
        if self.direct is not None and all(map(self.direct.handles, outgoing)):
            await self.direct.publish(*outgoing)
            return

        def publish_all() -> None:
            for item in outgoing:
                publish(self.producer, item)

        try:
            await asyncio.to_thread(publish_all)
        except OperationalError as exc:
            raise BackendUnavailable(f"the task queue (broker) is unavailable: {exc}") from None

    def encode_rows(self, meta: Any, rows: list[list[Any]]) -> bytes:
        return encode_rows(meta, rows)

    async def predict_batch(self, meta: Any, requests: Sequence[BatchRequest]) -> dict[str, Any]:
        task_id = self.listener.new_task_id()
        message, claimed = claim(predict_batch_message(meta, requests, self.cache_ttl))
        future = self.listener.expect(task_id)
        try:
            if claimed is not None:
                await self._store_claimed(task_id, claimed)
            await self._send(self.tasks.predict(message, task_id))
        except BackendUnavailable:
            self.listener.forget(task_id, future)
            if claimed is not None:
                await self._drop_claimed(task_id)
            raise
        try:
            return await self.listener.wait(task_id, future, self.timeout)
        except TimeoutError:
            raise PredictionTimeout(
                f"no result within {self.timeout:g} s; the task {task_id} may still finish",
                {"task_id": task_id},
            ) from None

    async def _store_claimed(self, task_id: str, data: bytes) -> None:
        """A big batch's rows, in the result backend's Redis before its task is queued
        (queueing.claims); they live as long as the job a late prediction becomes."""
        key = claim_key(self.claim_prefix, task_id)
        try:
            await self.listener.client.set(key, data, ex=self.claim_ttl)
        except RedisError as exc:
            raise BackendUnavailable(f"the result backend (Redis) is unavailable: {exc}") from None

    async def _drop_claimed(self, task_id: str) -> None:
        """Rows whose task was not queued: deleted if Redis answers, else left to expire."""
        with contextlib.suppress(RedisError):
            await self.listener.client.unlink(claim_key(self.claim_prefix, task_id))

    async def send_shadow(
        self, meta: Any, primary_id: str, owner: str, rows_json: bytes, n_rows: int
    ) -> None:
        """Score a request's rows on the shadow version `meta`: logged, never awaited."""
        segment = Segment(new_id(), n_rows, time.time(), owner)
        message = ShadowPredict(Artifact.of(meta), rows_json.decode(), segment, primary_id)
        await self._send(self.tasks.shadow(message))

    async def send_chunks(self, job_id: str, meta: Any, chunks: list[list[list[Any]]]) -> None:
        artifact = Artifact.of(meta)
        await self._send(
            *(
                self.tasks.chunk(JobChunk(job_id, i, artifact, rows))
                for i, rows in enumerate(chunks)
            )
        )

    async def send_prepare(self, job_id: str) -> None:
        await self._send(self.tasks.step(JobStep(PREPARE_JOB_TASK, job_id)))

    async def send_finalize(self, job_id: str) -> None:
        await self._send(self.tasks.step(JobStep(FINALIZE_JOB_TASK, job_id)))

    async def send_callback(self, job_id: str) -> None:
        await self._send(self.tasks.step(JobStep(CALLBACK_TASK, job_id)))

    async def result_of(self, task_id: str, timeout: float) -> TaskResult | None:
        """A task's final result, from its message or its stored record; None in time."""
        future = self.listener.expect(task_id)
        # Stored before we listened (the usual case: the deadline passed, then it came)?
        stored = await self.listener.stored(task_id)
        if stored is not None:
            self.listener.forget(task_id, future)
            return stored
        try:
            return await self.listener.wait_final(task_id, future, timeout)
        except TimeoutError:
            return None

    async def keep_result(self, task_id: str, seconds: int) -> None:
        """Keep the task's result `seconds` (Celery keeps it `result_expires`): a marker
        the result backend honours when it stores the result, and a longer expiry if it
        is stored already. Set in that order, so either way the result lives on."""
        client = self.listener.client
        await client.set(keep_key(task_id), b"1", ex=seconds)
        await client.expire(result_key(task_id), seconds)

    async def ping(self, timeout: float) -> dict[str, Any]:
        """A ping task through the prediction queue: what a worker answers, or TimeoutError."""
        task_id = self.listener.new_task_id()
        future = self.listener.expect(task_id)
        ping = Outgoing(PING_TASK, [], self.tasks.settings.task_queue, {"task_id": task_id})
        try:
            await self._send(ping)
        except BackendUnavailable:
            self.listener.forget(task_id, future)
            raise
        return await self.listener.wait(task_id, future, timeout)
