"""The API's background log queue is bounded: past log_queue_max_rows a cache hit waits
for room off the event loop (counted), memory stays bounded, and no row is dropped.

The rows go to a real SQLite log; the repository is held back by an event, the one
way to make a database exactly as slow as a test needs."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from prometheus_client import REGISTRY
from sqlalchemy import Engine

from common.prediction_log import (
    BackgroundLogWriter,
    PredictionLogRepo,
)
from tests.common.test_prediction_log import entry


class HeldRepo(PredictionLogRepo):
    """Writes only once `release` is set: a database that stopped taking rows a while."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.release = threading.Event()
        self.batches: list[int] = []

    def record(self, entries: list[dict[str, Any]]) -> None:
        self.release.wait(30)
        self.batches.append(len(entries))
        super().record(entries)


def waits() -> float:
    return REGISTRY.get_sample_value("serving_log_queue_waits_total") or 0.0


def depth() -> float:
    return REGISTRY.get_sample_value("serving_log_queue_rows") or 0.0


def test_a_full_queue_waits_off_the_loop_and_drops_nothing(engine: Engine) -> None:
    repo = HeldRepo(engine)
    writer = BackgroundLogWriter(repo, max_batch=3, max_rows=5)
    before = waits()

    async def scenario() -> tuple[float, int, float]:
        gaps: list[float] = []
        stop = asyncio.Event()

        async def ticker() -> None:  # how long the loop goes without running this
            last = time.perf_counter()
            while not stop.is_set():
                await asyncio.sleep(0.005)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        tick = asyncio.create_task(ticker())
        puts = [asyncio.create_task(writer.put(entry(f"r{i:02d}"))) for i in range(20)]
        await asyncio.sleep(0.5)  # the database takes nothing meanwhile
        held_depth, waiting = depth(), sum(not p.done() for p in puts)
        repo.release.set()
        await asyncio.wait_for(asyncio.gather(*puts), 10)
        stop.set()
        await tick
        return max(gaps), waiting, held_depth

    longest_gap, waiting, held_depth = asyncio.run(scenario())
    writer.flush()
    writer.close()

    # One batch is taken by the writer (3 rows), five fill the queue, twelve wait; up
    # to three more waited a moment, if they came before the writer took its batch.
    assert waiting == 12
    assert 12 <= waits() - before <= 15
    assert held_depth <= 5
    assert longest_gap < 0.2, f"the event loop stalled {longest_gap:.3f} s"
    rows = [r.request_id for r in reversed(repo.newest(100))]
    assert sorted(rows) == [f"r{i:02d}" for i in range(20)]  # none dropped
    assert max(repo.batches) <= 3
    assert depth() == 0


def test_closing_writes_the_rows_that_were_waiting(engine: Engine) -> None:
    repo = HeldRepo(engine)
    writer = BackgroundLogWriter(repo, max_batch=2, max_rows=2)

    async def scenario() -> None:
        puts = [asyncio.create_task(writer.put(entry(f"c{i}"))) for i in range(8)]
        await asyncio.sleep(0.2)
        repo.release.set()
        await asyncio.wait_for(asyncio.gather(*puts), 10)

    asyncio.run(scenario())
    writer.close()

    assert repo.count() == 8


def test_without_a_bound_nothing_ever_waits(engine: Engine) -> None:
    repo = HeldRepo(engine)
    writer = BackgroundLogWriter(repo)
    before = waits()

    async def scenario() -> None:
        await asyncio.gather(*(writer.put(entry(f"u{i}")) for i in range(50)))

    asyncio.run(scenario())
    repo.release.set()
    writer.flush()
    writer.close()

    assert waits() == before
    assert repo.count() == 50
