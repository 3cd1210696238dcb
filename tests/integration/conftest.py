"""Integration fixtures: demo models trained once, and stacks of real processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from common.training import DEMO_TYPES, TrainedModel, train_demo
from tests.integration.stack import Stack, stack_fields

pytestmark = pytest.mark.integration

_db_index = iter(range(1, 64))  # the session's Redis runs with 64 databases


@pytest.fixture
def redis_db_url(redis_url: str) -> str:
    """A database of the session's Redis of this test's own."""
    return f"{redis_url.rsplit('/', 1)[0]}/{next(_db_index)}"


@pytest.fixture(scope="session")
def demo_models() -> dict[str, TrainedModel]:
    return {model_type: train_demo(model_type) for model_type in DEMO_TYPES}


# Scans every file the session wrote for secrets, so it runs after every other test.
LAST_MODULE = "test_secrets_left_behind.py"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    last = [item for item in items if item.path.name == LAST_MODULE]
    items[:] = [item for item in items if item.path.name != LAST_MODULE] + last


@pytest.fixture(scope="session")
def started_stacks() -> list[Stack]:
    """Every stack make_stack started in this session."""
    return []


@pytest.fixture(scope="session")
def make_stack(
    redis_url: str,
    s3_endpoint: str,
    demo_models: dict[str, TrainedModel],
    tmp_path_factory: pytest.TempPathFactory,
    started_stacks: list[Stack],
) -> Iterator[Callable[..., Stack]]:
    """Each stack gets its own Redis database, bucket, queue, cache prefix and log file."""
    stacks = started_stacks

    def build(name: str, workers: int = 1, api_processes: int = 1, **overrides: object) -> Stack:
        tmp = Path(tmp_path_factory.mktemp(name))
        fields = stack_fields(name, redis_url, s3_endpoint, tmp, next(_db_index)) | overrides
        stack = Stack(name, fields, tmp)
        stack.publish_demo(demo_models)
        stacks.append(stack)
        return stack.start(workers, api_processes)

    yield build
    for stack in stacks:
        stack.stop()


@pytest.fixture(scope="session")
def stack(make_stack: Callable[..., Stack]) -> Stack:
    """The shared stack: one worker process with two prefork children."""
    return make_stack("main")
