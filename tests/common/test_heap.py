"""settle_heap: startup's garbage collected, the rest frozen out of the collector's way;
the API freezes its heap once its lifespan has started (a real Redis, a SQLite file)."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from api.main import create_app
from common.heap import YOUNG_THRESHOLD, settle_heap
from common.settings import Settings


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    gc.unfreeze()
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()  # the rest of the suite's process collects as usual
    gc.set_threshold(*thresholds)


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def tracked(obj: object) -> bool:
    """In one of the collector's three generations (a frozen object is in none)."""
    return any(o is obj for o in gc.get_objects())


def test_settle_heap_collects_startup_garbage_then_freezes_what_lives() -> None:
    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle: only the collector frees it
    garbage = weakref.ref(a)
    del a, b
    kept = [Node()]
    assert tracked(kept)

    frozen = settle_heap()

    assert garbage() is None
    # Only gc.freeze() adds to the permanent generation, but a frozen object freed by its
    # reference count leaves it, and pytest-xdist's own thread frees a few of its
    # messages meanwhile (CI saw 469,613 frozen, then 469,610): never more, barely fewer.
    assert frozen * 0.99 < gc.get_freeze_count() <= frozen
    assert not tracked(kept)


def young_collections_during(work: Callable[[], object]) -> int:
    counts = [0]

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 0:
            counts[0] += 1

    gc.callbacks.append(count)
    try:
        work()
    finally:
        gc.callbacks.remove(count)
    return counts[0]


def a_big_request() -> None:
    """A 1,000-row request's containers, alive together, then freed by refcount."""
    for _ in range(20):
        rows = [[float(i)] * 30 for i in range(1_000)]
        rendered = [{"label": "a", "probabilities": {"a": 0.5, "b": [0.5]}} for _ in rows]
        del rows, rendered


def test_after_settling_a_big_request_s_containers_meet_no_young_collection() -> None:
    gc.set_threshold(700, 10, 10)  # CPython's default
    assert young_collections_during(a_big_request) > 20
    settle_heap()
    assert gc.get_threshold() == (YOUNG_THRESHOLD, 10, 10)  # the older ones as they were
    assert young_collections_during(a_big_request) == 0


def test_objects_made_after_settling_are_collected_as_usual() -> None:
    settle_heap()
    a, b = Node(), Node()
    a.other, b.other = b, a
    later = weakref.ref(a)
    assert tracked(a)
    del a, b
    gc.collect()
    assert later() is None


def test_the_api_freezes_its_heap_once_started(redis_url: str, tmp_path: Path) -> None:
    settings = Settings(
        redis_url=redis_url,
        database_url=f"sqlite:///{tmp_path / 'predictions.db'}",
        local_store_path=tmp_path / "store",
        api_keys=[],
        admin_api_keys=[],
    )
    app = create_app(settings)

    async def start() -> int:
        async with app.router.lifespan_context(app):
            return gc.get_freeze_count()

    assert gc.get_freeze_count() == 0
    assert asyncio.run(start()) > 10_000  # modules, routes, schemas: far more than a few


def test_the_worker_freezes_its_heap_before_the_pool_forks(tmp_path: Path) -> None:
    from celery.signals import worker_init

    from worker.celery_app import create_worker_app

    create_worker_app(Settings(local_store_path=tmp_path / "store", worker_metrics_port=0))
    assert gc.get_freeze_count() == 0
    worker_init.send(sender=None)  # what the worker sends before it starts its pool
    assert gc.get_freeze_count() > 10_000
