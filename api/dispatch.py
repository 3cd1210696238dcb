"""Send prediction tasks to the workers by name and await their results on Redis."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from celery import Celery
from kombu.exceptions import OperationalError

from api.pubsub import ResultListener
from common.batching import Request
from common.celery_config import celery_config
from common.errors import BackendUnavailable, PredictionTimeout
from common.protocol import CALLBACK_TASK, PREDICT_CHUNK_TASK, PREDICT_TASK, PREPARE_JOB_TASK
from common.registry import ModelMetadata
from common.settings import Settings


def create_producer(settings: Settings) -> Celery:
    """A Celery app that only sends: no result backend, no task code, no ML imports."""
    app = Celery("serving", set_as_current=False)
    app.conf.update(celery_config(settings))
    return app


class CeleryDispatcher:
    def __init__(
        self, producer: Celery, listener: ResultListener, queue: str, timeout: float
    ) -> None:
        self.producer = producer
        self.listener = listener
        self.queue = queue
        self.timeout = timeout

    async def predict_batch(self, meta: ModelMetadata, requests: list[Request]) -> dict[str, Any]:
        task_id = self.listener.new_task_id()
        future = self.listener.expect(task_id)
        rows = [row for request in requests for row in request.rows]
        segments = [[r.request_id, len(r.rows), r.received_at] for r in requests]
        try:
            # Publishing is a short blocking call in kombu; a thread keeps the loop free.
            await asyncio.to_thread(
                self.producer.send_task,
                PREDICT_TASK,
                args=[meta.model_type, meta.version, meta.sha256, rows, segments],
                task_id=task_id,
                queue=self.queue,
                headers={"sent_at": time.time()},  # for the queue-age metric
                # Logs and Flower show this instead of the input rows.
                argsrepr=f"({meta.model_type!r}, {meta.version!r}, <{len(rows)} rows of "
                f"{len(requests)} requests>)",
            )
        except OperationalError as exc:
            self.listener.forget(task_id)
            raise BackendUnavailable(f"the task queue (broker) is unavailable: {exc}") from None
        try:
            return await self.listener.wait(task_id, future, self.timeout)
        except TimeoutError:
            raise PredictionTimeout(
                f"no result within {self.timeout:g} s; the task {task_id} may still finish",
                {"task_id": task_id},
            ) from None

    async def send_chunks(
        self, job_id: str, meta: ModelMetadata, chunks: list[list[list[Any]]]
    ) -> None:
        def send_all() -> None:
            for index, rows in enumerate(chunks):
                self.producer.send_task(
                    PREDICT_CHUNK_TASK,
                    args=[job_id, index, meta.model_type, meta.version, meta.sha256, rows],
                    queue=self.queue,
                    ignore_result=True,  # results go into the job's state, not the backend
                    headers={"sent_at": time.time()},
                    argsrepr=f"({job_id!r}, chunk {index}, {meta.model_type!r}, "
                    f"{meta.version!r}, <{len(rows)} rows>)",
                )

        try:
            await asyncio.to_thread(send_all)
        except OperationalError as exc:
            raise BackendUnavailable(f"the task queue (broker) is unavailable: {exc}") from None

    async def send_callback(self, job_id: str) -> None:
        try:
            await asyncio.to_thread(
                self.producer.send_task,
                CALLBACK_TASK,
                args=[job_id],
                queue=self.queue,
                ignore_result=True,
            )
        except OperationalError as exc:
            raise BackendUnavailable(f"the task queue (broker) is unavailable: {exc}") from None

    async def send_prepare(self, job_id: str, input_object: str, meta: ModelMetadata) -> None:
        try:
            await asyncio.to_thread(
                self.producer.send_task,
                PREPARE_JOB_TASK,
                args=[job_id, input_object, meta.model_type, meta.version, meta.sha256],
                queue=self.queue,
                ignore_result=True,
            )
        except OperationalError as exc:
            raise BackendUnavailable(f"the task queue (broker) is unavailable: {exc}") from None
